//! Finding and reading the config file and its drop-ins.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{ConfigError, ConfigErrors, Lines};
use super::validate::{Source, validate_cluster_only, validate_daemon_only, validate_files};
use super::{ClusterSettings, Config, DaemonSettings, Jobs, defaults, raw};

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

/// Facts about the host that decide whether a config is valid here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Environment {
    /// `user = ...` needs a daemon that can switch users (root, or `CAP_SETUID`+`CAP_SETGID`).
    pub can_switch_users: bool,
}

impl Environment {
    /// The environment of this process.
    pub fn current() -> Environment {
        Environment {
            can_switch_users: crate::privilege::can_switch_users(),
        }
    }
}

/// Reads and validates the config at `path` and the `jobs.d/*.toml` drop-ins beside it,
/// reporting every problem found.
pub fn load(path: &Path, env: Environment) -> Result<Config, ConfigErrors> {
    let main_text = read(path)?;
    let dir = base_dir(path)?;
    let mut errors = Vec::new();
    let main = parse::<raw::File>(path, &main_text).map_err(ConfigErrors::from)?;
    let mut files = Vec::new();
    let mut texts = Vec::new();
    let mut parsed = Vec::new();
    for file in drop_in_files(&dir.join(defaults::DROP_IN_DIR)).map_err(ConfigErrors::from)? {
        match read(&file).and_then(|text| Ok((parse::<raw::DropIn>(&file, &text)?, text))) {
            Ok((drop_in, text)) => {
                files.push(file);
                texts.push(text);
                parsed.push(drop_in);
            }
            Err(error) => errors.push(error),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let (main_file, dir): (Arc<Path>, Arc<Path>) = (path.into(), dir.into());
    let main_lines = Lines::new(&main_text);
    let main_source = Source {
        file: &main_file,
        lines: &main_lines,
        dir: &dir,
    };
    // A drop-in's relative paths, like the main file's, resolve against its own directory.
    let drop_in_dir: Arc<Path> = dir.join(defaults::DROP_IN_DIR).into();
    let drop_in_files: Vec<Arc<Path>> = files.iter().map(|file| file.as_path().into()).collect();
    let drop_in_lines: Vec<Lines<'_>> = texts.iter().map(|text| Lines::new(text)).collect();
    let drop_in_sources = drop_in_files
        .iter()
        .zip(&drop_in_lines)
        .map(|(file, lines)| Source {
            file,
            lines,
            dir: &drop_in_dir,
        })
        .zip(parsed)
        .collect();
    let (daemon, cluster, pools, jobs) = validate_files(&main_source, main, drop_in_sources, env)?;
    Ok(Config {
        path: path.to_owned(),
        drop_ins: files,
        daemon,
        cluster,
        pools,
        jobs: Jobs::new(jobs),
    })
}

/// Reads only `[daemon]`, as the CLI does: an error among the jobs must not stop `pacer history`.
pub fn load_daemon_settings(path: &Path) -> Result<DaemonSettings, ConfigErrors> {
    let text = read(path)?;
    let dir = base_dir(path)?;
    let parsed = parse::<raw::DaemonOnly>(path, &text)?;
    let lines = Lines::new(&text);
    let (file, dir): (Arc<Path>, Arc<Path>) = (path.into(), dir.into());
    let source = Source {
        file: &file,
        lines: &lines,
        dir: &dir,
    };
    validate_daemon_only(&source, parsed.daemon)
}

/// Reads only `[cluster]`, as the CLI does to find the shared database (`None` without it).
pub fn load_cluster_settings(path: &Path) -> Result<Option<ClusterSettings>, ConfigErrors> {
    let text = read(path)?;
    let dir = base_dir(path)?;
    let parsed = parse::<raw::ClusterOnly>(path, &text)?;
    let lines = Lines::new(&text);
    let (file, dir): (Arc<Path>, Arc<Path>) = (path.into(), dir.into());
    let source = Source {
        file: &file,
        lines: &lines,
        dir: &dir,
    };
    validate_cluster_only(&source, parsed.cluster)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => {
                "; pass --config PATH or set PACER_CONFIG to use another file"
            }
            _ => "",
        };
        ConfigError::file(path, format!("cannot read the config file: {e}{hint}"))
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

fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim_end().replace('\n', "; ");
        match e.span() {
            Some(span) => ConfigError::at(path, text, span, message),
            None => ConfigError::file(path, message),
        }
    })
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
        },
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    (dir, config)
}
