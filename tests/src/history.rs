//! A week of realistic history, written through the store's real writer before the daemon
//! starts: a dozen jobs on their schedules with varied durations, failures, a timeout, a crash,
//! fires skipped by the overlap policy, waits for a pool's slot, a chain, manual runs and one run
//! with a huge output. The web view's tests and its screenshots read it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use pacer::model::{Status, Trigger};
use pacer::store::sqlite::SqliteStore;
use pacer::store::{Finish, NewFire, StartRun, Store, Write};

/// The jobs of the seeded history, as config text (every job runs `exec`).
pub const JOBS: &str = r#"
[pools.backups]
max_concurrency = 1

[pools.mail]
max_concurrency = 2

[[jobs]]
name = "healthcheck"
schedule = "*/5 * * * *"
plugin = "exec"
params = { command = "true" }

[[jobs]]
name = "cache-warm"
schedule = "*/15 * * * *"
plugin = "exec"
timeout = "1m"
params = { command = "true" }

[[jobs]]
name = "log-rotate"
schedule = "0 * * * *"
plugin = "exec"
params = { command = "true" }

[[jobs]]
name = "invoice-sync"
schedule = "*/30 8-18 * * MON-FRI"
plugin = "exec"
params = { command = "true" }

[[jobs]]
name = "search-index"
schedule = "0 */4 * * *"
plugin = "exec"
params = { command = "true" }

[[jobs]]
name = "nightly-backup"
schedule = "30 2 * * *"
plugin = "exec"
pool = "backups"
retries = 1
params = { command = "true" }

[[jobs]]
name = "db-vacuum"
schedule = "0 3 * * *"
plugin = "exec"
pool = "backups"
overlap = "queue"
params = { command = "true" }

[[jobs]]
name = "report-daily"
schedule = "0 7 * * MON-FRI"
plugin = "exec"
on_success = ["report-mail"]
params = { command = "true" }

[[jobs]]
name = "report-mail"
plugin = "exec"
pool = "mail"
params = { command = "true" }

[[jobs]]
name = "digest-eu"
schedule = "0 6 * * *"
plugin = "exec"
pool = "mail"
params = { command = "true" }

[[jobs]]
name = "digest-us"
schedule = "0 6 * * *"
plugin = "exec"
pool = "mail"
params = { command = "true" }

[[jobs]]
name = "digest-apac"
schedule = "0 6 * * *"
plugin = "exec"
pool = "mail"
params = { command = "true" }

[[jobs]]
name = "cert-renew"
schedule = "0 4 * * MON"
plugin = "exec"
params = { command = "true" }
"#;

/// What the seeding wrote, for the tests to look for.
#[derive(Debug, Default)]
pub struct Seeded {
    /// Every run's id per job, oldest first.
    pub ids: BTreeMap<String, Vec<i64>>,
    /// Runs (and skipped fires) written.
    pub total: usize,
    /// Runs that failed, timed out or crashed.
    pub failures: usize,
    /// The run whose output is larger than a page carries; its output ends with
    /// [`HUGE_OUTPUT_END`].
    pub huge_output: i64,
    /// A chain: a `report-daily` run and the `report-mail` run it caused.
    pub chain: (i64, i64),
}

/// The last line of the huge output.
pub const HUGE_OUTPUT_END: &str = "END OF THE HUGE OUTPUT";

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// A small deterministic generator, so every seeding writes the same history.
#[derive(Debug)]
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A whole number in `low..high`.
    fn between(&mut self, low: i64, high: i64) -> i64 {
        low + (self.next() % u64::try_from((high - low).max(1)).unwrap()) as i64
    }

    /// True one time in `n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

/// How a seeded run ends.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    status: Status,
    took: i64,
    waited: i64,
}

/// Writes the week before `now_ms` into the database at `path` (created if missing), and
/// closes it. The runs do not advance the jobs' last fires, so the daemon started on it next
/// treats the jobs as new (no catch-up of the seeded week).
pub fn seed(path: &Path, now_ms: i64) -> Seeded {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(path).unwrap();
        let mut seeded = Seeded::default();
        let mut dice = Dice(0x5eed_1234_abcd_9876);
        let start = (now_ms - 7 * DAY) / HOUR * HOUR;
        let mut fires: Vec<(i64, &str)> = Vec::new();
        let weekday = |at: i64| (at.div_euclid(DAY) + 4).rem_euclid(7); // 0 = Sunday
        let mut at = start;
        while at < now_ms - 2 * MINUTE {
            let minute = (at % HOUR) / MINUTE;
            let hour = (at % DAY) / HOUR;
            let day = weekday(at);
            let workday = (1..=5).contains(&day);
            let mut due = |job: &'static str, when: bool| {
                if when {
                    fires.push((at, job));
                }
            };
            due("healthcheck", minute % 5 == 0);
            due("cache-warm", minute % 15 == 0);
            due("log-rotate", minute == 0);
            due(
                "invoice-sync",
                workday && (8..=18).contains(&hour) && minute % 30 == 0,
            );
            due("search-index", minute == 0 && hour % 4 == 0);
            due("nightly-backup", hour == 2 && minute == 30);
            due("db-vacuum", hour == 3 && minute == 0);
            due("report-daily", workday && hour == 7 && minute == 0);
            for digest in ["digest-eu", "digest-us", "digest-apac"] {
                due(digest, hour == 6 && minute == 0);
            }
            due("cert-renew", day == 1 && hour == 4 && minute == 0);
            at += MINUTE;
        }
        let mut busy_until: BTreeMap<&str, i64> = BTreeMap::new();
        let mut mail_slots = [0i64; 2];
        let mut backup_free = 0i64;
        let mut huge_written = false;
        for (due, job) in fires {
            if busy_until.get(job).is_some_and(|until| *until > due) {
                let id = insert(
                    &store,
                    Write::Skipped {
                        fire: fire(job, Trigger::Schedule, 1, due, serde_json::json!({})),
                        reason: format!(
                            "the previous run of `{job}` is still going (overlap = \"skip\")"
                        ),
                    },
                )
                .await;
                seeded.ids.entry(job.to_owned()).or_default().push(id);
                seeded.total += 1;
                continue;
            }
            let mut outcome = outcome(job, &mut dice);
            // A pool's slot is handed on the instant the run before ends.
            let slot_free = if job == "nightly-backup" || job == "db-vacuum" {
                Some(&mut backup_free)
            } else if job.starts_with("digest-") {
                let slot = usize::from(mail_slots[0] > mail_slots[1]);
                Some(&mut mail_slots[slot])
            } else {
                None
            };
            let latency = dice.between(2, 40);
            let started = match slot_free {
                Some(free) => {
                    outcome.waited = (*free - due).max(0);
                    let started = if outcome.waited > 0 {
                        *free
                    } else {
                        due + latency
                    };
                    *free = started + outcome.took;
                    started
                }
                None => due + latency,
            };
            if started + outcome.took >= now_ms {
                continue;
            }
            busy_until.insert(job, started + outcome.took);
            let huge = job == "cache-warm" && !huge_written && due > now_ms - DAY;
            let output = if huge {
                let mut text = String::new();
                let mut line = 0;
                while text.len() < 1_200_000 {
                    line += 1;
                    text.push_str(&format!("warming key {line:07}: ok\n"));
                }
                text.push_str(HUGE_OUTPUT_END);
                text.push('\n');
                text
            } else {
                format!("{job}: {}\n", describe(outcome.status))
            };
            let id = run(
                &store,
                job,
                Trigger::Schedule,
                1,
                due,
                started,
                outcome,
                output,
                serde_json::json!({"command": "true"}),
            )
            .await;
            if huge {
                seeded.huge_output = id;
                huge_written = true;
            }
            seeded.ids.entry(job.to_owned()).or_default().push(id);
            seeded.total += 1;
            if outcome.status.is_failure() {
                seeded.failures += 1;
            }
            if job == "nightly-backup" && outcome.status.is_failure() {
                let retry_due = started + outcome.took + 10_000;
                let retry = Outcome {
                    status: Status::Succeeded,
                    took: dice.between(30, 45) * MINUTE,
                    waited: 0,
                };
                let retry_id = run(
                    &store,
                    job,
                    Trigger::Retry,
                    2,
                    retry_due,
                    retry_due + 5,
                    retry,
                    "backup: done on the second attempt\n".to_owned(),
                    serde_json::json!({"command": "true"}),
                )
                .await;
                backup_free = retry_due + 5 + retry.took;
                seeded.ids.entry(job.to_owned()).or_default().push(retry_id);
                seeded.total += 1;
            }
            if job == "report-daily" && outcome.status == Status::Succeeded {
                let ended = started + outcome.took;
                let mail = Outcome {
                    status: Status::Succeeded,
                    took: dice.between(2_000, 4_000),
                    waited: 0,
                };
                let params = serde_json::json!({
                    "command": "true",
                    "upstream": {"job": job, "id": id, "status": "succeeded", "error": null},
                });
                let mail_id = run(
                    &store,
                    "report-mail",
                    Trigger::Chained,
                    1,
                    ended,
                    ended + 4,
                    mail,
                    "mailed the report\n".to_owned(),
                    params,
                )
                .await;
                seeded
                    .ids
                    .entry("report-mail".to_owned())
                    .or_default()
                    .push(mail_id);
                seeded.total += 1;
                seeded.chain = (id, mail_id);
            }
        }
        for hours_ago in [30, 5] {
            let due = now_ms - hours_ago * HOUR;
            let outcome = Outcome {
                status: Status::Succeeded,
                took: dice.between(20_000, 50_000),
                waited: 0,
            };
            let id = run(
                &store,
                "cache-warm",
                Trigger::Manual,
                1,
                due,
                due + 3,
                outcome,
                "cache-warm: done\n".to_owned(),
                serde_json::json!({"command": "true"}),
            )
            .await;
            seeded
                .ids
                .entry("cache-warm".to_owned())
                .or_default()
                .push(id);
            seeded.total += 1;
        }
        for ids in seeded.ids.values_mut() {
            ids.sort_unstable();
        }
        store.close().await.unwrap();
        seeded
    })
}

/// Writes `count` runs of `job`, due at even steps over the week before `now_ms` (the first a
/// few minutes after the week's start, the last a few minutes before `now_ms`), into the
/// database at `path`; returns their ids, oldest first. A job too busy for one chart.
pub fn seed_busy(path: &Path, job: &str, count: usize, now_ms: i64) -> Vec<i64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(path).unwrap();
        let first = now_ms - 7 * DAY + 10 * MINUTE;
        let step = (7 * DAY - 20 * MINUTE) / i64::try_from(count).unwrap();
        let mut ids = Vec::with_capacity(count);
        for n in 0..count {
            let due = first + i64::try_from(n).unwrap() * step;
            let outcome = Outcome {
                status: Status::Succeeded,
                took: 1_000,
                waited: 0,
            };
            ids.push(
                run(
                    &store,
                    job,
                    Trigger::Schedule,
                    1,
                    due,
                    due + 5,
                    outcome,
                    format!("{job}: done\n"),
                    serde_json::json!({"command": "true"}),
                )
                .await,
            );
        }
        store.close().await.unwrap();
        ids
    })
}

/// How a run of `job` goes: its usual duration, and now and then a failure.
fn outcome(job: &str, dice: &mut Dice) -> Outcome {
    let (status, took) = match job {
        "healthcheck" if dice.one_in(90) => (Status::Failed, dice.between(5_000, 9_000)),
        "healthcheck" => (Status::Succeeded, dice.between(800, 2_500)),
        "cache-warm" if dice.one_in(40) => (Status::TimedOut, 61_000),
        "cache-warm" => (Status::Succeeded, dice.between(20_000, 55_000)),
        "log-rotate" => (Status::Succeeded, dice.between(3_000, 6_000)),
        "invoice-sync" if dice.one_in(8) => (Status::Succeeded, dice.between(33, 40) * MINUTE),
        "invoice-sync" if dice.one_in(15) => (Status::Failed, dice.between(20_000, 60_000)),
        "invoice-sync" => (Status::Succeeded, dice.between(2 * MINUTE, 5 * MINUTE)),
        "search-index" if dice.one_in(12) => (Status::Crashed, dice.between(5, 15) * MINUTE),
        "search-index" => (Status::Succeeded, dice.between(25, 45) * MINUTE),
        "nightly-backup" if dice.one_in(5) => (Status::Failed, dice.between(4, 9) * MINUTE),
        "nightly-backup" => (Status::Succeeded, dice.between(35, 50) * MINUTE),
        "db-vacuum" => (Status::Succeeded, dice.between(8, 12) * MINUTE),
        "report-daily" => (Status::Succeeded, dice.between(60_000, 120_000)),
        "cert-renew" => (Status::Succeeded, dice.between(8_000, 12_000)),
        _ => (Status::Succeeded, dice.between(3, 6) * MINUTE),
    };
    Outcome {
        status,
        took,
        waited: 0,
    }
}

fn describe(status: Status) -> &'static str {
    match status {
        Status::Succeeded => "done",
        Status::TimedOut => "still warming when the timeout came",
        Status::Crashed => "killed by signal 9",
        _ => "upstream answered 503",
    }
}

/// Writes one run from start to end.
/// A fire of `job` as the daemon records it.
fn fire(job: &str, trigger: Trigger, attempt: u32, due: i64, params: serde_json::Value) -> NewFire {
    NewFire {
        job: job.to_owned(),
        plugin: "exec".to_owned(),
        trigger,
        attempt,
        scheduled_at: due,
        accepted_at: due,
        params: Arc::new(params),
        own_params: false,
        advances_schedule: false,
    }
}

/// Writes one new row; its id.
async fn insert(store: &SqliteStore, write: Write) -> i64 {
    store
        .write(vec![write])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap()
        .unwrap()
}

#[allow(clippy::too_many_arguments)]
async fn run(
    store: &SqliteStore,
    job: &str,
    trigger: Trigger,
    attempt: u32,
    due: i64,
    started: i64,
    outcome: Outcome,
    output: String,
    params: serde_json::Value,
) -> i64 {
    let id = insert(
        store,
        Write::Queued {
            fire: fire(job, trigger, attempt, due, params),
            reason: None,
        },
    )
    .await;
    store
        .start_run(StartRun {
            id,
            started_at: started,
            queue_ms: outcome.waited,
            process: None,
        })
        .await
        .unwrap();
    let error = match outcome.status {
        Status::Succeeded => None,
        Status::TimedOut => Some("timed out after 1m (timeout)".to_owned()),
        Status::Crashed => Some("the run's process was killed by signal 9 (SIGKILL)".to_owned()),
        _ => Some("command exited with code 1".to_owned()),
    };
    store
        .finish_run(Finish {
            id,
            status: outcome.status,
            finished_at: started + outcome.took,
            error,
            message: None,
            output: output.into_bytes(),
            output_dropped: 0,
        })
        .await
        .unwrap();
    id
}
