//! A history damaged on disk (truncated, bytes flipped, replaced by garbage, emptied, a row
//! altered) and history files the kernel stops letting the daemon write: the daemon and the CLI
//! refuse clearly or serve what is intact, and never panic, die by a signal or start a new
//! history over the old one.

use std::path::Path;
use std::process::Command;

use pacer_tests::{CommandOutput, Daemon, Sandbox, is_alive, root_or_skip, wait_until};

const JOBS: &str = r#"
[[jobs]]
name = "a"
schedule = "0 0 1 1 *"
plugin = "exec"
params = { command = "true" }

[[jobs]]
name = "b"
schedule = "0 0 1 1 *"
plugin = "exec"
params = { command = "true" }
"#;

/// Rows in the prepared history: enough pages for damage in the middle to hit data and
/// indexes rather than only the header.
const RUNS: i64 = 3_000;

/// A sandbox whose `pacer.db` was created by pacerd and then filled with [`RUNS`] finished runs
/// (and their output) through SQLite, as years of use would.
fn sandbox_with_history() -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.write_config("", JOBS);
    let mut daemon = sandbox.start();
    assert_eq!(daemon.stop(), Some(0));
    let mut conn = rusqlite::Connection::open(sandbox.path().join("pacer.db")).unwrap();
    let tx = conn.transaction().unwrap();
    for i in 1..=RUNS {
        let job = if i % 2 == 0 { "a" } else { "b" };
        let status = if i % 7 == 0 { "failed" } else { "succeeded" };
        let at = 1_700_000_000_000 + i * 60_000;
        tx.execute(
            "INSERT INTO runs (job, plugin, status, trigger, attempt, scheduled_at, started_at,
                               finished_at, queue_ms, error, params)
             VALUES (?1, 'exec', ?2, 'schedule', 1, ?3, ?3 + 5, ?3 + 900, 1, NULL,
                     '{\"command\":\"true\"}')",
            rusqlite::params![job, status, at],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO run_output (run_id, output, dropped) VALUES (?1, ?2, 0)",
            rusqlite::params![i, format!("output of run {i}\n").repeat(3).into_bytes()],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    drop(conn);
    sandbox
}

/// A CLI call on a damaged history: it may fail, but with a one-line reason that names the
/// database (or the missing run), never with a panic or a signal.
fn assert_clear(out: &CommandOutput, database: &Path) {
    assert!(
        out.code == 0 || out.code == 1,
        "exit 0 or 1, not a panic (101) or a signal:\n{out}"
    );
    assert!(!out.stderr.contains("panicked"), "{out}");
    if out.code == 1 {
        assert!(
            out.stderr.contains(&database.display().to_string())
                || out.stderr.starts_with("pacer: no run with id"),
            "the reason names the database:\n{out}"
        );
    }
}

/// Starts pacerd on the damaged history and returns its exit code if it refused to start, or
/// `None` if it started (and then stopped cleanly).
fn start_on_damaged(sandbox: &Sandbox, database: &Path) -> Option<i32> {
    let mut daemon: Daemon = sandbox.spawn_daemon();
    let started = wait_until("pacerd to answer or to exit", || {
        if !is_alive(daemon.pid()) {
            return Some(false);
        }
        (sandbox.pacer(["status"]).code == 0).then_some(true)
    });
    let log = daemon.log();
    assert!(!log.contains("panicked"), "{log}");
    if started {
        let code = daemon.stop();
        assert!(code.is_some(), "stopped by a signal:\n{}", daemon.log());
        return None;
    }
    let code = daemon.wait();
    assert_eq!(code, Some(1), "a refusal, not a signal:\n{log}");
    assert!(
        log.contains(&database.display().to_string()),
        "the refusal names the database:\n{log}"
    );
    code
}

/// A damage to apply to a copy of the history.
#[derive(Debug, Clone, Copy)]
enum Damage {
    Empty,
    TruncateTo(u64),
    TruncateToFraction(u64),
    Garbage { keep_magic: bool },
    FlipAt(u64),
    FlipAtFraction(u64),
    ZeroPageAtFraction(u64),
}

/// A fixed pseudo-random sequence (xorshift), so a failure reproduces.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn damage(path: &Path, damage: Damage) {
    let mut bytes = std::fs::read(path).unwrap();
    let len = bytes.len() as u64;
    let at = |n: u64| usize::try_from(n.min(len - 1)).unwrap();
    match damage {
        Damage::Empty => bytes.clear(),
        Damage::TruncateTo(n) => bytes.truncate(at(n)),
        Damage::TruncateToFraction(percent) => bytes.truncate(at(len * percent / 100)),
        Damage::Garbage { keep_magic } => {
            bytes = noise(len, 64 * 1024);
            if keep_magic {
                bytes[..16].copy_from_slice(b"SQLite format 3\0");
            }
        }
        Damage::FlipAt(offset) => {
            for (i, flip) in noise(offset, 8).into_iter().enumerate() {
                bytes[at(offset) + i] ^= flip | 1;
            }
        }
        Damage::FlipAtFraction(percent) => {
            let offset = at(len * percent / 100);
            for (i, flip) in noise(percent, 64).into_iter().enumerate() {
                let at = (offset + i * 61) % bytes.len();
                bytes[at] ^= flip | 1;
            }
        }
        Damage::ZeroPageAtFraction(percent) => {
            let page = at(len * percent / 100) / 4096 * 4096;
            bytes[page..page + 4096].fill(0);
        }
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_history_is_refused_or_served_in_part_never_replaced() {
    let sandbox = sandbox_with_history();
    let database = sandbox.path().join("pacer.db");
    let pristine = std::fs::read(&database).unwrap();
    let damages = [
        Damage::Empty,
        Damage::TruncateTo(100),
        Damage::TruncateTo(4096),
        Damage::TruncateToFraction(50),
        Damage::TruncateToFraction(97),
        Damage::Garbage { keep_magic: false },
        Damage::Garbage { keep_magic: true },
        // The header: page size, format versions, page count, schema cookie.
        Damage::FlipAt(16),
        Damage::FlipAt(28),
        Damage::FlipAt(40),
        // The schema page, then pages of rows and of indexes.
        Damage::FlipAt(100),
        Damage::FlipAtFraction(20),
        Damage::FlipAtFraction(60),
        Damage::FlipAtFraction(95),
        Damage::ZeroPageAtFraction(40),
        Damage::ZeroPageAtFraction(80),
    ];
    let mut refused = 0;
    for case in damages {
        std::fs::write(&database, &pristine).unwrap();
        damage(&database, case);
        let damaged = std::fs::read(&database).unwrap();
        for args in [
            &["history"][..],
            &["history", "--json", "--job", "a", "--limit", "5000"],
            &["history", "--status", "failed", "--before", "2000"],
            &["show", "1500"],
            &["stats"],
            &["jobs", "--json"],
        ] {
            let out = sandbox.pacer(args);
            assert_clear(&out, &database);
        }
        match start_on_damaged(&sandbox, &database) {
            Some(_) => {
                refused += 1;
                assert!(
                    std::fs::read(&database).unwrap() == damaged,
                    "{case:?}: a refused history is left as found"
                );
            }
            None => assert!(
                std::fs::metadata(&database).unwrap().len() > 0,
                "{case:?}: never replaced by an empty history"
            ),
        }
        for leftover in ["pacer.db-wal", "pacer.db-shm"] {
            let _ = std::fs::remove_file(sandbox.path().join(leftover));
        }
    }
    assert!(
        refused >= 4,
        "the empty, short and garbage files are refused"
    );
}

#[test]
fn an_empty_database_file_is_refused_not_replaced() {
    let sandbox = Sandbox::new();
    sandbox.write_config("", JOBS);
    let database = sandbox.write("pacer.db", "");
    let mut daemon = sandbox.spawn_daemon();
    assert_eq!(daemon.wait(), Some(1), "{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "the run history {} is empty (0 bytes)",
            database.display()
        )),
        "{log}"
    );
    assert!(log.contains("restore it from a backup"), "{log}");
    assert_eq!(std::fs::metadata(&database).unwrap().len(), 0);
    let history = sandbox.pacer(["history"]);
    assert_eq!(history.code, 1, "{history}");
    assert!(history.stderr.contains("is empty (0 bytes)"), "{history}");
}

#[test]
fn a_damaged_row_is_left_out_with_a_warning() {
    let sandbox = sandbox_with_history();
    let database = sandbox.path().join("pacer.db");
    let conn = rusqlite::Connection::open(&database).unwrap();
    conn.execute_batch(
        "UPDATE runs SET job = CAST(x'ff61' AS TEXT) WHERE id = 2998;
         UPDATE runs SET scheduled_at = 'soon' WHERE id = 2997;",
    )
    .unwrap();
    drop(conn);
    let history = sandbox.pacer(["history", "--json", "--limit", "5"]);
    assert_eq!(history.code, 0, "{history}");
    let ids: Vec<i64> = history
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [3000, 2999, 2996], "the rest is listed");
    let db = database.display();
    assert_eq!(
        history.stderr,
        format!(
            "pacer: warning: left out a damaged row of {db}: runs row 2998: column `job` holds text that is not valid UTF-8 (docs/failures.md)\n\
             pacer: warning: left out a damaged row of {db}: runs row 2997: column `scheduled_at` holds the text \"soon\" (docs/failures.md)\n"
        )
    );
    let show = sandbox.pacer(["show", "2998"]);
    assert_eq!(show.code, 1, "{show}");
    assert!(
        show.stderr
            .starts_with(&format!("pacer: run 2998 in {db} is damaged: column `job`")),
        "{show}"
    );
    let stats = sandbox.pacer(["stats", "--json"]);
    assert_eq!(stats.code, 0, "{stats}");
    let runs: i64 = stats
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["runs"].as_i64().unwrap())
        .sum();
    assert_eq!(runs, RUNS - 2);
    let mut daemon = sandbox.start();
    assert_eq!(sandbox.pacer(["run", "a", "--wait"]).code, 0);
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn the_history_files_are_0640_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::new();
    sandbox.write_config("", JOBS);
    let pacerd_with_umask = ["sh", "-c", "umask 000; exec \"$0\" \"$@\""];
    let mut daemon = sandbox.start_wrapped(&pacerd_with_umask);
    assert_eq!(sandbox.pacer(["run", "a", "--wait"]).code, 0);
    for file in ["pacer.db", "pacer.db-wal", "pacer.db-shm", "pacer.db.lock"] {
        let mode = std::fs::metadata(sandbox.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640, "{file}: {mode:o}");
    }
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_shared_memory_file_made_immutable_stops_the_daemon_with_its_reason() {
    if !root_or_skip("making a file immutable (chattr +i)") {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        "[[jobs]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nplugin = \"exec\"\nparams = { command = \"true\" }\n",
    );
    let mut daemon = sandbox.start();
    let shm = sandbox.path().join("pacer.db-shm");
    wait_until("a run", || sandbox.history(&[]).into_iter().next());
    let immutable = Immutable::make(&shm);
    // The next write to the mapped file faults; runs every second make one soon.
    let code = daemon.wait();
    let log = daemon.log();
    let mut next = sandbox.spawn_daemon();
    let refused = next.wait();
    drop(immutable);
    assert_eq!(
        code,
        Some(74),
        "an exit with a reason, not a death by SIGBUS:\n{log}"
    );
    assert!(
        log.contains(&format!(
            "stopped by SIGBUS, a failed access to a memory-mapped file: most likely the run \
             history's shared-memory file {}",
            shm.display()
        )),
        "{log}"
    );
    assert_eq!(refused, Some(1), "{}", next.log());
    assert!(
        next.log().contains(&format!(
            "cannot write {}: Operation not permitted",
            shm.display()
        )),
        "the next start names the file: {}",
        next.log()
    );
    let before = sandbox.history(&[])[0]["id"].as_i64().unwrap();
    let mut daemon = sandbox.start();
    wait_until("runs again after chattr -i", || {
        sandbox
            .history(&["--status", "succeeded"])
            .into_iter()
            .find(|run| run["id"].as_i64() > Some(before))
    });
    assert_eq!(daemon.stop(), Some(0));
}

/// A file made immutable (`chattr +i`) until this is dropped, even by a failing test, so that
/// its temporary directory can be removed.
struct Immutable<'a>(&'a Path);

impl Immutable<'_> {
    fn make(path: &Path) -> Immutable<'_> {
        chattr("+i", path);
        Immutable(path)
    }
}

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        chattr("-i", self.0);
    }
}

fn chattr(flag: &str, path: &Path) {
    let mut command = Command::new("chattr");
    command.arg(flag).arg(path);
    let out = CommandOutput::run(command);
    assert_eq!(out.code, 0, "{out}");
}
