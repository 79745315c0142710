//! Plugin discovery: which libraries are in the plugin directories, what each declares (read in
//! a worker process, never in the daemon), and which are refused and why.

pub mod elf;
mod strict;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use watch::PluginWatcher;

use crate::config::plugin_name;
use crate::worker::outcome::signal_name;
use crate::worker::protocol::{Assignment, Setup, Task};
use crate::worker::{Launcher, perform};
use foldhash::HashMap as FastMap;

/// How long loading a library may take before it is refused as hanging.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a library can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginState {
    /// Jobs may use it.
    Ok,
    /// It is not used; `error` says why.
    Refused,
}

/// One library found in a plugin directory, as `pacer plugins --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// The name it declares; `None` if that could not be read.
    pub name: Option<String>,
    /// The version it declares.
    pub version: Option<String>,
    /// The ABI version it declares.
    pub abi_version: Option<u32>,
    /// The file: shared with every run of the plugin's jobs.
    pub path: Arc<Path>,
    /// Usable or refused.
    pub state: PluginState,
    /// Why it was refused.
    pub error: Option<String>,
}

impl PluginInfo {
    /// A library at `path` that is not used, and why.
    fn refused(path: &Path, error: String) -> PluginInfo {
        PluginInfo {
            name: None,
            version: None,
            abi_version: None,
            path: Arc::from(path),
            state: PluginState::Refused,
            error: Some(error),
        }
    }
}

/// One change to the plugins, as the log tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginChange {
    /// A library was refused (logged as a warning).
    pub refused: bool,
    /// What happened, naming the file.
    pub message: String,
}

impl PluginChange {
    fn refused(message: String) -> PluginChange {
        PluginChange {
            refused: true,
            message,
        }
    }

    fn usable(message: String) -> PluginChange {
        PluginChange {
            refused: false,
            message,
        }
    }
}

/// How libraries are judged besides their descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanOptions {
    /// Refuse code that a user other than root could have changed (the daemon can run code as
    /// any user).
    pub strict_permissions: bool,
}

impl ScanOptions {
    /// Strict when this process can run jobs as other users (root, or the capabilities).
    pub fn for_current_user() -> ScanOptions {
        ScanOptions {
            strict_permissions: crate::privilege::Privileges::of_this_process().can_switch_users(),
        }
    }
}

/// What identifies a file's contents and permissions cheaply, so a rescan re-reads only
/// libraries that changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
    changed_ns: i128,
}

impl FileIdentity {
    fn of(path: &Path) -> Option<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(FileIdentity {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            changed_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        })
    }
}

/// One library as found: its judgement before names are compared, and the file it came from.
#[derive(Debug, Clone)]
struct Inspected {
    info: PluginInfo,
    identity: Option<FileIdentity>,
    /// Refused for its permissions, so never loaded: a later scan must read it once they are
    /// fixed, whatever the file's identity.
    by_permissions: bool,
}

/// The usable plugins by name, and every library found.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    found: Vec<PluginInfo>,
    /// Looked up for every fire and every start.
    by_name: FastMap<String, usize>,
    inspected: HashMap<PathBuf, Inspected>,
}

impl Registry {
    /// Inspects every candidate library in `dirs` (in order; files in byte order of name).
    pub async fn discover(dirs: &[PathBuf], launcher: &Launcher, options: ScanOptions) -> Registry {
        Registry::default().rescan(dirs, launcher, options).await
    }

    /// Scans `dirs` again: permissions are checked anew each time (a `chmod` of a directory
    /// changes no library file), and only libraries whose file changed since this registry was
    /// made are read again.
    pub async fn rescan(
        &self,
        dirs: &[PathBuf],
        launcher: &Launcher,
        options: ScanOptions,
    ) -> Registry {
        let mut registry = Registry::default();
        for path in candidates(dirs) {
            let identity = FileIdentity::of(&path);
            let unsafe_permissions = options
                .strict_permissions
                .then(|| strict::check(&path))
                .flatten();
            let inspected = match (unsafe_permissions, self.inspected.get(&path)) {
                (Some(problem), _) => Inspected {
                    info: PluginInfo::refused(&path, problem),
                    identity,
                    by_permissions: true,
                },
                (None, Some(previous))
                    if !previous.by_permissions
                        && previous.identity.is_some()
                        && previous.identity == identity =>
                {
                    previous.clone()
                }
                (None, _) => Inspected {
                    info: inspect(&path, launcher).await,
                    identity,
                    by_permissions: false,
                },
            };
            registry.add(inspected);
        }
        registry
    }

    /// Adds a library; the first library to declare a name keeps it.
    fn add(&mut self, inspected: Inspected) {
        let mut info = inspected.info.clone();
        if let (PluginState::Ok, Some(name)) = (info.state, &info.name) {
            match self.by_name.get(name) {
                Some(&first) => {
                    info.state = PluginState::Refused;
                    info.error = Some(format!(
                        "the name `{name}` is already taken by {} (the first library in \
                         plugin_dirs order keeps a name); remove one of them",
                        self.found[first].path.display()
                    ));
                }
                None => {
                    self.by_name.insert(name.clone(), self.found.len());
                }
            }
        }
        self.inspected.insert(info.path.to_path_buf(), inspected);
        self.found.push(info);
    }

    /// A registry holding one usable library per name, as if found at those paths: for what
    /// decides with plugins but never loads one (tests, the benchmark of the engine).
    pub fn of(plugins: &[(&str, &str)]) -> Registry {
        let mut registry = Registry::default();
        for (name, path) in plugins {
            registry.add(Inspected {
                info: PluginInfo {
                    name: Some((*name).to_owned()),
                    version: Some("1.0.0".to_owned()),
                    abi_version: Some(1),
                    path: Arc::from(Path::new(path)),
                    state: PluginState::Ok,
                    error: None,
                },
                identity: None,
                by_permissions: false,
            });
        }
        registry
    }

    /// The usable plugin called `name`.
    pub fn get(&self, name: &str) -> Option<&PluginInfo> {
        self.by_name.get(name).map(|&i| &self.found[i])
    }

    /// How many libraries are refused.
    pub fn refused_count(&self) -> usize {
        self.found
            .iter()
            .filter(|info| info.state == PluginState::Refused)
            .count()
    }

    /// Every library found, usable or not, in discovery order.
    pub fn all(&self) -> &[PluginInfo] {
        &self.found
    }

    /// What changed from `before` to this registry, for the log: each change is told once,
    /// when it happens, not at every fire.
    pub fn changes_since(&self, before: &Registry) -> Vec<PluginChange> {
        let mut changes = Vec::new();
        for info in &self.found {
            let old = before.found.iter().find(|old| old.path == info.path);
            let same_file = old.is_some()
                && before.inspected.get(&*info.path).map(|i| i.identity)
                    == self.inspected.get(&*info.path).map(|i| i.identity);
            match (old, info.state) {
                (Some(old), _) if same_file && old == info => {}
                (_, PluginState::Refused) => changes.push(PluginChange::refused(format!(
                    "plugin library {} refused: {}",
                    info.path.display(),
                    info.error.as_deref().unwrap_or("refused")
                ))),
                (Some(_), PluginState::Ok) => changes.push(PluginChange::usable(format!(
                    "plugin `{}` {} replaced ({}); new runs use it",
                    info.name.as_deref().unwrap_or("?"),
                    info.version.as_deref().unwrap_or("?"),
                    info.path.display()
                ))),
                (None, PluginState::Ok) => changes.push(PluginChange::usable(format!(
                    "plugin `{}` {} added ({})",
                    info.name.as_deref().unwrap_or("?"),
                    info.version.as_deref().unwrap_or("?"),
                    info.path.display()
                ))),
            }
        }
        for old in &before.found {
            if !self.found.iter().any(|info| info.path == old.path) {
                changes.push(PluginChange::usable(format!(
                    "plugin library {} removed{}",
                    old.path.display(),
                    old.name
                        .as_deref()
                        .filter(|_| old.state == PluginState::Ok)
                        .map_or_else(String::new, |name| format!(
                            "; jobs using `{name}` are skipped until it is back"
                        ))
                )));
            }
        }
        changes
    }

    /// Why a job using plugin `name` cannot run now (searched in `dirs`), if it cannot.
    pub fn problem(&self, name: &str, dirs: &[PathBuf]) -> Option<String> {
        if self.get(name).is_some() {
            return None;
        }
        // A library refused before its name could be read (for its permissions, say) is matched
        // by its file name, so the job's problem names the file and the fix.
        let file_names = [
            format!("lib{name}.so"),
            format!("libpacer_plugin_{name}.so"),
        ];
        let refused = self.found.iter().find(|info| {
            info.state == PluginState::Refused
                && match &info.name {
                    Some(declared) => declared == name,
                    None => info.path.file_name().is_some_and(|file| {
                        file_names
                            .iter()
                            .any(|candidate| file == candidate.as_str())
                    }),
                }
        });
        Some(match refused {
            Some(info) => format!(
                "plugin `{name}` is not usable: {} was refused: {}",
                info.path.display(),
                info.error.as_deref().unwrap_or("refused")
            ),
            None => {
                let refused = self
                    .found
                    .iter()
                    .filter(|info| info.state == PluginState::Refused)
                    .count();
                let near = crate::config::closest(name, self.by_name.keys().map(String::as_str))
                    .map(|near| format!(" (did you mean `{near}`?)"))
                    .unwrap_or_default();
                format!(
                    "plugin `{name}` is not installed{near}: no library in plugin_dirs ({}) \
                     declares it{}",
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    match refused {
                        0 => String::new(),
                        1 => "; 1 library there was refused (see pacer plugins)".to_owned(),
                        n => format!("; {n} libraries there were refused (see pacer plugins)"),
                    }
                )
            }
        })
    }
}

/// `*.so` files not starting with `.`, directory by directory, in byte order of name.
pub fn candidates(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            tracing::debug!(dir = %dir.display(), "plugin directory not readable; skipped");
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| is_candidate(path))
            .collect();
        files.sort_by(|a, b| {
            a.file_name()
                .map(|n| n.as_encoded_bytes().to_vec())
                .cmp(&b.file_name().map(|n| n.as_encoded_bytes().to_vec()))
        });
        all.extend(files);
    }
    all
}

/// Whether a file name is one discovery considers.
pub fn is_candidate(path: &Path) -> bool {
    path.file_name().is_some_and(|name| {
        let name = name.as_encoded_bytes();
        name.ends_with(b".so") && !name.starts_with(b".")
    })
}

/// Reads one library's descriptor in a worker and decides whether it is usable.
async fn inspect(path: &Path, launcher: &Launcher) -> PluginInfo {
    let refused = |error: String| PluginInfo::refused(path, error);
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return refused("not a regular file".to_owned()),
        Err(e) => return refused(format!("cannot read it: {e}")),
    }
    let assignment = Assignment {
        plugin: Arc::from(path),
        setup: Setup::default(),
        task: Task::Inspect,
    };
    let workdir = path.parent().unwrap_or(Path::new("/"));
    let ended = match perform(launcher, workdir, &assignment, INSPECT_TIMEOUT).await {
        Ok(ended) => ended,
        Err(e) => return refused(format!("cannot start a process to read it: {e}")),
    };
    if let Some(reason) = ended.reports.refused {
        return refused(reason);
    }
    let Some((abi_version, name, version)) = ended.reports.descriptor else {
        use std::os::unix::process::ExitStatusExt;
        let how = match (ended.stop, ended.exit.signal()) {
            (Some(_), _) => format!(
                "loading it did not finish within {}s",
                INSPECT_TIMEOUT.as_secs()
            ),
            (None, Some(signal)) => format!(
                "loading it killed the process with signal {signal} ({}){}",
                signal_name(signal),
                if signal == libc::SIGBUS {
                    ": the file is probably truncated or still being written; install plugins \
                     by writing a temporary file and renaming it into place"
                } else {
                    ""
                }
            ),
            (None, None) => "loading it ended the process before it could be read".to_owned(),
        };
        return refused(how);
    };
    let mut info = PluginInfo {
        name: name.clone(),
        version,
        abi_version: Some(abi_version),
        path: Arc::from(path),
        state: PluginState::Ok,
        error: None,
    };
    let problem = if abi_version != pacer_plugin_api::abi::ABI_VERSION {
        Some(format!(
            "it declares ABI version {abi_version}; this pacerd speaks version {}: rebuild it \
             against this pacer-plugin-api",
            pacer_plugin_api::abi::ABI_VERSION
        ))
    } else {
        match &name {
            None => Some("its descriptor has no readable name".to_owned()),
            Some(name) => plugin_name(name)
                .err()
                .map(|e| format!("it declares an invalid name: {e}")),
        }
    };
    if let Some(problem) = problem {
        info.state = PluginState::Refused;
        info.error = Some(problem);
    }
    info
}

#[cfg(test)]
mod tests {
    use super::Registry;

    #[test]
    fn a_missing_plugin_near_an_installed_one_gets_a_suggestion() {
        let registry = Registry::of(&[("exec", "/plugins/libpacer_plugin_exec.so")]);
        let dirs = ["/plugins".into()];
        let typo = registry.problem("exce", &dirs).unwrap();
        assert!(
            typo.starts_with("plugin `exce` is not installed (did you mean `exec`?): no library"),
            "{typo}"
        );
        let other = registry.problem("mailer", &dirs).unwrap();
        assert!(!other.contains("did you mean"), "{other}");
        assert_eq!(registry.problem("exec", &dirs), None);
    }
}
