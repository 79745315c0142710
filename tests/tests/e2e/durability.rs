//! Nothing accepted is lost and nothing runs twice, whatever moment the daemon is killed at:
//! many `kill -9` at random instants, with random downtime, then every record checked.
//!
//! `PACER_KILL_LOOPS` sets how many kills (30 by default, a few minutes on 2 cores), and
//! `PACER_KILL_SEED` replays a run (the seed is printed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use pacer_tests::Sandbox;

/// Five jobs due every second, with every `catch_up` and the overlap policies that make fires
/// wait, under a cap below the demand. Each run appends what it was told to the ledger.
const JOBS: &str = r#"
[[jobs]]
name = "skipper"
schedule = "* * * * * *"
plugin = "exec"
catch_up = "skip"
params = { command = "echo $PACER_RUN_ID $PACER_JOB $PACER_SCHEDULED_AT >> ledger; sleep 0.3" }

[[jobs]]
name = "queuer"
schedule = "* * * * * *"
plugin = "exec"
catch_up = "once"
overlap = "queue"
params = { command = "echo $PACER_RUN_ID $PACER_JOB $PACER_SCHEDULED_AT >> ledger; sleep 0.3" }

[[jobs]]
name = "all-allow"
schedule = "* * * * * *"
plugin = "exec"
catch_up = "all"
overlap = "allow"
params = { command = "echo $PACER_RUN_ID $PACER_JOB $PACER_SCHEDULED_AT >> ledger; sleep 0.2" }

[[jobs]]
name = "all-skip"
schedule = "* * * * * *"
plugin = "exec"
catch_up = "all"
priority = 5
params = { command = "echo $PACER_RUN_ID $PACER_JOB $PACER_SCHEDULED_AT >> ledger; sleep 0.2" }

[[jobs]]
name = "once-allow"
schedule = "* * * * * *"
plugin = "exec"
catch_up = "once"
overlap = "allow"
priority = -5
params = { command = "echo $PACER_RUN_ID $PACER_JOB $PACER_SCHEDULED_AT >> ledger; sleep 0.1" }
"#;

/// A small seeded generator, so a failing run can be replayed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from))
    }
}

#[derive(Debug)]
struct Record {
    id: i64,
    job: String,
    status: String,
    trigger: String,
    scheduled_at: i64,
}

#[test]
fn kill_9_at_random_moments_loses_no_accepted_fire_and_runs_none_twice() {
    let kills: u32 = std::env::var("PACER_KILL_LOOPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("PACER_KILL_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| jiff::Timestamp::now().as_nanosecond().unsigned_abs() as u64 | 1);
    eprintln!("kill -9 loop: {kills} kills, PACER_KILL_SEED={seed}");
    let mut random = Random(seed);
    let sandbox = Sandbox::new();
    sandbox.write_config("max_concurrency = 2\nmax_catch_up = 1000", JOBS);
    let mut daemon = sandbox.start();
    // Fires after the first start's answer are the window: each must leave one record.
    let window_start = jiff::Timestamp::now().as_millisecond();
    let loop_started = Instant::now();
    for _ in 0..kills {
        std::thread::sleep(random.millis(100, 2_500));
        daemon.signal("KILL");
        daemon.wait();
        std::thread::sleep(random.millis(0, 2_000));
        daemon = sandbox.start();
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(daemon.stop(), Some(0), "a clean stop after the loop");
    eprintln!(
        "{kills} kills in {:.1} s",
        loop_started.elapsed().as_secs_f64()
    );

    let db = rusqlite::Connection::open_with_flags(
        sandbox.path().join("pacer.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let records: Vec<Record> = db
        .prepare("SELECT id, job, status, trigger, scheduled_at FROM runs ORDER BY id")
        .unwrap()
        .query_map([], |row| {
            Ok(Record {
                id: row.get("id")?,
                job: row.get("job")?,
                status: row.get("status")?,
                trigger: row.get("trigger")?,
                scheduled_at: row.get("scheduled_at")?,
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

    // 1. Every fire instant of every job, from the window's start to its last recorded fire,
    //    has exactly one record: a run, a skip with its reason, or a fire still queued.
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
    let mut accounted = 0;
    for job in ["skipper", "queuer", "all-allow", "all-skip", "once-allow"] {
        let last = last_fire[job];
        let first = (window_start / 1_000 + 1) * 1_000;
        let missing: Vec<i64> = (first / 1_000..=last / 1_000)
            .map(|s| s * 1_000)
            .filter(|at| !fires.contains_key(&(job, *at)))
            .collect();
        assert!(
            missing.is_empty(),
            "fires of `{job}` without a record: {:?}",
            missing
                .iter()
                .map(|at| jiff::Timestamp::from_millisecond(*at).unwrap().to_string())
                .collect::<Vec<_>>()
        );
        accounted += (last - first) / 1_000 + 1;
    }

    // 2. Every command that ran matches its record, and no record ran twice.
    let ledger = std::fs::read_to_string(sandbox.path().join("ledger")).unwrap();
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
            [
                "running",
                "succeeded",
                "failed",
                "abandoned",
                "cancelled",
                "crashed"
            ]
            .contains(&record.status.as_str()),
            "run {id} executed but is {}",
            record.status
        );
    }
    let unrun: Vec<i64> = records
        .iter()
        .filter(|r| r.status == "succeeded" && !executed.contains(&r.id))
        .map(|r| r.id)
        .collect();
    assert!(unrun.is_empty(), "succeeded without running: {unrun:?}");
    let abandoned = records.iter().filter(|r| r.status == "abandoned").count();
    let queued = records.iter().filter(|r| r.status == "queued").count();
    eprintln!(
        "{accounted} fire instants accounted for by {} records; {} runs executed, {abandoned} \
         abandoned, {queued} still queued",
        records.len(),
        executed.len()
    );
    assert!(
        !records.iter().any(|r| r.status == "running"),
        "a clean stop leaves nothing running"
    );
}
