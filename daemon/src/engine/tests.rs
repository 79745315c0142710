//! The engine's decisions at fixed instants, with its writes going to a real SQLite history
//! in a temporary directory, and runs started and ended by the test (no processes: what a run
//! does is not the engine's business, only when it starts and how it ended).

use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::admission::{Limits, LocalAdmission};
use crate::config::{self, Environment};
use crate::control::RunUpdate;
use crate::store::sqlite::{SqliteHistory, SqliteStore};
use crate::store::{History, HistoryQuery, RunRecord, StartRun, Store};
use crate::time::{from_ms, to_ms};

fn ms(text: &str) -> i64 {
    to_ms(text.parse().expect("an RFC 3339 instant"))
}

/// `pacer run JOB` (with `--wait` when `wait`), without params.
fn manual(job: &str, wait: bool) -> Request {
    Request::Run {
        job: job.into(),
        params: None,
        wait,
    }
}

/// The engine, its history, and what it asked for that the test looks at.
struct Rig {
    dir: tempfile::TempDir,
    store: SqliteStore,
    engine: Engine,
    now: i64,
    /// Runs started and not ended, oldest first.
    running: Vec<Start>,
    replies: Vec<(ReplyTo, Response, bool)>,
    stops: Vec<(FireKey, String)>,
    booted: Vec<String>,
    next_reply: ReplyTo,
    /// Starts are spawned but their `running` records not written (a history that holds them).
    hold_starts: bool,
}

impl Rig {
    async fn new(config: &str, at: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pacer.toml"), config).unwrap();
        let store = SqliteStore::open(&dir.path().join("pacer.db")).unwrap();
        let now = ms(at);
        let (engine, effects) = Self::engine(&dir, &store, now).await;
        let mut rig = Rig {
            dir,
            store,
            engine,
            now,
            running: Vec::new(),
            replies: Vec::new(),
            stops: Vec::new(),
            booted: Vec::new(),
            next_reply: 1,
            hold_starts: false,
        };
        rig.settle(effects).await;
        rig
    }

    fn config_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("pacer.toml")
    }

    async fn engine(
        dir: &tempfile::TempDir,
        store: &SqliteStore,
        now: i64,
    ) -> (Engine, Vec<Effect>) {
        let config = config::load(
            &Self::config_path(dir),
            Environment {
                can_switch_users: false,
                can_run_as_root: false,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let resume = Resume {
            states: store.job_states().await.unwrap(),
            last_status: store.last_statuses().await.unwrap(),
            queued: store.queued_fires().await.unwrap(),
        };
        let admission = Box::new(LocalAdmission::new(&Limits::of(&config), now));
        let mut engine = Engine::new(
            Arc::new(config),
            Registry::of(&[("exec", "/plugins/libpacer_plugin_exec.so")]),
            admission,
            resume,
            4242,
            now,
        );
        let effects = engine.take_effects();
        (engine, effects)
    }

    /// Hands `input` to the engine at the rig's instant and carries out what it asks.
    async fn step(&mut self, input: Input) {
        let effects = self.engine.handle(input, self.now);
        self.settle(effects).await;
    }

    /// The clock moves to `at` and the engine looks at its timeline.
    async fn at(&mut self, at: &str) {
        self.now = ms(at);
        self.step(Input::Tick).await;
    }

    /// Carries out effects as the daemon's edge would, feeding outcomes back until the engine
    /// asks for nothing more: writes are committed, started runs become `running`.
    async fn settle(&mut self, effects: Vec<Effect>) {
        let mut effects = effects;
        while !effects.is_empty() {
            let mut writes = Vec::new();
            let mut tickets = Vec::new();
            let mut inputs = Vec::new();
            for effect in effects {
                match effect {
                    Effect::Write(write, ticket) => {
                        writes.push(write);
                        tickets.push(ticket);
                    }
                    Effect::Start(start) if self.hold_starts => self.running.push(start),
                    Effect::Start(start) => {
                        self.store
                            .start_run(StartRun {
                                id: start.run_id,
                                started_at: self.now,
                                queue_ms: start.queue_ms,
                                process: None,
                            })
                            .await
                            .unwrap();
                        inputs.push(Input::Started {
                            key: start.key,
                            started_at: self.now,
                        });
                        self.running.push(start);
                    }
                    Effect::Stop { key, reason } => self.stops.push((key, reason)),
                    Effect::Reply { to, response, last } => {
                        self.replies.push((to, response, last));
                    }
                    Effect::LoadConfig => {
                        let loaded = config::load(
                            &Self::config_path(&self.dir),
                            Environment {
                                can_switch_users: false,
                                can_run_as_root: false,
                            },
                        )
                        .map(Box::new)
                        .map_err(|e| e.to_string());
                        inputs.push(Input::ConfigLoaded(loaded));
                    }
                    Effect::Rescan(registry, _) => inputs.push(Input::Rescanned(registry)),
                    Effect::CheckBoot(jobs) => inputs.push(Input::Boot(jobs)),
                    Effect::MarkBooted(job) => self.booted.push(job),
                    Effect::Observe(_) | Effect::WatchPlugins(_) | Effect::Ready { .. } => {}
                    other => panic!("a cluster's effect from one daemon: {other:?}"),
                }
            }
            if !writes.is_empty() {
                let results = self.store.write(writes).await.unwrap();
                let written: Vec<_> = tickets
                    .into_iter()
                    .zip(results)
                    .filter_map(|(ticket, result)| {
                        Some((ticket?, result.map_err(|e| e.to_string())))
                    })
                    .collect();
                if !written.is_empty() {
                    inputs.push(Input::Written(written));
                }
            }
            effects = Vec::new();
            for input in inputs {
                effects.extend(self.engine.handle(input, self.now));
            }
        }
    }

    /// Ends the oldest run of `job` as `status`, its record completed first, as the runner does
    /// (here without saying first that its process exited, which is optional).
    async fn end(&mut self, job: &str, status: Status) {
        let start = self.take_run(job);
        self.record_end(start, status).await;
    }

    /// The oldest run of `job`'s process exits: the engine hears it before the end is recorded.
    async fn exit(&mut self, job: &str) -> Start {
        let start = self.take_run(job);
        self.step(Input::Exited { key: start.key }).await;
        start
    }

    fn take_run(&mut self, job: &str) -> Start {
        let at = self
            .running
            .iter()
            .position(|start| start.job.name == job)
            .unwrap_or_else(|| panic!("no run of `{job}` is going"));
        self.running.remove(at)
    }

    /// The end of `start`'s run is committed, and the engine told.
    async fn record_end(&mut self, start: Start, status: Status) {
        let job = &start.job.name;
        let error = (status != Status::Succeeded).then(|| format!("{job} {status}"));
        self.store
            .finish_run(crate::store::Finish {
                id: start.run_id,
                status,
                finished_at: self.now,
                error: error.clone(),
                message: None,
                output: Vec::new(),
                output_dropped: 0,
            })
            .await
            .unwrap();
        self.step(Input::Finished {
            key: start.key,
            status,
            error,
            span: Some(RunSpan {
                started_at: self.now,
                finished_at: self.now,
            }),
        })
        .await;
    }

    /// Sends a control request; returns where its answers go.
    async fn ask(&mut self, request: Request) -> ReplyTo {
        let to = self.next_reply;
        self.next_reply += 1;
        self.step(Input::Control { request, reply: to }).await;
        to
    }

    fn answers(&self, to: ReplyTo) -> Vec<Response> {
        self.replies
            .iter()
            .filter(|(at, _, _)| *at == to)
            .map(|(_, response, _)| response.clone())
            .collect()
    }

    /// The daemon dies at once (kill -9) and starts again at `at` on the config file as it is:
    /// what was committed is all that is left.
    async fn crash_and_restart(&mut self, at: &str) {
        self.store.close().await.unwrap();
        self.store = SqliteStore::open(&self.dir.path().join("pacer.db")).unwrap();
        self.now = ms(at);
        self.store
            .abandon_orphans(
                self.now,
                "pacerd stopped while this run was going".to_owned(),
            )
            .await
            .unwrap();
        self.running.clear();
        let (engine, effects) = Self::engine(&self.dir, &self.store, self.now).await;
        self.engine = engine;
        self.settle(effects).await;
    }

    fn rewrite_config(&self, text: &str) {
        std::fs::write(Self::config_path(&self.dir), text).unwrap();
    }

    /// Every record, oldest first.
    fn runs(&self) -> Vec<RunRecord> {
        let history = SqliteHistory::open(&self.dir.path().join("pacer.db")).unwrap();
        let mut runs = history
            .runs(&HistoryQuery {
                limit: 10_000,
                ..HistoryQuery::default()
            })
            .unwrap();
        runs.reverse();
        runs
    }

    /// `(job, trigger, scheduled_at, status)` of every record, oldest first.
    fn summary(&self) -> Vec<(String, Trigger, String, Status)> {
        self.runs()
            .into_iter()
            .map(|run| {
                (
                    run.job,
                    run.trigger,
                    from_ms(run.scheduled_at).to_string(),
                    run.status,
                )
            })
            .collect()
    }

    fn running_jobs(&self) -> Vec<&str> {
        self.running
            .iter()
            .map(|start| start.job.name.as_str())
            .collect()
    }
}

fn row(job: &str, trigger: Trigger, at: &str, status: Status) -> (String, Trigger, String, Status) {
    (job.to_owned(), trigger, at.to_owned(), status)
}

const DAEMON: &str = "[daemon]\nplugin_dirs = [\"plugins\"]\n";

fn job(name: &str, settings: &str) -> String {
    format!(
        "\n[[jobs]]\nname = \"{name}\"\nplugin = \"exec\"\n{settings}\n[jobs.params]\ncommand = \"true\"\n"
    )
}

#[tokio::test]
async fn a_fire_is_recorded_queued_and_starts_only_once_its_record_is_committed() {
    let config = format!("{DAEMON}{}", job("tick", "schedule = \"* * * * *\""));
    let mut rig = Rig::new(&config, "2027-01-01T00:00:30Z").await;
    rig.now = ms("2027-01-01T00:01:00Z");
    let effects = rig.engine.handle(Input::Tick, rig.now);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Write(Write::Queued { .. }, Some(_)))),
        "the fire's record is asked for"
    );
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Start(_))),
        "nothing starts before its record exists"
    );
    rig.settle(effects).await;
    assert_eq!(rig.running_jobs(), ["tick"]);
    assert_eq!(
        rig.summary(),
        [row(
            "tick",
            Trigger::Schedule,
            "2027-01-01T00:01:00Z",
            Status::Running
        )]
    );
    rig.end("tick", Status::Succeeded).await;
    assert_eq!(rig.runs()[0].status, Status::Succeeded);
    assert_eq!(
        rig.engine.scheduler.next_fire("tick"),
        Some(ms("2027-01-01T00:02:00Z"))
    );
}

#[tokio::test]
async fn each_catch_up_policy_after_downtime() {
    let config = format!(
        "{DAEMON}max_catch_up = 2\n{}{}{}",
        job("skipper", "schedule = \"* * * * *\"\ncatch_up = \"skip\""),
        job("oncer", "schedule = \"* * * * *\"\ncatch_up = \"once\""),
        job("aller", "schedule = \"* * * * *\"\ncatch_up = \"all\""),
    );
    let mut rig = Rig::new(&config, "2027-01-01T00:00:30Z").await;
    rig.at("2027-01-01T00:01:00Z").await;
    for name in ["skipper", "oncer", "aller"] {
        rig.end(name, Status::Succeeded).await;
    }
    // Down from 00:01:30 to 00:05:30: the fires of 00:02 to 00:05 were missed.
    rig.crash_and_restart("2027-01-01T00:05:30Z").await;
    rig.step(Input::Tick).await;
    let missed: Vec<_> = rig
        .runs()
        .into_iter()
        .filter(|run| run.trigger == Trigger::CatchUp)
        .map(|run| (run.job, from_ms(run.scheduled_at).to_string(), run.status))
        .collect();
    let m =
        |job: &str, at: &str, status| (job.to_owned(), format!("2027-01-01T00:0{at}:00Z"), status);
    assert_eq!(
        missed,
        [
            m("skipper", "2", Status::Skipped),
            m("oncer", "2", Status::Skipped),
            m("aller", "2", Status::Skipped),
            m("skipper", "3", Status::Skipped),
            m("oncer", "3", Status::Skipped),
            m("aller", "3", Status::Skipped),
            m("skipper", "4", Status::Skipped),
            m("oncer", "4", Status::Skipped),
            m("aller", "4", Status::Running),
            m("skipper", "5", Status::Skipped),
            m("oncer", "5", Status::Running),
            m("aller", "5", Status::Queued),
        ],
        "skip records each; once runs the latest; all runs the newest max_catch_up, one after another"
    );
    let reasons: Vec<String> = rig
        .runs()
        .into_iter()
        .filter(|run| run.job == "skipper")
        .filter_map(|run| run.error)
        .collect();
    assert_eq!(
        reasons[0],
        "missed while pacerd was not running (catch_up = \"skip\")"
    );
    rig.end("aller", Status::Succeeded).await;
    assert_eq!(
        rig.running_jobs(),
        ["oncer", "aller"],
        "the next missed fire goes once the previous one ended"
    );
    rig.end("aller", Status::Succeeded).await;
    rig.at("2027-01-01T00:06:00Z").await;
    assert_eq!(rig.running_jobs(), ["oncer", "skipper", "aller"]);
}

#[tokio::test]
async fn a_failed_run_is_retried_after_a_doubling_back_off_then_chains_on_failure() {
    let config = format!(
        "{DAEMON}{}{}",
        job(
            "flaky",
            "retries = 2\nretry_backoff = \"10s\"\nretry_backoff_max = \"15s\"\non_failure = [\"alert\"]"
        ),
        job("alert", ""),
    );
    let mut rig = Rig::new(&config, "2027-01-01T00:00:00Z").await;
    let to = rig.ask(manual("flaky", true)).await;
    rig.end("flaky", Status::Failed).await;
    let retry = rig.runs().pop().unwrap();
    assert_eq!(
        (retry.trigger, retry.attempt, retry.status),
        (Trigger::Retry, 2, Status::Queued),
        "the retry is a record at once"
    );
    assert_eq!(retry.scheduled_at, ms("2027-01-01T00:00:10Z"));
    rig.at("2027-01-01T00:00:09.999Z").await;
    assert!(rig.running.is_empty(), "not before its back-off");
    rig.at("2027-01-01T00:00:10Z").await;
    assert_eq!(rig.running_jobs(), ["flaky"]);
    rig.end("flaky", Status::Failed).await;
    let third = rig.runs().pop().unwrap();
    assert_eq!(third.attempt, 3);
    assert_eq!(
        third.scheduled_at,
        ms("2027-01-01T00:00:25Z"),
        "20 s doubled, capped at retry_backoff_max = 15 s"
    );
    rig.at("2027-01-01T00:00:25Z").await;
    rig.end("flaky", Status::Failed).await;
    assert_eq!(
        rig.running_jobs(),
        ["alert"],
        "on_failure after the last retry, and no fourth attempt"
    );
    let alert = rig.runs().pop().unwrap();
    assert_eq!(alert.trigger, Trigger::Chained);
    let answers = rig.answers(to);
    let finished: Vec<u32> = answers
        .iter()
        .filter_map(|answer| match answer {
            Response::Run(RunUpdate::Started { attempt, .. }) => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(finished, [1, 2, 3], "--wait follows every attempt");
    assert!(
        rig.replies.iter().any(|(at, _, last)| *at == to && *last),
        "and ends after the last"
    );
}

#[tokio::test]
async fn a_chained_run_gets_its_upstream() {
    let config = format!(
        "{DAEMON}{}{}",
        job("build", "on_success = [\"publish\"]"),
        "\n[[jobs]]\nname = \"publish\"\nplugin = \"exec\"\n[jobs.params]\ncommand = \"echo {upstream.job} {upstream.status}\"\n",
    );
    let mut rig = Rig::new(&config, "2027-01-01T00:00:00Z").await;
    rig.ask(manual("build", false)).await;
    rig.end("build", Status::Succeeded).await;
    let publish = rig.running.last().unwrap();
    assert_eq!(publish.job.name, "publish");
    assert_eq!(publish.params["command"], "echo 'build' 'succeeded'");
    assert_eq!(publish.params["upstream"]["job"], "build");
}

#[tokio::test]
async fn a_paused_job_leaves_no_record_until_resumed_even_across_a_restart() {
    let config = format!("{DAEMON}{}", job("tick", "schedule = \"* * * * *\""));
    let mut rig = Rig::new(&config, "2027-01-01T00:00:30Z").await;
    let to = rig.ask(Request::Pause { job: "tick".into() }).await;
    assert!(matches!(&rig.answers(to)[..], [Response::Done { .. }]));
    rig.at("2027-01-01T00:01:00Z").await;
    assert!(rig.runs().is_empty());
    rig.crash_and_restart("2027-01-01T00:02:30Z").await;
    rig.step(Input::Tick).await;
    assert!(
        rig.runs().is_empty(),
        "still paused after a restart; its fires moved the schedule on, so none is missed"
    );
    let to = rig.ask(Request::Why { job: "tick".into() }).await;
    let [Response::Why(why)] = &rig.answers(to)[..] else {
        panic!("a why answer")
    };
    assert_eq!(why.paused_fires, [ms("2027-01-01T00:02:00Z")]);
    assert!(why.paused);
    rig.ask(Request::Resume { job: "tick".into() }).await;
    rig.at("2027-01-01T00:03:00Z").await;
    assert_eq!(
        rig.summary(),
        [row(
            "tick",
            Trigger::Schedule,
            "2027-01-01T00:03:00Z",
            Status::Running
        )]
    );
}

#[tokio::test]
async fn overlap_skip_queue_and_replace_through_the_engine() {
    let config = format!(
        "{DAEMON}{}{}{}",
        job("skip", "schedule = \"* * * * *\""),
        job("queue", "schedule = \"* * * * *\"\noverlap = \"queue\""),
        job("replace", "schedule = \"* * * * *\"\noverlap = \"replace\""),
    );
    let mut rig = Rig::new(&config, "2027-01-01T00:00:30Z").await;
    rig.at("2027-01-01T00:01:00Z").await;
    rig.at("2027-01-01T00:02:00Z").await;
    let second: Vec<_> = rig
        .runs()
        .into_iter()
        .filter(|run| run.scheduled_at == ms("2027-01-01T00:02:00Z"))
        .map(|run| (run.job, run.status, run.error))
        .collect();
    assert_eq!(second[0].0, "skip");
    assert_eq!(second[0].1, Status::Skipped);
    assert_eq!(
        second[0].2.as_deref(),
        Some("run 1 of `skip` is still running (overlap = \"skip\")")
    );
    assert_eq!(
        (second[1].0.as_str(), second[1].1),
        ("queue", Status::Queued)
    );
    assert_eq!(
        second[1].2.as_deref(),
        Some("waiting for the previous run of `queue` to end (overlap)")
    );
    assert_eq!(
        (second[2].0.as_str(), second[2].1),
        ("replace", Status::Queued)
    );
    assert_eq!(rig.stops.len(), 1, "the replaced run is asked to stop");
    assert!(
        rig.stops[0]
            .1
            .starts_with("replaced by the schedule fire due at 2027-01-01T00:02:00.000Z")
    );
    rig.end("replace", Status::Cancelled).await;
    rig.end("queue", Status::Succeeded).await;
    assert_eq!(
        rig.running_jobs(),
        ["skip", "replace", "queue"],
        "the waiting fires start once their job's run is gone"
    );
}

#[tokio::test]
async fn manual_runs_are_answered_with_their_id_once_recorded_and_can_be_cancelled_while_queued() {
    let config = format!(
        "{DAEMON}max_concurrency = 1\n{}{}",
        job("busy", ""),
        job("later", "overlap = \"allow\""),
    );
    let mut rig = Rig::new(&config, "2027-01-01T00:00:00Z").await;
    let first = rig.ask(manual("busy", false)).await;
    assert!(matches!(
        &rig.answers(first)[..],
        [Response::Run(RunUpdate::Started { id: 1, attempt: 1 })]
    ));
    let second = rig
        .ask(Request::Run {
            job: "later".into(),
            params: Some(serde_json::json!({"command": "echo custom"})),
            wait: true,
        })
        .await;
    assert_eq!(
        rig.answers(second),
        [Response::Run(RunUpdate::Queued {
            id: 2,
            reason: "waiting for a slot (pool `default`; 1 runs in flight of max_concurrency = 1)"
                .into()
        })],
        "the id at once, and the limit that holds it"
    );
    let skipped = rig.ask(manual("busy", false)).await;
    assert!(matches!(
        &rig.answers(skipped)[..],
        [Response::Run(RunUpdate::Skipped { id: Some(3), reason })] if reason.contains("overlap = \"skip\"")
    ));
    let cancel = rig.ask(Request::Cancel { id: 2 }).await;
    assert_eq!(
        rig.answers(cancel),
        [Response::Done {
            message: "run 2 was cancelled before it started".into()
        }]
    );
    assert!(matches!(
        rig.answers(second).last(),
        Some(Response::Run(RunUpdate::Finished {
            id: 2,
            status: Status::Cancelled,
            ..
        }))
    ));
    assert_eq!(rig.runs()[1].status, Status::Cancelled);
    rig.end("busy", Status::Succeeded).await;
    assert!(rig.running.is_empty(), "the cancelled fire never starts");
    let unknown = rig.ask(Request::Cancel { id: 99 }).await;
    assert!(matches!(
        &rig.answers(unknown)[..],
        [Response::Error { .. }]
    ));
}

#[tokio::test]
async fn a_slot_frees_when_the_process_is_gone_and_the_client_hears_once_the_end_is_recorded() {
    let config = format!(
        "{DAEMON}max_concurrency = 1\n{}{}{}",
        job("first", "retries = 1\nretry_backoff = \"1m\""),
        job("second", ""),
        job("third", ""),
    );
    let mut rig = Rig::new(&config, "2027-01-01T00:00:00Z").await;
    let first = rig.ask(manual("first", true)).await;
    rig.ask(manual("second", false)).await;
    rig.ask(manual("third", false)).await;
    assert_eq!(rig.running_jobs(), ["first"]);
    let exited = rig.exit("first").await;
    assert_eq!(
        rig.running_jobs(),
        ["second"],
        "the next run starts while the end is being written, to be committed with it"
    );
    assert!(
        !rig.answers(first)
            .iter()
            .any(|answer| matches!(answer, Response::Run(RunUpdate::Finished { .. }))),
        "the client waits for the end's record"
    );
    rig.record_end(exited, Status::Failed).await;
    assert_eq!(
        rig.running_jobs(),
        ["second"],
        "the recorded end frees no second slot"
    );
    assert!(rig.answers(first).iter().any(|answer| matches!(
        answer,
        Response::Run(RunUpdate::Finished {
            id: 1,
            status: Status::Failed,
            ..
        })
    )));
    let retry = rig.runs().into_iter().find(|r| r.trigger == Trigger::Retry);
    assert!(
        retry.is_some_and(|r| r.status == Status::Queued),
        "the retry follows the recorded end"
    );
}

#[tokio::test]
async fn a_client_is_never_told_an_outcome_that_was_not_recorded() {
    let config = format!("{DAEMON}{}", job("once", ""));
    let mut rig = Rig::new(&config, "2027-01-01T00:00:00Z").await;
    let waiting = rig.ask(manual("once", true)).await;
    let start = rig.exit("once").await;
    // The edge gave up on the end's record (a damaged file, say): the run ends without a span.
    rig.step(Input::Finished {
        key: start.key,
        status: Status::Succeeded,
        error: None,
        span: None,
    })
    .await;
    let answers = rig.answers(waiting);
    assert!(
        !answers
            .iter()
            .any(|answer| matches!(answer, Response::Run(RunUpdate::Finished { .. }))),
        "{answers:?}"
    );
    assert!(
        answers.iter().any(|answer| matches!(
            answer,
            Response::Error { message } if message.contains("could not record its end")
        )),
        "{answers:?}"
    );
}

#[tokio::test]
async fn a_restart_takes_every_queued_fire_back_in_order_and_a_retry_keeps_its_instant() {
    let config = format!(
        "{DAEMON}max_concurrency = 1\n{}{}{}{}",
        job("long", ""),
        job("low", "overlap = \"allow\""),
        job("high", "overlap = \"allow\"\npriority = 5"),
        job("flaky", "retries = 1\nretry_backoff = \"1m\""),
    );
    let mut rig = Rig::new(&config, "2027-01-01T00:00:00Z").await;
    let run = |job: &str| Request::Run {
        job: job.into(),
        params: Some(serde_json::json!({"command": format!("echo {job}")})),
        wait: false,
    };
    rig.ask(run("flaky")).await;
    rig.end("flaky", Status::Failed).await;
    rig.ask(run("long")).await;
    rig.ask(run("low")).await;
    rig.ask(run("high")).await;
    rig.ask(run("low")).await;
    assert_eq!(rig.running_jobs(), ["long"]);
    rig.crash_and_restart("2027-01-01T00:00:20Z").await;
    let statuses: Vec<_> = rig.runs().into_iter().map(|r| (r.job, r.status)).collect();
    assert_eq!(
        statuses[..3],
        [
            ("flaky".into(), Status::Failed),
            ("flaky".into(), Status::Queued),
            ("long".into(), Status::Abandoned),
        ]
    );
    assert_eq!(
        rig.running_jobs(),
        ["high"],
        "priority first, under the same cap"
    );
    assert_eq!(
        rig.running[0].queue_ms, 20_000,
        "its queue time counts the wait before the restart"
    );
    rig.end("high", Status::Succeeded).await;
    assert_eq!(rig.running_jobs(), ["low"]);
    assert_eq!(
        rig.running[0].params["command"], "echo low",
        "a waiting fire keeps its own params across the restart"
    );
    rig.end("low", Status::Succeeded).await;
    rig.end("low", Status::Succeeded).await;
    rig.at("2027-01-01T00:00:59Z").await;
    assert!(rig.running.is_empty(), "the retry waits for its instant");
    rig.at("2027-01-01T00:01:00Z").await;
    assert_eq!(rig.running_jobs(), ["flaky"]);
    assert_eq!(rig.running[0].attempt, 2);
    assert_eq!(
        rig.runs().iter().filter(|r| r.job == "flaky").count(),
        2,
        "nothing doubled"
    );
}

#[tokio::test]
async fn a_fire_accepted_before_a_crash_is_found_again_and_one_never_accepted_counts_as_missed() {
    let config = format!(
        "{DAEMON}max_concurrency = 1\n{}{}",
        job("hog", "schedule = \"0 * * * *\"\npriority = 9"),
        job(
            "tick",
            "schedule = \"* * * * *\"\ncatch_up = \"all\"\noverlap = \"allow\""
        ),
    );
    let mut rig = Rig::new(&config, "2027-01-01T00:59:30Z").await;
    rig.at("2027-01-01T01:00:00Z").await;
    assert_eq!(rig.running_jobs(), ["hog"]);
    rig.at("2027-01-01T01:01:00Z").await;
    assert_eq!(
        rig.runs()[2].status,
        Status::Queued,
        "tick waits for the slot"
    );
    rig.crash_and_restart("2027-01-01T01:03:30Z").await;
    rig.step(Input::Tick).await;
    assert_eq!(
        rig.summary(),
        [
            row(
                "hog",
                Trigger::Schedule,
                "2027-01-01T01:00:00Z",
                Status::Abandoned
            ),
            row(
                "tick",
                Trigger::Schedule,
                "2027-01-01T01:00:00Z",
                Status::Running
            ),
            row(
                "tick",
                Trigger::Schedule,
                "2027-01-01T01:01:00Z",
                Status::Queued
            ),
            row(
                "tick",
                Trigger::CatchUp,
                "2027-01-01T01:02:00Z",
                Status::Queued
            ),
            row(
                "tick",
                Trigger::CatchUp,
                "2027-01-01T01:03:00Z",
                Status::Queued
            ),
        ],
        "the waiting fire kept its place; the fires after it were missed, not lost"
    );
}

#[tokio::test]
async fn a_new_job_counts_its_fires_from_when_it_was_loaded() {
    let config = format!(
        "{DAEMON}{}",
        job("tick", "schedule = \"* * * * *\"\ncatch_up = \"once\"")
    );
    let mut rig = Rig::new(&config, "2027-01-01T00:00:30Z").await;
    // Killed before its first fire was recorded: the fires since it was loaded are missed.
    rig.crash_and_restart("2027-01-01T00:03:30Z").await;
    rig.step(Input::Tick).await;
    assert_eq!(
        rig.summary(),
        [
            row(
                "tick",
                Trigger::CatchUp,
                "2027-01-01T00:01:00Z",
                Status::Skipped
            ),
            row(
                "tick",
                Trigger::CatchUp,
                "2027-01-01T00:02:00Z",
                Status::Skipped
            ),
            row(
                "tick",
                Trigger::CatchUp,
                "2027-01-01T00:03:00Z",
                Status::Running
            ),
        ]
    );
}

#[tokio::test]
async fn a_reload_counts_every_change_and_keeps_unchanged_timing() {
    let config = format!(
        "{DAEMON}{}{}{}{}",
        job("same", "schedule = \"*/10 * * * *\""),
        job("params", "schedule = \"*/10 * * * *\""),
        job("timing", "schedule = \"*/10 * * * *\""),
        job("gone", "schedule = \"*/10 * * * *\""),
    );
    let mut rig = Rig::new(&config, "2027-01-01T00:01:00Z").await;
    rig.rewrite_config(&format!(
        "{DAEMON}{}{}{}{}",
        job("same", "schedule = \"*/10 * * * *\""),
        job("params", "schedule = \"*/10 * * * *\"\ntimeout = \"5m\""),
        job("timing", "schedule = \"*/5 * * * *\""),
        job("new", "schedule = \"@hourly\""),
    ));
    rig.now = ms("2027-01-01T00:06:00Z");
    let to = rig.ask(Request::Reload).await;
    let [Response::Done { message }] = &rig.answers(to)[..] else {
        panic!("{:?}", rig.answers(to))
    };
    assert!(
        message.ends_with("1 job(s) added, 2 changed, 1 removed, 1 unchanged"),
        "{message}"
    );
    let next = |rig: &Rig, name: &str| rig.engine.scheduler.next_fire(name).map(from_ms);
    assert_eq!(
        next(&rig, "same"),
        Some("2027-01-01T00:10:00Z".parse().unwrap())
    );
    assert_eq!(
        next(&rig, "params"),
        Some("2027-01-01T00:10:00Z".parse().unwrap())
    );
    assert_eq!(
        next(&rig, "timing"),
        Some("2027-01-01T00:10:00Z".parse().unwrap()),
        "a changed schedule counts from now, not from its last fire"
    );
    assert_eq!(next(&rig, "gone"), None);
    rig.rewrite_config("[daemon]\nmax_concurrency = \"many\"\n");
    let to = rig.ask(Request::Reload).await;
    assert!(
        matches!(&rig.answers(to)[..], [Response::Error { message }] if message.contains("the old one stays in force"))
    );
    assert!(rig.engine.config.job("new").is_some());
}

#[tokio::test]
async fn a_fire_whose_plugin_is_missing_is_skipped_naming_it() {
    let config = format!(
        "{DAEMON}\n[[jobs]]\nname = \"mail\"\nplugin = \"mail\"\nschedule = \"* * * * *\"\n"
    );
    let mut rig = Rig::new(&config, "2027-01-01T00:00:30Z").await;
    rig.at("2027-01-01T00:01:00Z").await;
    let run = &rig.runs()[0];
    assert_eq!(run.status, Status::Skipped);
    assert!(
        run.error.as_deref().unwrap_or_default().contains("`mail`"),
        "{:?}",
        run.error
    );
}

#[tokio::test]
async fn a_reboot_job_fires_once_and_is_marked_after_its_record() {
    let config = format!(
        "{DAEMON}{}{}",
        job("warm", "schedule = \"@reboot\""),
        job("later", "schedule = \"@reboot\"\njitter = \"1h\""),
    );
    let rig = Rig::new(&config, "2027-01-01T00:00:00Z").await;
    assert_eq!(rig.running_jobs(), ["warm"]);
    assert_eq!(rig.booted, ["warm", "later"]);
    let later = rig.runs().pop().unwrap();
    assert_eq!(
        (later.job.as_str(), later.status),
        ("later", Status::Queued)
    );
    assert!(later.scheduled_at > ms("2027-01-01T00:00:00Z"));
}

#[tokio::test]
async fn stopping_leaves_waiting_fires_queued_for_the_next_start() {
    let config = format!(
        "{DAEMON}max_concurrency = 1\n{}{}",
        job("a", ""),
        job("b", ""),
    );
    let mut rig = Rig::new(&config, "2027-01-01T00:00:00Z").await;
    for name in ["a", "b"] {
        rig.ask(manual(name, false)).await;
    }
    rig.step(Input::Shutdown).await;
    rig.step(Input::StopAll("pacerd stopped".into())).await;
    assert_eq!(rig.stops.len(), 1, "the run in flight is asked to stop");
    rig.end("a", Status::Cancelled).await;
    assert!(rig.running.is_empty(), "nothing starts while stopping");
    assert_eq!(rig.runs()[1].status, Status::Queued);
    rig.crash_and_restart("2027-01-01T00:01:00Z").await;
    assert_eq!(rig.running_jobs(), ["b"]);
}

#[tokio::test]
async fn fires_held_for_an_unwritable_history_are_recorded_in_due_order_and_say_why() {
    let config = format!(
        "{DAEMON}{}",
        job("tick", "schedule = \"*/10 * * * * *\"\ncatch_up = \"skip\"")
    );
    let mut rig = Rig::new(&config, "2027-01-01T00:00:05Z").await;
    rig.at("2027-01-01T00:00:10Z").await;
    rig.end("tick", Status::Succeeded).await;
    rig.now = ms("2027-01-01T00:00:15Z");
    rig.step(Input::History(Some("database or disk is full".into())))
        .await;
    rig.at("2027-01-01T00:01:00Z").await;
    assert_eq!(rig.runs().len(), 1, "nothing is taken while it lasts");
    rig.now = ms("2027-01-01T00:01:35Z");
    rig.step(Input::History(None)).await;
    rig.step(Input::Tick).await;
    let fires: Vec<(String, Status)> = rig
        .runs()
        .into_iter()
        .skip(1)
        .map(|run| (from_ms(run.scheduled_at).to_string(), run.status))
        .collect();
    let at = |s: &str| format!("2027-01-01T00:0{s}Z");
    assert_eq!(
        fires,
        [
            (at("0:20"), Status::Skipped),
            (at("0:30"), Status::Skipped),
            (at("0:40"), Status::Running),
            (at("0:50"), Status::Skipped),
            (at("1:00"), Status::Skipped),
            (at("1:10"), Status::Skipped),
            (at("1:20"), Status::Skipped),
            (at("1:30"), Status::Skipped),
        ],
        "recorded in the order they came due: more than a minute late they were missed, later \
         ones run (and overlap declines all but the first)"
    );
    assert_eq!(
        rig.runs()[1].error.as_deref(),
        Some(
            "missed while the history could not be written (from 2027-01-01T00:00:15.000Z to \
             2027-01-01T00:01:35.000Z) (catch_up = \"skip\")"
        )
    );
}

#[tokio::test]
async fn a_reload_applies_a_new_output_limit_to_the_runs_started_after_it() {
    let config = |limit: &str| format!("{DAEMON}output_limit = \"{limit}\"\n{}", job("a", ""));
    let mut rig = Rig::new(&config("64K"), "2027-01-01T00:00:00Z").await;
    let run = manual("a", false);
    rig.ask(run.clone()).await;
    assert_eq!(rig.running[0].output_limit, 64 << 10);
    rig.rewrite_config(&config("2K"));
    rig.ask(Request::Reload).await;
    rig.end("a", Status::Succeeded).await;
    rig.ask(run).await;
    assert_eq!(rig.running[0].output_limit, 2 << 10);
}

#[tokio::test]
async fn nothing_starts_while_the_history_cannot_be_written_nor_once_stopping() {
    let config = format!(
        "{DAEMON}max_concurrency = 1\n{}{}",
        job("a", ""),
        job("b", ""),
    );
    let mut rig = Rig::new(&config, "2027-01-01T00:00:00Z").await;
    for name in ["a", "b"] {
        rig.ask(manual(name, false)).await;
    }
    rig.now = ms("2027-01-01T00:00:10Z");
    rig.step(Input::History(Some("database or disk is full".into())))
        .await;
    rig.exit("a").await;
    assert!(
        rig.running.is_empty(),
        "a slot freed while the history is unwritable is not taken: the start's record could \
         not be written, and a run held for it would start late"
    );
    rig.step(Input::Shutdown).await;
    rig.now = ms("2027-01-01T00:10:00Z");
    rig.step(Input::History(None)).await;
    assert!(rig.running.is_empty(), "a stopping daemon starts nothing");
    assert_eq!(rig.runs()[1].status, Status::Queued);
}

#[tokio::test]
async fn a_run_whose_start_was_not_recorded_when_stopped_stays_queued() {
    let config = format!("{DAEMON}{}", job("a", ""));
    let mut rig = Rig::new(&config, "2027-01-01T00:00:00Z").await;
    let to = rig.ask(manual("a", true)).await;
    assert_eq!(rig.engine.in_flight(), 1);
    rig.step(Input::Shutdown).await;
    rig.step(Input::StopAll("pacerd stopped".into())).await;
    let start = rig.take_run("a");
    rig.step(Input::Withdrawn {
        key: start.key,
        reason: "pacerd stopped before its start could be recorded".into(),
    })
    .await;
    assert_eq!(rig.engine.in_flight(), 0, "the stop does not wait for it");
    let answers = rig.answers(to);
    assert!(
        matches!(answers.last(), Some(Response::Error { message }) if message.contains("stays queued")),
        "{answers:?}"
    );
}

#[tokio::test]
async fn a_run_cancelled_before_its_start_was_recorded_ends_cancelled_not_queued() {
    let config = format!("{DAEMON}{}", job("a", ""));
    let mut rig = Rig::new(&config, "2027-01-01T00:00:00Z").await;
    rig.hold_starts = true;
    let to = rig.ask(manual("a", true)).await;
    let start = rig.take_run("a");
    rig.step(Input::Withdrawn {
        key: start.key,
        reason: "cancelled by pacer cancel before its start could be recorded".into(),
    })
    .await;
    assert_eq!(rig.engine.in_flight(), 0);
    let run = &rig.runs()[0];
    assert_eq!(
        run.status,
        Status::Cancelled,
        "not left queued for a next start"
    );
    let answers = rig.answers(to);
    assert!(
        matches!(
            answers.last(),
            Some(Response::Run(RunUpdate::Finished {
                status: Status::Cancelled,
                ..
            }))
        ),
        "{answers:?}"
    );
}

#[tokio::test]
async fn the_uptime_counts_from_the_process_start_not_the_engine_start() {
    let config = format!("{DAEMON}{}", job("tick", ""));
    let mut rig = Rig::new(&config, "2027-01-01T00:00:30Z").await;
    // The process began 20 s before the engine (it waited for a locked history).
    rig.engine.up_since(ms("2027-01-01T00:00:10Z"));
    rig.now = ms("2027-01-01T00:00:35Z");
    let to = rig.ask(Request::Status).await;
    let answers = rig.answers(to);
    let [Response::Status(status)] = answers.as_slice() else {
        panic!("not one status: {answers:?}");
    };
    assert_eq!(status.uptime_s, 25);
}

/// The daemon commits what arrives together in one transaction: one tick at `at`, its writes
/// committed as one batch, and the effects of that one `Written`.
async fn burst(rig: &mut Rig, at: &str) -> Vec<Effect> {
    rig.now = ms(at);
    let mut writes = Vec::new();
    let mut tickets = Vec::new();
    for effect in rig.engine.handle(Input::Tick, rig.now) {
        if let Effect::Write(write, ticket) = effect {
            writes.push(write);
            tickets.push(ticket);
        }
    }
    let results = rig.store.write(writes).await.unwrap();
    let written = tickets
        .into_iter()
        .zip(results)
        .filter_map(|(ticket, result)| Some((ticket?, result.map_err(|e| e.to_string()))))
        .collect();
    rig.engine.handle(Input::Written(written), rig.now)
}

/// 300 co-due jobs in pool `b`, then one of priority 9 (recorded last) in `high_pool`.
fn burst_config(daemon: &str, high_pool: &str) -> String {
    let mut config = format!("{DAEMON}{daemon}\n[pools.a]\n[pools.b]\n");
    for i in 0..300 {
        config.push_str(&job(
            &format!("b{i:03}"),
            "schedule = \"* * * * *\"\npool = \"b\"",
        ));
    }
    config.push_str(&job(
        "zhigh",
        &format!("schedule = \"* * * * *\"\npool = \"{high_pool}\"\npriority = 9"),
    ));
    config
}

#[tokio::test]
async fn fires_recorded_together_take_the_free_slots_by_priority_across_pools() {
    let config = burst_config("max_concurrency = 10", "a");
    let mut rig = Rig::new(&config, "2027-01-01T00:00:30Z").await;
    let effects = burst(&mut rig, "2027-01-01T00:01:00Z").await;
    let started: Vec<&str> = effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Start(start) => Some(start.job.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 10);
    assert_eq!(
        started[0], "zhigh",
        "the fire of priority 9, recorded last, starts first: {started:?}"
    );
}

#[tokio::test]
async fn fires_that_start_at_once_are_not_recorded_as_waiting() {
    let config = burst_config("max_concurrency = 1000", "b");
    let mut rig = Rig::new(&config, "2027-01-01T00:00:30Z").await;
    let effects = burst(&mut rig, "2027-01-01T00:01:00Z").await;
    let starts = effects
        .iter()
        .filter(|effect| matches!(effect, Effect::Start(_)))
        .count();
    let waiting: Vec<&String> = effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Write(Write::Waiting { reason, .. }, _) => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(starts, 301);
    assert!(
        waiting.is_empty(),
        "{} told they wait: {waiting:?}",
        waiting.len()
    );
}

#[tokio::test]
async fn a_manual_run_committed_with_a_burst_is_told_it_started_not_that_it_waits() {
    let config = format!(
        "{}{}",
        burst_config("max_concurrency = 1000", "b"),
        job("manual", "pool = \"b\"")
    );
    let mut rig = Rig::new(&config, "2027-01-01T00:00:30Z").await;
    rig.now = ms("2027-01-01T00:01:00Z");
    let mut effects = rig.engine.handle(
        Input::Control {
            request: manual("manual", false),
            reply: 77,
        },
        rig.now,
    );
    effects.extend(rig.engine.handle(Input::Tick, rig.now));
    rig.settle(effects).await;
    assert!(rig.running_jobs().contains(&"manual"));
    let answers = rig.answers(77);
    assert!(
        matches!(&answers[..], [Response::Run(RunUpdate::Started { .. })]),
        "{answers:?}"
    );
}
