//! Like sshd's StrictModes: a daemon that can run jobs as any user (root, or holding the
//! capabilities to switch users) refuses plugin code that someone other than root could have
//! changed, since that code could then run as anyone.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Why `library` must not be loaded by a root daemon, if it must not: it, or the directory that
/// holds it (not its ancestors), is writable by group or others or owned by someone other than
/// root. For a symbolic link, the directory holding the file it leads to counts too: whoever
/// may replace that file changes the code as surely.
pub fn check(library: &Path) -> Option<String> {
    let directory = library.parent().unwrap_or(Path::new("/"));
    let target_directory = std::fs::canonicalize(library)
        .ok()
        .and_then(|target| target.parent().map(Path::to_path_buf))
        .filter(|target_dir| {
            std::fs::canonicalize(directory).map_or(true, |dir| dir != *target_dir)
        });
    let mut paths = vec![(library, "the library"), (directory, "its directory")];
    if let Some(target_directory) = &target_directory {
        paths.push((target_directory, "the directory its link leads to"));
    }
    for (path, what) in paths {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) => return Some(format!("cannot read {}: {e}", path.display())),
        };
        if meta.uid() != 0 {
            return Some(format!(
                "{what} {} is owned by uid {}, not root, and pacerd can run it as any user; fix: chown root {}",
                path.display(),
                meta.uid(),
                path.display()
            ));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Some(format!(
                "{what} {} is writable by group or others (mode {mode:04o}), so a user other than \
                 root could change code that pacerd can run as any user; fix: chmod go-w {}",
                path.display(),
                path.display()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn only_root_owned_unwritable_code_passes() {
        if !pacer_tests::require_root("the permission rules apply to a daemon running as root") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let library = dir.path().join("libx.so");
        std::fs::write(&library, b"").unwrap();
        std::fs::set_permissions(&library, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check(&library), None);

        std::fs::set_permissions(&library, std::fs::Permissions::from_mode(0o664)).unwrap();
        let why = check(&library).unwrap();
        assert!(
            why.starts_with(&format!(
                "the library {} is writable by group or others (mode 0664)",
                library.display()
            )),
            "{why}"
        );
        assert!(
            why.ends_with(&format!("fix: chmod go-w {}", library.display())),
            "{why}"
        );

        std::fs::set_permissions(&library, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let why = check(&library).unwrap();
        assert!(why.starts_with("its directory"), "{why}");
        assert!(why.contains("(mode 1777)"), "{why}");

        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&library, Some(65_534), None).unwrap();
        let why = check(&library).unwrap();
        assert!(why.contains("is owned by uid 65534, not root"), "{why}");
        assert!(
            why.ends_with(&format!("fix: chown root {}", library.display())),
            "{why}"
        );
    }

    #[test]
    fn a_link_is_judged_by_where_it_leads_too() {
        if !pacer_tests::require_root("the permission rules apply to a daemon running as root") {
            return;
        }
        let plugins = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let library = elsewhere.path().join("libx.so");
        std::fs::write(&library, b"").unwrap();
        std::fs::set_permissions(&library, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(plugins.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(elsewhere.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let link = plugins.path().join("libx.so");
        std::os::unix::fs::symlink(&library, &link).unwrap();
        let why = check(&link).unwrap();
        assert!(why.starts_with("the directory its link leads to"), "{why}");
        std::fs::set_permissions(elsewhere.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check(&link), None);
    }
}
