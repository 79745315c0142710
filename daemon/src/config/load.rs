//! Finding and reading the config file and its drop-ins.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{ConfigError, ConfigErrors, Lines};
use super::validate::{Source, validate_cluster_only, validate_daemon_only, validate_files};
use super::{ClusterSettings, Config, DaemonSettings, Jobs, defaults, document, raw};
use crate::privilege::Privileges;

/// Where the config file is: `--config`, else `PACER_CONFIG`, else `/etc/pacer/pacer.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPath(pub PathBuf);

impl ConfigPath {
    /// Picks the config file from the command line or the environment.
    pub fn resolve(flag: Option<PathBuf>) -> ConfigPath {
        ConfigPath(
            flag.or_else(|| std::env::var_os(defaults::CONFIG_ENV).map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(defaults::CONFIG_PATH)),
        )
    }
}

/// Facts about the daemon that decide whether a config is valid for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Environment {
    /// `user = ...` needs a daemon that can switch users (root, or `CAP_SETUID`+`CAP_SETGID`).
    pub can_switch_users: bool,
    /// `user = "root"` needs a daemon that can give a run root's power over files.
    pub can_run_as_root: bool,
}

impl Environment {
    /// The environment of this process.
    pub fn current() -> Environment {
        Environment::from(Privileges::of_this_process())
    }

    /// The environment of process `pid` (a running pacerd), or `None` if it cannot be read.
    pub fn of_process(pid: u32) -> Option<Environment> {
        Privileges::of_process(pid).ok().map(Environment::from)
    }
}

impl From<Privileges> for Environment {
    fn from(privileges: Privileges) -> Environment {
        Environment {
            can_switch_users: privileges.can_switch_users(),
            can_run_as_root: privileges.can_run_as_root(),
        }
    }
}

/// Reads and validates the config at `path` and the `jobs.d/*.toml` drop-ins beside it,
/// reporting every problem found, in file order.
pub fn load(path: &Path, env: Environment) -> Result<Config, ConfigErrors> {
    let main_text = read(path)?;
    let dir = base_dir(path)?;
    let mut errors = Vec::new();
    let mut drop_ins = Vec::new();
    match drop_in_files(&dir.join(defaults::DROP_IN_DIR)) {
        Ok(files) => {
            for file in files {
                match read(&file) {
                    Ok(text) => drop_ins.push((file, text)),
                    Err(error) => errors.push(error),
                }
            }
        }
        Err(error) => errors.push(error),
    }
    let main_lines = Lines::new(&main_text);
    let main = document::main_file(path, &main_lines, &mut errors);
    let drop_in_lines: Vec<Lines<'_>> = drop_ins.iter().map(|(_, text)| Lines::new(text)).collect();
    let parsed: Vec<Option<raw::DropIn>> = drop_ins
        .iter()
        .zip(&drop_in_lines)
        .map(|((file, _), lines)| document::drop_in(file, lines, &mut errors))
        .collect();
    let order: Vec<&Path> = std::iter::once(path)
        .chain(drop_ins.iter().map(|(file, _)| file.as_path()))
        .collect();
    let Some(main) = main else {
        return Err(in_file_order(errors, &order));
    };
    let (main_file, dir): (Arc<Path>, Arc<Path>) = (path.into(), dir.into());
    let main_source = Source {
        file: &main_file,
        lines: &main_lines,
        dir: &dir,
    };
    // A drop-in's relative paths, like the main file's, resolve against its own directory.
    let drop_in_dir: Arc<Path> = dir.join(defaults::DROP_IN_DIR).into();
    let drop_in_files: Vec<Arc<Path>> = drop_ins
        .iter()
        .map(|(file, _)| file.as_path().into())
        .collect();
    let drop_in_sources = drop_in_files
        .iter()
        .zip(&drop_in_lines)
        .zip(parsed)
        .filter_map(|((file, lines), parsed)| {
            let source = Source {
                file,
                lines,
                dir: &drop_in_dir,
            };
            Some((source, parsed?))
        })
        .collect();
    match validate_files(&main_source, main, drop_in_sources, env) {
        Ok((daemon, cluster, pools, jobs)) if errors.is_empty() => Ok(Config {
            path: path.to_owned(),
            drop_ins: drop_ins.into_iter().map(|(file, _)| file).collect(),
            daemon,
            cluster,
            pools,
            jobs: Jobs::new(jobs),
        }),
        Ok(_) => Err(in_file_order(errors, &order)),
        Err(more) => {
            errors.extend(more.0);
            Err(in_file_order(errors, &order))
        }
    }
}

/// Reads only `[daemon]`, as the CLI does: an error among the jobs must not stop `pacer history`.
pub fn load_daemon_settings(path: &Path) -> Result<DaemonSettings, ConfigErrors> {
    let text = read(path)?;
    let dir = base_dir(path)?;
    let lines = Lines::new(&text);
    let mut errors = Vec::new();
    let daemon = document::daemon_only(path, &lines, &mut errors);
    if !errors.is_empty() {
        return Err(in_file_order(errors, &[path]));
    }
    let (file, dir): (Arc<Path>, Arc<Path>) = (path.into(), dir.into());
    let source = Source {
        file: &file,
        lines: &lines,
        dir: &dir,
    };
    validate_daemon_only(&source, daemon)
}

/// Reads only `[cluster]`, as the CLI does to find the shared database (`None` without it).
pub fn load_cluster_settings(path: &Path) -> Result<Option<ClusterSettings>, ConfigErrors> {
    let text = read(path)?;
    let dir = base_dir(path)?;
    let lines = Lines::new(&text);
    let mut errors = Vec::new();
    let cluster = document::cluster_only(path, &lines, &mut errors);
    if !errors.is_empty() {
        return Err(in_file_order(errors, &[path]));
    }
    let (file, dir): (Arc<Path>, Arc<Path>) = (path.into(), dir.into());
    let source = Source {
        file: &file,
        lines: &lines,
        dir: &dir,
    };
    validate_cluster_only(&source, cluster)
}

/// `errors` sorted by file (in the order `files` lists them, others last) and position, so a
/// user reads them top to bottom.
fn in_file_order(mut errors: Vec<ConfigError>, files: &[&Path]) -> ConfigErrors {
    errors.sort_by_key(|error| {
        (
            files
                .iter()
                .position(|file| *file == error.file)
                .unwrap_or(usize::MAX),
            error.position,
        )
    });
    ConfigErrors(errors)
}

/// The file's text; a file that is not UTF-8 is refused at its first bad byte.
fn read(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => {
                "; pass --config PATH or set PACER_CONFIG to use another file"
            }
            _ => "",
        };
        ConfigError::file(path, format!("cannot read the config file: {e}{hint}"))
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let before = String::from_utf8_lossy(&bytes[..valid]);
        ConfigError {
            file: path.to_owned(),
            position: Some(Lines::new(&before).position(valid)),
            message: format!(
                "byte 0x{:02x} is not UTF-8: a config file must be UTF-8 text; convert it (for \
                 example with iconv -t UTF-8) or remove the byte",
                bytes[valid]
            ),
        }
    })
}

/// The directory relative paths in `path` are resolved against, made absolute so a run's
/// working directory does not depend on where the daemon was started.
fn base_dir(path: &Path) -> Result<PathBuf, ConfigError> {
    let absolute = std::path::absolute(path)
        .map_err(|e| ConfigError::file(path, format!("cannot resolve the path: {e}")))?;
    Ok(absolute
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf))
}

/// `*.toml` files in `dir` in byte order of name, skipping hidden files (editors' temp files).
fn drop_in_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ConfigError::file(
                dir,
                format!("cannot list the drop-in directory: {e}"),
            ));
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "toml")
                && path
                    .file_name()
                    .is_some_and(|name| !name.as_encoded_bytes().starts_with(b"."))
        })
        .collect();
    files.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    Ok(files)
}

/// A config read from `text`, written as `pacer.toml` in a fresh temporary directory (kept
/// alive by the returned handle), as root would load it.
#[cfg(test)]
pub fn load_text(text: &str) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("pacer.toml");
    std::fs::write(&path, text).expect("the config is written");
    let config = load(
        &path,
        Environment {
            can_switch_users: true,
            can_run_as_root: true,
        },
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    (dir, config)
}
