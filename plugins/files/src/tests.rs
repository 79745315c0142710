//! The plugin on real files in temporary directories, through `TestHost` as `pacerd` runs it.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::read::GzDecoder;
use pacer_plugin_api::Level;
use pacer_plugin_api::testing::{Outcome, TestHost};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::Files;

const DAY: Duration = Duration::from_secs(86_400);
const HOUR: Duration = Duration::from_secs(3600);

/// Writes `dir/name` (creating parent directories) last modified `age` ago.
fn aged(dir: &Path, name: &str, content: &[u8], age: Duration) -> PathBuf {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut file = File::create(&path).unwrap();
    file.write_all(content).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
    path
}

fn run(params: &Value) -> Outcome {
    TestHost::new().params(params).run::<Files>()
}

fn validate(params: &Value) -> Outcome {
    TestHost::new().params(params).validate::<Files>()
}

fn failure(outcome: &Outcome) -> &str {
    assert!(!outcome.ok, "expected a failure: {outcome:?}");
    outcome.message.as_deref().unwrap()
}

fn succeeded(outcome: &Outcome) -> &str {
    assert!(outcome.ok, "expected success: {outcome:?}");
    outcome.message.as_deref().unwrap()
}

fn info_lines(outcome: &Outcome) -> Vec<&str> {
    outcome
        .logs
        .iter()
        .filter(|(level, _)| *level == Level::Info)
        .map(|(_, line)| line.as_str())
        .collect()
}

fn error_lines(outcome: &Outcome) -> Vec<&str> {
    outcome
        .logs
        .iter()
        .filter(|(level, _)| *level == Level::Error)
        .map(|(_, line)| line.as_str())
        .collect()
}

/// The date a file modified `age` ago shows in log lines (the system's time zone).
fn date(age: Duration) -> String {
    let then = jiff::Timestamp::try_from(SystemTime::now() - age).unwrap();
    then.to_zoned(jiff::tz::TimeZone::system())
        .date()
        .to_string()
}

/// The names under `dir`, recursively, as sorted relative paths (symlinks not followed).
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn delete_removes_only_files_older_than_the_threshold() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    aged(dir, "old.log", b"hello", 10 * DAY);
    aged(dir, "new.log", b"fresh", HOUR);

    let outcome = run(&json!({"path": dir, "action": "delete"}));
    let d = dir.display();
    assert_eq!(succeeded(&outcome), format!("deleted 1 file (5 B) in {d}"));
    assert_eq!(
        info_lines(&outcome),
        [
            format!("deleted {d}/old.log (5 B, modified {})", date(10 * DAY)),
            format!("deleted 1 file (5 B) in {d}"),
        ]
    );
    assert_eq!(tree(dir), ["new.log"]);
}

#[test]
fn older_than_takes_combined_units() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    aged(dir, "a", b"", 2 * DAY);
    aged(dir, "b", b"", DAY + 11 * HOUR);
    aged(dir, "c", b"", DAY + 13 * HOUR);

    let outcome = run(&json!({"path": dir, "action": "delete", "older_than": "1d12h"}));
    assert_eq!(
        succeeded(&outcome),
        format!("deleted 2 files (0 B) in {}", dir.display())
    );
    assert_eq!(tree(dir), ["b"]);

    let outcome = run(&json!({"path": dir, "action": "delete", "older_than": "30m"}));
    succeeded(&outcome);
    assert!(tree(dir).is_empty());
}

#[test]
fn pattern_matches_file_names_like_the_shell() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    for name in ["a.log", "b.log.1", "c.txt", ".hidden.log", "sub/d.log"] {
        aged(dir, name, b"x", 30 * DAY);
    }
    let outcome = run(&json!({"path": dir, "action": "delete", "pattern": "*.log"}));
    succeeded(&outcome);
    assert_eq!(
        tree(dir),
        [".hidden.log", "b.log.1", "c.txt", "sub", "sub/d.log"]
    );

    let outcome = run(&json!({"path": dir, "action": "delete", "pattern": ".*"}));
    succeeded(&outcome);
    assert_eq!(tree(dir), ["b.log.1", "c.txt", "sub", "sub/d.log"]);

    let outcome = run(&json!({"path": dir, "action": "delete", "pattern": "[bc].*"}));
    succeeded(&outcome);
    assert_eq!(tree(dir), ["sub", "sub/d.log"]);
}

#[test]
fn recursive_enters_subdirectories_and_keeps_them() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    for name in ["top.log", "a/one.log", "a/b/two.log", "z/three.log"] {
        aged(dir, name, b"12345", 30 * DAY);
    }

    let outcome = run(&json!({"path": dir, "action": "delete"}));
    succeeded(&outcome);
    assert_eq!(
        tree(dir),
        ["a", "a/b", "a/b/two.log", "a/one.log", "z", "z/three.log"]
    );

    let outcome = run(&json!({"path": dir, "action": "delete", "recursive": true}));
    let d = dir.display();
    assert_eq!(
        succeeded(&outcome),
        format!("deleted 3 files (15 B) in {d}")
    );
    let deleted: Vec<&str> = info_lines(&outcome)
        .into_iter()
        .filter(|line| line.contains(", modified "))
        .filter_map(|line| line.strip_prefix("deleted ")?.split(' ').next())
        .collect();
    // Name order, each directory's files before its subdirectories.
    assert_eq!(
        deleted,
        [
            format!("{d}/a/one.log"),
            format!("{d}/a/b/two.log"),
            format!("{d}/z/three.log"),
        ]
    );
    assert_eq!(tree(dir), ["a", "a/b", "z"]);
}

#[test]
fn dry_run_logs_and_touches_nothing() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    aged(dir, "a.log", b"abc", 10 * DAY);
    aged(dir, "sub/b.log", b"defg", 10 * DAY);
    let before = tree(dir);
    let d = dir.display();

    let outcome = run(&json!({
        "path": dir, "action": "delete", "dry_run": true, "recursive": true,
    }));
    assert_eq!(
        succeeded(&outcome),
        format!("would delete 2 files (7 B) in {d} (dry run)")
    );
    assert_eq!(
        info_lines(&outcome)[..2],
        [
            format!("would delete {d}/a.log (3 B, modified {})", date(10 * DAY)),
            format!(
                "would delete {d}/sub/b.log (4 B, modified {})",
                date(10 * DAY)
            ),
        ]
    );
    assert_eq!(tree(dir), before);

    let outcome = run(&json!({"path": dir, "action": "gzip", "dry_run": true}));
    assert_eq!(
        succeeded(&outcome),
        format!("would gzip 1 file (3 B) in {d} (dry run)")
    );
    assert_eq!(
        info_lines(&outcome)[0],
        format!(
            "would gzip {d}/a.log (3 B, modified {}) -> {d}/a.log.gz",
            date(10 * DAY)
        )
    );
    assert_eq!(tree(dir), before);
}

#[test]
fn gzip_replaces_the_file_and_keeps_its_times_and_permissions() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let content = b"GET /index.html 200\n".repeat(500);
    let log = aged(dir, "access.log", &content, 3 * DAY);
    fs::set_permissions(&log, fs::Permissions::from_mode(0o640)).unwrap();
    let original = fs::metadata(&log).unwrap();
    aged(dir, "already.gz", b"not really gzip", 30 * DAY);

    let outcome = run(&json!({"path": dir, "action": "gzip", "older_than": "1d"}));
    let message = succeeded(&outcome);
    let d = dir.display();
    assert!(
        message.starts_with(&format!("gzipped 1 file in {d}: 9.8 KiB -> ")),
        "{message}"
    );
    assert_eq!(tree(dir), ["access.log.gz", "already.gz"]);
    let gz = dir.join("access.log.gz");
    assert_eq!(gunzip(&gz), content);
    let meta = fs::metadata(&gz).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert_eq!(meta.modified().unwrap(), original.modified().unwrap());
    assert_eq!(
        fs::read(dir.join("already.gz")).unwrap(),
        b"not really gzip"
    );

    let line = info_lines(&outcome)[0];
    let expected = format!(
        "gzipped {d}/access.log (9.8 KiB, modified {}) -> {d}/access.log.gz (",
        date(3 * DAY)
    );
    assert!(line.starts_with(&expected), "{line}");
    assert!(line.ends_with("% of the original)"), "{line}");
}

#[test]
fn an_existing_gz_is_not_overwritten_and_fails_the_run() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    aged(dir, "a.log", b"new data", 10 * DAY);
    aged(dir, "a.log.gz", b"precious", 10 * DAY);
    aged(dir, "b.log", b"other", 10 * DAY);

    let outcome = run(&json!({"path": dir, "action": "gzip"}));
    let d = dir.display();
    let message = failure(&outcome);
    assert!(
        message.starts_with(&format!(
            "1 error (see the run's output); gzipped 1 file in {d}: 5 B -> "
        )),
        "{message}"
    );
    assert_eq!(
        error_lines(&outcome),
        [format!(
            "not gzipping {d}/a.log (8 B, modified {}): {d}/a.log.gz already exists and is not \
             overwritten",
            date(10 * DAY)
        )]
    );
    assert_eq!(tree(dir), ["a.log", "a.log.gz", "b.log.gz"]);
    assert_eq!(fs::read(dir.join("a.log")).unwrap(), b"new data");
    assert_eq!(fs::read(dir.join("a.log.gz")).unwrap(), b"precious");
    assert_eq!(gunzip(&dir.join("b.log.gz")), b"other");
}

#[test]
fn symlinks_are_never_followed_or_removed() {
    let outside = TempDir::new().unwrap();
    let target_file = aged(outside.path(), "secret.log", b"keep me", 30 * DAY);
    aged(outside.path(), "dir/inner.log", b"me too", 30 * DAY);

    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    symlink(&target_file, dir.join("link.log")).unwrap();
    symlink(outside.path().join("dir"), dir.join("linkdir")).unwrap();
    symlink(dir.join("nowhere"), dir.join("dangling.log")).unwrap();
    aged(dir, "real.log", b"bye", 30 * DAY);
    let outside_before = tree(outside.path());

    for action in ["gzip", "delete"] {
        let outcome = run(&json!({
            "path": dir, "action": action, "recursive": true, "older_than": "1d",
        }));
        succeeded(&outcome);
        assert_eq!(tree(outside.path()), outside_before, "{action}");
        assert_eq!(fs::read(&target_file).unwrap(), b"keep me");
        assert_eq!(
            fs::read(outside.path().join("dir/inner.log")).unwrap(),
            b"me too"
        );
        for link in ["link.log", "linkdir", "dangling.log"] {
            assert!(dir.join(link).is_symlink(), "{link} after {action}");
        }
    }
    // Only the real file was handled: gzipped, then its .gz deleted.
    assert_eq!(tree(dir), ["dangling.log", "link.log", "linkdir"]);
}

/// FNV-1a, enough to tell two byte streams apart in a test.
fn fnv(hash: &mut u64, bytes: &[u8]) {
    for byte in bytes {
        *hash ^= u64::from(*byte);
        *hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Writes `size` bytes of log-like lines with pseudo-random parts, a buffer at a time;
/// returns their hash.
fn generate(path: &Path, size: usize) -> u64 {
    let mut file = std::io::BufWriter::new(File::create(path).unwrap());
    let mut hash = FNV_START;
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut written = 0;
    let mut line = Vec::new();
    while written < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        line.clear();
        writeln!(
            line,
            "{written:012} request id={state:016x} status=200 bytes={}",
            state % 9973
        )
        .unwrap();
        line.truncate(size - written);
        fnv(&mut hash, &line);
        file.write_all(&line).unwrap();
        written += line.len();
    }
    file.into_inner().unwrap().sync_all().unwrap();
    hash
}

/// The length and hash of what `reader` yields, read a buffer at a time: the tests that
/// handle large files keep the process small, so that the memory test measures the plugin.
fn hash_stream(mut reader: impl Read) -> (usize, u64) {
    let mut buffer = vec![0; 1 << 16];
    let (mut total, mut hash) = (0, FNV_START);
    loop {
        let n = reader.read(&mut buffer).unwrap();
        if n == 0 {
            return (total, hash);
        }
        fnv(&mut hash, &buffer[..n]);
        total += n;
    }
}

/// The process's peak resident memory, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_large_file_is_streamed_in_constant_memory() {
    const SIZE: usize = 50 * 1024 * 1024;
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let path = dir.join("big.log");
    let hash = generate(&path, SIZE);
    let old = SystemTime::now() - 10 * DAY;
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();

    // Writing 5 to clear_refs resets the peak to the current size, so the peak read after the
    // run is what the run needed (other tests in this process use little memory).
    let baseline = fs::write("/proc/self/clear_refs", "5")
        .ok()
        .and_then(|()| peak_rss_kib());
    let outcome = run(&json!({"path": dir, "action": "gzip"}));
    succeeded(&outcome);
    if let (Some(before), Some(after)) = (baseline, peak_rss_kib()) {
        assert!(
            after < before + 16 * 1024,
            "the peak grew by {} KiB while compressing a 50 MiB file",
            after - before
        );
    }

    assert_eq!(tree(dir), ["big.log.gz"]);
    let gz = dir.join("big.log.gz");
    assert!(fs::metadata(&gz).unwrap().len() < SIZE as u64 / 2);
    assert_eq!(fs::metadata(&gz).unwrap().modified().unwrap(), old);
    let unpacked = hash_stream(GzDecoder::new(File::open(&gz).unwrap()));
    assert_eq!(unpacked, (SIZE, hash));
}

#[test]
fn cancellation_mid_file_leaves_the_original_and_no_temporary_file() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let path = dir.join("big.log");
    let hash = generate(&path, 30 * 1024 * 1024);
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(SystemTime::now() - 10 * DAY)
        .unwrap();

    let outcome = TestHost::new()
        .params(json!({"path": dir, "action": "gzip"}))
        .cancel_after(Duration::from_millis(30))
        .run::<Files>();
    assert_eq!(failure(&outcome), "cancelled");
    assert_eq!(tree(dir), ["big.log"]);
    assert_eq!(
        hash_stream(File::open(&path).unwrap()),
        (30 * 1024 * 1024, hash)
    );

    aged(dir, "small.log", b"x", 10 * DAY);
    let outcome = TestHost::new()
        .params(json!({"path": dir, "action": "delete"}))
        .cancelled()
        .run::<Files>();
    assert_eq!(failure(&outcome), "cancelled");
    assert_eq!(tree(dir), ["big.log", "small.log"]);
}

#[test]
fn a_missing_or_non_directory_path_fails_before_anything() {
    let tmp = TempDir::new().unwrap();
    let missing = tmp.path().join("nope");
    let outcome = run(&json!({"path": missing, "action": "delete"}));
    assert_eq!(
        failure(&outcome),
        format!(
            "`path` {} does not exist (a relative path is taken from the directory of the \
             job's config file)",
            missing.display()
        )
    );

    let file = aged(tmp.path(), "file", b"", 10 * DAY);
    let outcome = run(&json!({"path": file, "action": "delete"}));
    assert_eq!(
        failure(&outcome),
        format!("`path` {} is not a directory", file.display())
    );
    assert!(file.exists());
}

#[test]
fn per_file_errors_are_counted_and_the_others_still_handled() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    aged(dir, "a.log", b"aaa", 10 * DAY);
    aged(dir, "b.log", b"bbb", 10 * DAY);
    aged(dir, "c.log", b"ccc", 10 * DAY);
    // Occupies b.log's temporary name, so that its compression fails even for root.
    let blocker = dir.join(format!(".b.log.gz.tmp-{}", std::process::id()));
    fs::create_dir(&blocker).unwrap();

    let outcome = run(&json!({"path": dir, "action": "gzip"}));
    let d = dir.display();
    let message = failure(&outcome);
    assert!(
        message.starts_with(&format!(
            "1 error (see the run's output); gzipped 2 files in {d}: 6 B -> "
        )),
        "{message}"
    );
    let errors = error_lines(&outcome);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!(
            "cannot gzip {d}/b.log (3 B, modified {}): cannot create .b.log.gz.tmp-",
            date(10 * DAY)
        )),
        "{errors:?}"
    );
    assert!(
        errors[0].ends_with("File exists (os error 17)"),
        "{errors:?}"
    );
    fs::remove_dir(&blocker).unwrap();
    assert_eq!(tree(dir), ["a.log.gz", "b.log", "c.log.gz"]);
}

#[test]
fn permission_errors_are_counted() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    aged(dir, "locked/a.log", b"a", 10 * DAY);
    aged(dir, "readonly/b.log", b"b", 10 * DAY);
    aged(dir, "z.log", b"z", 10 * DAY);
    let locked = dir.join("locked");
    let readonly = dir.join("readonly");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(&readonly, fs::Permissions::from_mode(0o555)).unwrap();
    // Root (CAP_DAC_OVERRIDE) ignores permission bits; the other error test covers it there.
    let privileged = File::create(readonly.join("probe")).is_ok();

    let outcome = run(&json!({"path": dir, "action": "delete", "recursive": true}));
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&readonly, fs::Permissions::from_mode(0o755)).unwrap();
    if privileged {
        succeeded(&outcome);
        return;
    }
    let d = dir.display();
    assert_eq!(
        failure(&outcome),
        format!("2 errors (see the run's output); deleted 1 file (1 B) in {d}")
    );
    assert_eq!(
        error_lines(&outcome),
        [
            format!("cannot list {d}/locked: Permission denied (os error 13)"),
            format!(
                "cannot delete {d}/readonly/b.log (1 B, modified {}): Permission denied \
                 (os error 13)",
                date(10 * DAY)
            ),
        ]
    );
    assert_eq!(
        tree(dir),
        ["locked", "locked/a.log", "readonly", "readonly/b.log"]
    );
}

#[test]
fn validate_names_the_key_and_the_fix() {
    for (params, message) in [
        (
            json!({"action": "delete"}),
            "`path` is required: the directory whose old files to delete or gzip",
        ),
        (
            json!({"path": "", "action": "delete"}),
            "`path` must not be empty",
        ),
        (
            json!({"path": 7, "action": "delete"}),
            "`path` must be a string, not an integer",
        ),
        (
            json!({"path": "logs"}),
            "`action` is required: \"delete\" or \"gzip\"",
        ),
        (
            json!({"path": "logs", "action": "remove"}),
            "`action` must be \"delete\" or \"gzip\", not \"remove\"",
        ),
        (
            json!({"path": "logs", "action": "delete", "older_than": "7 days"}),
            "`older_than`: `7 days` is not a duration such as 30m, 12h or 7d",
        ),
        (
            json!({"path": "logs", "action": "delete", "older_than": 7}),
            "`older_than` must be a string, not an integer",
        ),
        (
            json!({"path": "logs", "action": "delete", "pattern": "[a"}),
            "`pattern`: `[a` is not a valid glob (invalid range pattern)",
        ),
        (
            json!({"path": "logs", "action": "delete", "pattern": "sub/*.log"}),
            "`pattern` is matched against file names, so it cannot contain `/`; set `path` to \
             the directory instead",
        ),
        (
            json!({"path": "logs", "action": "delete", "recursive": "yes"}),
            "`recursive` must be true or false, not a string",
        ),
        (
            json!({"path": "logs", "action": "delete", "dry_run": 1}),
            "`dry_run` must be true or false, not an integer",
        ),
    ] {
        assert_eq!(failure(&validate(&params)), message, "{params}");
        // A run checks the same way before touching anything.
        assert_eq!(failure(&run(&params)), message, "{params}");
    }

    let outcome = validate(&json!({"path": "logs", "action": "delete", "olderthan": "1d"}));
    let message = failure(&outcome);
    assert!(
        message.starts_with("invalid params: unknown field `olderthan`, expected one of"),
        "{message}"
    );
}

#[test]
fn a_chained_run_may_carry_upstream() {
    let outcome = validate(&json!({
        "path": "logs", "action": "gzip", "pattern": "*.log", "older_than": "1d12h",
        "recursive": true, "dry_run": false,
        "upstream": {"job": "backup", "id": 7, "status": "failed", "error": "x"},
    }));
    assert!(outcome.ok, "{outcome:?}");
}
