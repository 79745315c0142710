//! The history's storage fails under a running pacerd: its file system fills up, another
//! process holds the database's lock, its file system is remounted read-only, its files are made
//! immutable. While that lasts, fires keep their place and `pacer status` and the log say why;
//! once it passes, without a restart, every fire gets its record, every run that ended has its
//! outcome written, nothing is lost or doubled, and `pacer run --wait` never reported an outcome
//! that was not stored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pacer_tests::{
    CommandOutput, Daemon, Sandbox, is_alive, processes_of_run, require_tool, root_or_skip, text,
    wait_for, wait_until,
};
use serde_json::Value;

/// Jobs due every second with each `catch_up` and the overlap policies that make fires wait,
/// under a cap below the demand; `skipper` prints 100 kB per run, so the history grows fast and
/// a full file system shows at its next write. `long` runs (when started by hand) until the file `hold` is removed; `manual` is
/// started with `pacer run --wait` while the history cannot be written. Every run appends what
/// it was told to `ledger`, beside the config, outside the history's file system.
const JOBS: &str = r#"
max_concurrency = 3
max_catch_up = 5

[[jobs]]
name = "skipper"
schedule = "* * * * * *"
plugin = "exec"
catch_up = "skip"
params = { command = "echo $PACER_RUN_ID $PACER_JOB $PACER_SCHEDULED_AT >> ledger; head -c 100000 /dev/zero | tr '\\0' x" }

[[jobs]]
name = "once"
schedule = "* * * * * *"
plugin = "exec"
catch_up = "once"
overlap = "queue"
params = { command = "echo $PACER_RUN_ID $PACER_JOB $PACER_SCHEDULED_AT >> ledger; sleep 0.3" }

[[jobs]]
name = "all"
schedule = "* * * * * *"
plugin = "exec"
catch_up = "all"
overlap = "allow"
priority = -5
params = { command = "echo $PACER_RUN_ID $PACER_JOB $PACER_SCHEDULED_AT >> ledger; sleep 0.2" }

[[jobs]]
name = "long"
plugin = "exec"
priority = 10
params = { command = "echo $PACER_RUN_ID $PACER_JOB $PACER_SCHEDULED_AT >> ledger; while [ -e hold ]; do sleep 0.1; done" }

[[jobs]]
name = "manual"
plugin = "exec"
priority = 10
params = { command = "echo $PACER_RUN_ID $PACER_JOB $PACER_SCHEDULED_AT >> ledger" }
"#;

/// The jobs on a schedule, whose every fire instant must be accounted for.
const SCHEDULED: [&str; 3] = ["skipper", "once", "all"];

/// The history's directory, beside the config.
const STORE: &str = "store";

/// A tmpfs mounted on a directory for one test, unmounted (lazily, so a daemon still holding a
/// file there cannot keep it) when dropped, even by a failing test.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = Command::new("mount");
        command
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&dir);
        let out = CommandOutput::run(command);
        assert_eq!(out.code, 0, "{out}");
        Tmpfs(dir)
    }

    fn remount(&self, options: &str) -> CommandOutput {
        let mut command = Command::new("mount");
        command
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0);
        CommandOutput::run(command)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// pacerd on [`JOBS`] with its history in `store/pacer.db`, and when its fires began to count.
/// Dropped in field order: pacerd stops before its history's file system goes.
struct Scene {
    daemon: Daemon,
    tmpfs: Option<Tmpfs>,
    sandbox: Sandbox,
    database: PathBuf,
    /// Unix ms: fires of the scheduled jobs from the next second on must each have a record.
    window_start: i64,
}

impl Scene {
    /// Starts pacerd, its history on a tmpfs of `size` when one is given.
    fn start(tmpfs_size: Option<&str>) -> Scene {
        let sandbox = Sandbox::new();
        let store = sandbox.path().join(STORE);
        let tmpfs = tmpfs_size.map(|size| Tmpfs::mount(store.clone(), size));
        sandbox.write(
            "pacer.toml",
            &format!(
                "[daemon]\nplugin_dirs = [\"plugins\"]\ndatabase = \"{STORE}/pacer.db\"\n\
                 socket = \"pacer.sock\"\n{JOBS}"
            ),
        );
        let daemon = sandbox.start();
        let window_start = jiff::Timestamp::now().as_millisecond();
        Scene {
            daemon,
            tmpfs,
            sandbox,
            database: store.join("pacer.db"),
            window_start,
        }
    }

    /// Why `pacer status --json` says the history cannot be written, if it says so.
    fn history_error(&self) -> Option<String> {
        let status = self.sandbox.pacer_json(&["status"]);
        status["history_error"].as_str().map(str::to_owned)
    }
}

/// A fault on the history, begun and ended while pacerd runs.
trait Fault {
    /// What pacerd's error must say, in SQLite's or the system's words.
    fn cause(&self) -> &'static str;
    /// What the error must tell the operator to do.
    fn advice(&self) -> &'static str;
    fn begin(&mut self, scene: &Scene);
    fn end(&mut self, scene: &Scene);
}

/// Rides out `fault`, held for `hold` once pacerd reports it, and checks what pacerd showed
/// meanwhile and the history it kept. With `missed`, fires held long enough to count as missed
/// must be recorded `skipped` by their job's `catch_up`, saying the history could not be
/// written.
fn ride_out(scene: &mut Scene, fault: &mut dyn Fault, hold: Duration, missed: bool) {
    let sandbox = &scene.sandbox;
    wait_for("a run of each scheduled job", || {
        SCHEDULED
            .iter()
            .all(|job| !sandbox.history(&["--job", job, "--limit", "1"]).is_empty())
    });
    // A run going when the fault begins, which ends while it lasts.
    sandbox.write("hold", "");
    assert_eq!(sandbox.pacer(["run", "long"]).code, 0);
    let long = sandbox.wait_for_run("`long` running", &["--job", "long", "--status", "running"]);
    let long = long["id"].as_i64().unwrap();

    fault.begin(scene);
    let reported = wait_until("pacer status to say the history cannot be written", || {
        scene.history_error()
    });
    for words in [
        fault.cause(),
        fault.advice(),
        &scene.database.display().to_string(),
    ] {
        assert!(reported.contains(words), "`{words}` in: {reported}");
    }
    let human = sandbox.pacer(["status"]);
    assert_eq!(
        human
            .stdout
            .matches("the history cannot be written")
            .count(),
        1,
        "said once, with its cause: {human}"
    );
    wait_for("the log to say why the history cannot be written", || {
        scene.daemon.log().lines().any(|line| {
            line.contains("cannot write the history")
                && line.contains(fault.cause())
                && line.contains("fires wait in order")
        })
    });

    std::fs::remove_file(sandbox.path().join("hold")).unwrap();
    wait_for("the `long` run's process to end", || {
        processes_of_run(long).is_empty()
    });
    let queued = |status: &Value| status["queued"].as_u64().unwrap();
    let queued_when_noticed = queued(&sandbox.pacer_json(&["status"]));
    let waiting = RunWait::start(sandbox, "manual", scene.database.clone());

    // A verb answered once it is recorded (a pause here; a cancel of a queued run alike) says
    // what it waits for when the answer does not come in time, and takes effect later.
    let pause = sandbox.pacer(["pause", "long"]);
    assert_eq!(pause.code, 1, "{pause}");
    for words in [
        "pacerd has not recorded the pause of `long` within 10 s: ",
        fault.cause(),
        "It takes effect once the history can be written",
    ] {
        assert!(pause.stderr.contains(words), "`{words}` in: {pause}");
    }

    // While the fault lasts nothing new is recorded, pacerd keeps saying why, and the fires
    // that come due wait on the schedule (each job's next one) rather than pile up in a queue:
    // only the manual run joins the fires accepted before pacerd noticed.
    let held_from = Instant::now();
    let mut most_queued = 0;
    while held_from.elapsed() < hold {
        let status = sandbox.pacer_json(&["status"]);
        assert!(
            status["history_error"].is_string(),
            "the fault still holds: {status}"
        );
        most_queued = most_queued.max(queued(&status));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        most_queued <= queued_when_noticed + 1,
        "fires wait on the schedule, not in an ever longer queue: {queued_when_noticed} queued \
         when the fault was noticed, {most_queued} later"
    );
    assert!(
        waiting.updates().is_empty(),
        "nothing is reported to `pacer run --wait` while nothing can be stored: {:?}",
        waiting.updates()
    );

    fault.end(scene);
    wait_for(
        "pacer status to say the history can be written again",
        || scene.history_error().is_none(),
    );
    let recovered_at = jiff::Timestamp::now().as_millisecond();
    assert!(
        scene
            .daemon
            .log()
            .contains("the history can be written again"),
        "{}",
        scene.daemon.log()
    );

    let updates = waiting.finish();
    check_reported(&updates);
    wait_for("the pause sent during the fault to take effect", || {
        sandbox
            .pacer_json(&["jobs"])
            .as_array()
            .unwrap()
            .iter()
            .any(|job| job["name"] == "long" && job["paused"] == true)
    });
    let long_run = wait_until("the end of `long`, recorded", || {
        let run = sandbox.pacer_json(&["show", &long.to_string()]);
        (run["status"] != "running").then_some(run)
    });
    assert_eq!(long_run["status"], "succeeded", "{long_run}");
    // Fires after the recovery are recorded as usual.
    for job in SCHEDULED {
        wait_for(&format!("a fire of `{job}` after the recovery"), || {
            sandbox
                .history(&["--job", job, "--limit", "1"])
                .first()
                .is_some_and(|run| instant(text(run, "scheduled_at")) > recovered_at + 1_000)
        });
    }
    assert_eq!(scene.daemon.stop(), Some(0), "a clean stop");
    check_history(scene, missed);
}

/// A run's record as the history held it at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    status: String,
    /// Whether its end instant is recorded.
    ended: bool,
}

/// An update `pacer run --wait` printed, and its run's record right then.
#[derive(Debug, Clone)]
struct Reported {
    update: Value,
    stored: Option<Stored>,
}

/// `pacer run JOB --wait --json`, started while the history cannot be written, with each
/// update it printed.
struct RunWait {
    child: Child,
    updates: Arc<Mutex<Vec<Reported>>>,
    reader: std::thread::JoinHandle<()>,
}

impl RunWait {
    fn start(sandbox: &Sandbox, job: &str, database: PathBuf) -> RunWait {
        let mut child = Command::new(&pacer_tests::artifacts().pacer)
            .current_dir(sandbox.path())
            .args(["--config", "pacer.toml", "run", job, "--wait", "--json"])
            .env_remove("PACER_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let updates = Arc::new(Mutex::new(Vec::new()));
        let reader = std::thread::spawn({
            let updates = Arc::clone(&updates);
            move || {
                for line in BufReader::new(stdout).lines() {
                    let update: Value = serde_json::from_str(&line.unwrap()).unwrap();
                    let stored = update["id"].as_i64().and_then(|id| stored(&database, id));
                    updates.lock().unwrap().push(Reported { update, stored });
                }
            }
        });
        RunWait {
            child,
            updates,
            reader,
        }
    }

    fn updates(&self) -> Vec<Reported> {
        self.updates.lock().unwrap().clone()
    }

    /// Waits for the command to end and returns what it printed; it must have succeeded.
    fn finish(mut self) -> Vec<Reported> {
        let code = wait_until("`pacer run --wait` to end", || {
            self.child.try_wait().unwrap().map(|status| status.code())
        });
        // Every line is read once the command has ended.
        self.reader.join().unwrap();
        let updates = self.updates.lock().unwrap().clone();
        assert_eq!(code, Some(0), "{updates:?}");
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(
            stderr.contains("the run is recorded, and gets its id, only once it can be"),
            "started while the history could not be written, it says so at once: {stderr}"
        );
        updates
    }
}

/// Run `id`'s record, read from the history as it is now.
fn stored(database: &Path, id: i64) -> Option<Stored> {
    let db =
        rusqlite::Connection::open_with_flags(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    rusqlite::OptionalExtension::optional(db.query_row(
        "SELECT status, finished_at IS NOT NULL AS ended FROM runs WHERE id = ?1",
        [id],
        |row| {
            Ok(Stored {
                status: row.get("status")?,
                ended: row.get("ended")?,
            })
        },
    ))
    .unwrap()
}

/// Each update `pacer run --wait` printed was in the history when it was printed: a queued run
/// had its record, a started one was `running` (or over), an ended one had that outcome.
fn check_reported(updates: &[Reported]) {
    let events: Vec<&str> = updates.iter().map(|r| text(&r.update, "event")).collect();
    assert_eq!(
        events.last(),
        Some(&"finished"),
        "the run's end is reported: {updates:?}"
    );
    for Reported { update, stored } in updates {
        let Some(Stored { status, ended }) = stored else {
            panic!("{update} was reported, but its run had no record then");
        };
        match text(update, "event") {
            "queued" => {}
            "started" => assert!(
                status != "queued",
                "{update} was reported while its record said {status}"
            ),
            "finished" => {
                assert_eq!(
                    update["status"].as_str(),
                    Some(status.as_str()),
                    "{update} was reported, the record said {status}"
                );
                assert!(*ended, "{update} was reported without its end stored");
            }
            other => panic!("unexpected update {other}: {update}"),
        }
    }
}

#[derive(Debug)]
struct Record {
    id: i64,
    job: String,
    status: String,
    trigger: String,
    scheduled_at: i64,
    error: Option<String>,
}

/// The history after the fault passed and pacerd stopped cleanly: intact, every fire instant of
/// every scheduled job in the window recorded once, in order, and every command that ran
/// matching a record that holds its outcome.
fn check_history(scene: &Scene, missed: bool) {
    let db = rusqlite::Connection::open_with_flags(
        &scene.database,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let records: Vec<Record> = db
        .prepare("SELECT id, job, status, trigger, scheduled_at, error FROM runs ORDER BY id")
        .unwrap()
        .query_map([], |row| {
            Ok(Record {
                id: row.get("id")?,
                job: row.get("job")?,
                status: row.get("status")?,
                trigger: row.get("trigger")?,
                scheduled_at: row.get("scheduled_at")?,
                error: row.get("error")?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let last_fire: HashMap<String, i64> = db
        .prepare("SELECT job, last_fire FROM job_state")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();

    let mut fires: BTreeMap<(&str, i64), Vec<&Record>> = BTreeMap::new();
    for record in records
        .iter()
        .filter(|r| r.trigger == "schedule" || r.trigger == "catch_up")
    {
        fires
            .entry((record.job.as_str(), record.scheduled_at))
            .or_default()
            .push(record);
    }
    let doubled: Vec<_> = fires.iter().filter(|(_, rs)| rs.len() > 1).collect();
    assert!(doubled.is_empty(), "fires recorded twice: {doubled:?}");
    let first = (scene.window_start / 1_000 + 1) * 1_000;
    for job in SCHEDULED {
        let missing: Vec<String> = (first / 1_000..=last_fire[job] / 1_000)
            .map(|s| s * 1_000)
            .filter(|at| !fires.contains_key(&(job, *at)))
            .map(|at| jiff::Timestamp::from_millisecond(at).unwrap().to_string())
            .collect();
        assert!(
            missing.is_empty(),
            "fires of `{job}` without a record: {missing:?}"
        );
        // Recorded in the order they came due: the history never holds a later fire of a job
        // before an earlier one.
        let ids: Vec<i64> = fires
            .range((job, i64::MIN)..=(job, i64::MAX))
            .map(|(_, rs)| rs[0].id)
            .collect();
        assert!(
            ids.is_sorted(),
            "fires of `{job}` recorded out of order: {ids:?}"
        );
    }
    let skipped_for_the_fault = records
        .iter()
        .filter(|r| {
            r.status == "skipped"
                && r.error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("missed while the history could not be written"))
        })
        .count();
    if missed {
        assert!(
            skipped_for_the_fault > 0,
            "fires held past the fault's start are missed, recorded as skipped for it: {records:?}"
        );
    }

    let ledger = std::fs::read_to_string(scene.sandbox.path().join("ledger")).unwrap();
    let by_id: HashMap<i64, &Record> = records.iter().map(|r| (r.id, r)).collect();
    let mut executed = HashSet::new();
    for line in ledger.lines() {
        let [id, job, scheduled] = line.split(' ').collect::<Vec<_>>()[..] else {
            panic!("a ledger line: {line:?}");
        };
        let id: i64 = id.parse().unwrap();
        assert!(executed.insert(id), "run {id} executed twice");
        let record = by_id
            .get(&id)
            .unwrap_or_else(|| panic!("run {id} executed without a record"));
        assert_eq!(record.job, job, "{line}");
        let scheduled: jiff::Timestamp = scheduled.parse().unwrap();
        assert_eq!(record.scheduled_at, scheduled.as_millisecond(), "{line}");
        assert!(
            ["succeeded", "failed", "cancelled"].contains(&record.status.as_str()),
            "run {id} executed, and its outcome is written: {record:?}"
        );
    }
    let unrun: Vec<i64> = records
        .iter()
        .filter(|r| r.status == "succeeded" && !executed.contains(&r.id))
        .map(|r| r.id)
        .collect();
    assert!(unrun.is_empty(), "succeeded without running: {unrun:?}");
    let left: Vec<&Record> = records
        .iter()
        .filter(|r| r.status == "running" || r.status == "abandoned")
        .collect();
    assert!(left.is_empty(), "every run's end is written: {left:?}");
    eprintln!(
        "{} records, {} runs executed, {skipped_for_the_fault} fires skipped as missed for the \
         fault",
        records.len(),
        executed.len()
    );
}

fn instant(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

/// The history's file system filled up: by a filler file, then by the runs' output.
struct FullDisk;

impl Fault for FullDisk {
    fn cause(&self) -> &'static str {
        "database or disk is full"
    }

    fn advice(&self) -> &'static str {
        "free space"
    }

    fn begin(&mut self, scene: &Scene) {
        // All the space the file system has left; the runs' output then makes the next write
        // of the history fail.
        let mut file = std::fs::File::create(filler(scene)).unwrap();
        let chunk = vec![0_u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
    }

    fn end(&mut self, scene: &Scene) {
        std::fs::remove_file(filler(scene)).unwrap();
    }
}

fn filler(scene: &Scene) -> PathBuf {
    scene.sandbox.path().join(STORE).join("filler")
}

#[test]
fn a_full_disk_holds_fires_and_every_one_is_recorded_once_space_is_freed() {
    if !root_or_skip("a full file system (a small tmpfs)") {
        return;
    }
    // Past a minute, the fires held are missed and follow their job's `catch_up`.
    let mut scene = Scene::start(Some("8m"));
    ride_out(&mut scene, &mut FullDisk, Duration::from_secs(65), true);
}

/// Another process holds the database's write lock: `BEGIN EXCLUSIVE` in the `sqlite3` shell,
/// left open as someone inspecting the history might.
struct HeldLock {
    shell: Option<(Child, ChildStdin)>,
}

impl Fault for HeldLock {
    fn cause(&self) -> &'static str {
        "database is locked"
    }

    fn advice(&self) -> &'static str {
        "fuser -v"
    }

    fn begin(&mut self, scene: &Scene) {
        self.shell = Some(take_lock(&scene.database));
    }

    fn end(&mut self, _scene: &Scene) {
        let (child, stdin) = self.shell.take().unwrap();
        release_lock(child, stdin);
    }
}

/// `BEGIN EXCLUSIVE` on `database` in a `sqlite3` shell left open; returns the shell.
fn take_lock(database: &Path) -> (Child, ChildStdin) {
    let mut child = Command::new("sqlite3")
        .arg(database)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("sqlite3 starts");
    let mut stdin = child.stdin.take().unwrap();
    // pacerd holds the lock for a moment at each commit: wait for it, as a person would.
    stdin
        .write_all(b".timeout 30000\nBEGIN EXCLUSIVE;\nSELECT 'locked';\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked", "sqlite3 took the lock");
    (child, stdin)
}

fn release_lock(mut child: Child, mut stdin: ChildStdin) {
    stdin.write_all(b"ROLLBACK;\n.quit\n").unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if let Some((mut child, _)) = self.shell.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_lock_held_by_another_process_holds_fires_until_it_is_released() {
    if !require_tool("sqlite3") {
        return;
    }
    let mut scene = Scene::start(None);
    let mut fault = HeldLock { shell: None };
    // Longer than pacerd's busy timeout (5 s) many times over.
    ride_out(&mut scene, &mut fault, Duration::from_secs(30), false);
}

/// A start after a crash must record the run the crash left before anything else; while a lock
/// held elsewhere keeps it waiting, the control socket says so (not that no pacerd runs), and
/// the start goes on once the lock is released.
#[test]
fn a_start_held_by_a_lock_says_so_on_the_control_socket() {
    if !require_tool("sqlite3") {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "long"
plugin = "exec"
params = { command = "while [ -e hold ]; do sleep 0.1; done" }
"#,
    );
    sandbox.write("hold", "");
    let mut first = sandbox.start();
    assert_eq!(sandbox.pacer(["run", "long"]).code, 0);
    let run = sandbox.wait_for_run("`long` running", &["--job", "long", "--status", "running"]);
    first.signal("KILL");
    first.wait();

    let (shell, stdin) = take_lock(&sandbox.path().join("pacer.db"));
    let spawned = Instant::now();
    let _second = sandbox.spawn_daemon();
    let starting = "pacerd is starting: it is opening the history";
    let status = wait_until("pacer status to say pacerd is starting", || {
        let status = sandbox.pacer(["status"]);
        status.stderr.contains(starting).then_some(status)
    });
    assert_eq!(status.code, 1, "{status}");
    let refused = sandbox.pacer(["run", "long"]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(refused.stderr.contains(starting), "{refused}");

    // The lock is held for 3 s at least: the uptime counts them, as the process was up.
    std::thread::sleep(Duration::from_secs(3).saturating_sub(spawned.elapsed()));
    release_lock(shell, stdin);
    wait_for("pacerd to be ready", || sandbox.pacer(["status"]).code == 0);
    let up = sandbox.pacer_json(&["status"]);
    assert!(
        up["uptime_s"].as_u64().is_some_and(|s| s >= 2),
        "the uptime counts from the process's start, not the history's opening: {up}"
    );
    let left = sandbox.pacer_json(&["show", &run["id"].to_string()]);
    assert_eq!(left["status"], "abandoned", "{left}");
    assert_eq!(
        sandbox.history(&["--job", "long"]).len(),
        1,
        "the refused run left no record"
    );
}

#[test]
fn a_stop_while_the_history_cannot_be_written_waits_to_record_every_end() {
    if !require_tool("sqlite3") {
        return;
    }
    let mut scene = Scene::start(None);
    let sandbox = &scene.sandbox;
    sandbox.write("hold", "");
    assert_eq!(sandbox.pacer(["run", "long"]).code, 0);
    let long = sandbox.wait_for_run("`long` running", &["--job", "long", "--status", "running"]);
    let mut fault = HeldLock { shell: None };
    fault.begin(&scene);
    wait_until("pacer status to say the history cannot be written", || {
        scene.history_error()
    });
    std::fs::remove_file(sandbox.path().join("hold")).unwrap();
    scene.daemon.signal("TERM");
    wait_for("the log to say the stop waits for the history", || {
        scene
            .daemon
            .log()
            .contains("the stop waits until it can be written")
    });
    assert!(
        is_alive(scene.daemon.pid()),
        "pacerd waits: {}",
        scene.daemon.log()
    );
    fault.end(&scene);
    assert_eq!(scene.daemon.wait(), Some(0), "{}", scene.daemon.log());
    let run = stored(&scene.database, long["id"].as_i64().unwrap());
    assert_eq!(
        run,
        Some(Stored {
            status: "succeeded".to_owned(),
            ended: true
        }),
        "the end of the run that ended meanwhile is recorded"
    );
}

/// The history's files made immutable (`chattr +i`), so the kernel refuses every write to
/// them, even through descriptors opened before. Not the `-shm` file: SQLite maps it, and a
/// refused write there is a SIGBUS (see `damaged_history`).
#[derive(Default)]
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn chattr(&self, flag: &str) {
        let mut command = Command::new("chattr");
        command.arg(flag).args(&self.0);
        let out = CommandOutput::run(command);
        assert_eq!(out.code, 0, "{out}");
    }
}

/// Even a failing test leaves files its temporary directory can be removed with.
impl Drop for Immutable {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            self.chattr("-i");
        }
    }
}

impl Fault for Immutable {
    fn cause(&self) -> &'static str {
        "disk I/O error"
    }

    fn advice(&self) -> &'static str {
        "lsattr"
    }

    fn begin(&mut self, scene: &Scene) {
        self.0 = vec![
            scene.database.clone(),
            scene.database.with_extension("db-wal"),
        ];
        self.chattr("+i");
    }

    fn end(&mut self, _scene: &Scene) {
        self.chattr("-i");
        self.0.clear();
    }
}

/// Whether the file system under `dir` refuses a write to an immutable file through a
/// descriptor opened before (ext4 and xfs do; tmpfs lets it through).
fn immutable_means_unwritable(dir: &Path) -> bool {
    let probe = Immutable(vec![dir.join("probe")]);
    let mut file = std::fs::File::create(&probe.0[0]).unwrap();
    probe.chattr("+i");
    file.write_all(b"x").is_err()
}

#[test]
fn immutable_history_files_hold_fires_until_they_can_be_written_again() {
    if !root_or_skip("making files immutable (chattr +i)") || !require_tool("chattr") {
        return;
    }
    let mut scene = Scene::start(None);
    if !immutable_means_unwritable(scene.sandbox.path()) {
        skipped("the file system of the temporary directory lets an immutable file be written");
        return;
    }
    let mut fault = Immutable::default();
    ride_out(&mut scene, &mut fault, Duration::from_secs(10), false);
}

/// The history's file system remounted read-only.
struct ReadOnly;

impl Fault for ReadOnly {
    fn cause(&self) -> &'static str {
        "Read-only file system"
    }

    fn advice(&self) -> &'static str {
        "remount it read-write"
    }

    fn begin(&mut self, scene: &Scene) {
        let out = scene.tmpfs.as_ref().unwrap().remount("ro");
        assert_eq!(out.code, 0, "{out}");
    }

    fn end(&mut self, scene: &Scene) {
        let out = scene.tmpfs.as_ref().unwrap().remount("rw");
        assert_eq!(out.code, 0, "{out}");
    }
}

#[test]
fn a_read_only_remount_holds_fires_until_the_file_system_is_writable_again() {
    if !root_or_skip("remounting a file system (a small tmpfs)") {
        return;
    }
    let mut scene = Scene::start(Some("64m"));
    wait_until("a run", || scene.sandbox.history(&[]).into_iter().next());
    // Linux refuses to make a file system read-only while a process has a file on it open for
    // writing, as pacerd has its history; where it refuses, a running pacerd never meets this
    // fault (only a file system that fails, which then stays read-only until repaired).
    let tried = scene.tmpfs.as_ref().unwrap().remount("ro");
    if tried.code != 0 {
        assert!(tried.stderr.contains("busy"), "{tried}");
        skipped(&format!(
            "the kernel refuses a read-only remount while pacerd has the history open for \
             writing ({})",
            tried.stderr.lines().next().unwrap_or_default().trim()
        ));
        assert_eq!(scene.daemon.stop(), Some(0), "pacerd went on unharmed");
        return;
    }
    assert_eq!(scene.tmpfs.as_ref().unwrap().remount("rw").code, 0);
    ride_out(&mut scene, &mut ReadOnly, Duration::from_secs(15), false);
}

/// Says on the terminal why this test cannot do what it is for here: not a missing tool (which
/// `CI=true` would fail on) but what this machine's kernel or file system allows.
fn skipped(why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    // Straight to the terminal: the harness keeps what `eprintln!` prints of a passing test.
    let _ = std::io::stderr().write_all(format!("skipped {test}: {why}\n").as_bytes());
}
