//! The SQLite store against real database files in temporary directories.

use std::path::PathBuf;

use serde_json::json;

use super::super::{
    Finish, History, HistoryQuery, JobState, NewFire, RunId, Span, StartRun, Store, StoreError,
    StoreFuture, Write,
};
use super::{SqliteHistory, SqliteStore};
use crate::model::{Status, Trigger};

fn database() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/pacer.db");
    (dir, path)
}

fn new_fire(job: &str, scheduled_at: i64) -> NewFire {
    NewFire {
        job: job.to_owned(),
        plugin: "exec".to_owned(),
        trigger: Trigger::Schedule,
        attempt: 1,
        scheduled_at,
        accepted_at: scheduled_at,
        params: json!({"command": "true", "token": "s3cret"}).into(),
        own_params: false,
        advances_schedule: true,
    }
}

/// Records a fire as queued; its id.
async fn queued(store: &SqliteStore, fire: NewFire) -> RunId {
    let mut ids = store
        .write(vec![Write::Queued { fire, reason: None }])
        .await
        .unwrap();
    ids.pop().unwrap().unwrap().unwrap()
}

/// A fire of `job` due at `scheduled_at`, queued, then started 3 ms late after 2 ms in the
/// queue.
async fn started(store: &SqliteStore, job: &str, scheduled_at: i64) -> RunId {
    started_at(store, job, scheduled_at, scheduled_at + 3, 2).await
}

async fn started_at(
    store: &SqliteStore,
    job: &str,
    scheduled_at: i64,
    started_at: i64,
    queue_ms: i64,
) -> RunId {
    let id = queued(store, new_fire(job, scheduled_at)).await;
    store
        .start_run(StartRun {
            id,
            started_at,
            queue_ms,
            process: Some((4242, 99)),
        })
        .await
        .unwrap();
    id
}

fn finish(id: RunId, status: Status, finished_at: i64) -> Finish {
    Finish {
        id,
        status,
        finished_at,
        error: (status != Status::Succeeded).then(|| "it broke".to_owned()),
        message: (status == Status::Succeeded).then(|| "all good".to_owned()),
        output: b"hello\n".to_vec(),
        output_dropped: 7,
    }
}

fn all(history: &SqliteHistory) -> Vec<(RunId, String, Status)> {
    history
        .runs(&HistoryQuery {
            limit: 1000,
            ..HistoryQuery::default()
        })
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.job, r.status))
        .collect()
}

#[tokio::test]
async fn held_run_records_wait_for_send_held_and_go_in_the_order_they_were_held() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let ending = started(&store, "old", 1_000).await;
    let next = queued(&store, new_fire("new", 1_000)).await;
    let start = |id| StartRun {
        id,
        started_at: 2_000,
        queue_ms: 1_000,
        process: None,
    };
    let ended = store.hold_finish_run(finish(ending, Status::Succeeded, 2_000));
    let started = store.hold_start_run(start(next));
    let history = SqliteHistory::open(&path).unwrap();
    assert_eq!(
        all(&history),
        [
            (next, "new".to_owned(), Status::Queued),
            (ending, "old".to_owned(), Status::Running)
        ],
        "held records are not written"
    );
    store.send_held();
    ended.await.unwrap();
    started.await.unwrap();
    assert_eq!(
        all(&history),
        [
            (next, "new".to_owned(), Status::Running),
            (ending, "old".to_owned(), Status::Succeeded)
        ]
    );
    // A start held twice fails the second time, in order, and the first stays.
    let twice = (
        store.hold_start_run(start(next)),
        store.hold_finish_run(finish(next, Status::Failed, 3_000)),
    );
    let closed = store.hold_start_run(start(next));
    store.send_held();
    assert!(matches!(twice.0.await, Err(StoreError::NotQueued(_))));
    twice.1.await.unwrap();
    store.close().await.unwrap();
    assert!(
        matches!(closed.await, Err(StoreError::NotQueued(_))),
        "what was held is still written before closing"
    );
}

#[tokio::test]
async fn a_run_is_recorded_at_start_and_completed_at_end() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let id = started(&store, "backup", 1_000).await;

    let history = SqliteHistory::open(&path).unwrap();
    let running = history.run(id).unwrap().unwrap();
    assert_eq!(running.record.status, Status::Running);
    assert_eq!(running.record.started_at, Some(1_003));
    assert_eq!(running.record.finished_at, None);
    assert_eq!(running.record.duration_ms, None);
    assert_eq!(
        running.params,
        json!({"command": "true", "token": "********"})
    );

    store
        .finish_run(finish(id, Status::Failed, 1_503))
        .await
        .unwrap();
    let done = history.run(id).unwrap().unwrap();
    assert_eq!(done.record.status, Status::Failed);
    assert_eq!(done.record.finished_at, Some(1_503));
    assert_eq!(done.record.duration_ms, Some(500));
    assert_eq!(done.record.queue_ms, Some(2));
    assert_eq!(done.record.error.as_deref(), Some("it broke"));
    assert_eq!(done.output, "hello\n");
    assert_eq!(done.output_dropped, 7);

    let again = store.finish_run(finish(id, Status::Succeeded, 2_000)).await;
    assert!(matches!(again, Err(StoreError::NotRunning(_))), "{again:?}");
}

#[tokio::test]
async fn concurrent_writes_are_batched_and_all_land() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let writes: Vec<_> = (0..300)
        .map(|i| {
            store.write(vec![Write::Queued {
                fire: new_fire(&format!("job{}", i % 7), i),
                reason: None,
            }])
        })
        .collect();
    let mut ids = Vec::new();
    for write in writes {
        ids.push(write.await.unwrap().pop().unwrap().unwrap().unwrap());
    }
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 300);
    let history = SqliteHistory::open(&path).unwrap();
    assert_eq!(all(&history).len(), 300);
}

#[tokio::test]
async fn skipped_fires_and_last_fire_are_recorded() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let written = store
        .write(vec![
            Write::Skipped {
                fire: new_fire("a", 5_000),
                reason: "run 1 is still running (overlap = \"skip\")".into(),
            },
            Write::LastFire {
                job: "b".into(),
                at: 7_000,
                timing: Some("* * * * *|UTC|0|true".into()),
            },
            Write::Paused {
                job: "b".into(),
                paused: true,
            },
        ])
        .await
        .unwrap();
    let skipped = written[0].as_ref().unwrap().unwrap();
    assert!(matches!(written[1], Ok(None)));
    // Recorded out of order, the last fire still only moves forward.
    started(&store, "a", 4_000).await;

    let states = store.job_states().await.unwrap();
    assert_eq!(
        states["a"],
        JobState {
            last_fire: Some(5_000),
            paused: false,
            timing: None,
        }
    );
    assert_eq!(
        states["b"],
        JobState {
            last_fire: Some(7_000),
            paused: true,
            timing: Some("* * * * *|UTC|0|true".into()),
        }
    );
    let history = SqliteHistory::open(&path).unwrap();
    let detail = history.run(skipped).unwrap().unwrap();
    let record = detail.record;
    assert_eq!(record.status, Status::Skipped);
    assert_eq!((record.started_at, record.finished_at), (None, None));
    assert_eq!(
        record.error.as_deref(),
        Some("run 1 is still running (overlap = \"skip\")")
    );
    assert_eq!(history.job_states().unwrap(), states);
}

#[tokio::test]
async fn a_queued_fire_keeps_its_own_params_until_it_starts_and_can_be_resolved() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let mut own = new_fire("mail", 1_000);
    own.trigger = Trigger::Manual;
    own.own_params = true;
    own.advances_schedule = false;
    let manual = queued(&store, own).await;
    let plain = queued(&store, new_fire("mail", 2_000)).await;
    let cancelled = queued(&store, new_fire("other", 3_000)).await;
    store
        .write(vec![
            Write::Waiting {
                id: plain,
                reason: "waiting for a slot".into(),
            },
            Write::Resolve {
                id: cancelled,
                status: Status::Cancelled,
                reason: "cancelled by pacer cancel".into(),
            },
        ])
        .await
        .unwrap();

    let fires = store.queued_fires().await.unwrap();
    assert_eq!(
        fires.iter().map(|f| f.id).collect::<Vec<_>>(),
        [manual, plain],
        "oldest first; the cancelled one is no longer queued"
    );
    assert_eq!(fires[0].trigger, Trigger::Manual);
    assert_eq!(
        fires[0].params,
        Some(json!({"command": "true", "token": "s3cret"})),
        "kept whole while it waits, so a restart runs it as asked"
    );
    assert_eq!(fires[1].params, None, "the job's own params apply");
    let history = SqliteHistory::open(&path).unwrap();
    let waiting = history.run(plain).unwrap().unwrap();
    assert_eq!(waiting.record.status, Status::Queued);
    assert_eq!(waiting.record.error.as_deref(), Some("waiting for a slot"));
    assert_eq!(
        waiting.params,
        json!({"command": "true", "token": "********"}),
        "shown masked"
    );
    let again = store
        .write(vec![Write::Resolve {
            id: cancelled,
            status: Status::Skipped,
            reason: "twice".into(),
        }])
        .await
        .unwrap();
    assert!(
        matches!(again[0], Err(StoreError::NotQueued(_))),
        "{again:?}"
    );

    store
        .start_run(StartRun {
            id: manual,
            started_at: 1_500,
            queue_ms: 500,
            process: None,
        })
        .await
        .unwrap();
    let pending: Option<String> = history
        .connection()
        .query_row(
            "SELECT pending_params FROM runs WHERE id = ?1",
            [manual],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(pending, None, "no unmasked params outlive the wait");
    assert!(
        store
            .start_run(StartRun {
                id: manual,
                started_at: 1_600,
                queue_ms: 0,
                process: None,
            })
            .await
            .is_err(),
        "a run starts once"
    );
}

#[tokio::test]
async fn orphans_become_abandoned_with_their_processes() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let finished = started(&store, "a", 1).await;
    store
        .finish_run(finish(finished, Status::Succeeded, 9))
        .await
        .unwrap();
    let orphan = started(&store, "b", 2).await;
    // As a daemon that crashed: nothing more is written, and the lock goes with the process.
    store.close().await.unwrap();

    let store = SqliteStore::open(&path).unwrap();
    let orphans = store
        .abandon_orphans(50, "pacerd stopped while it ran".into())
        .await
        .unwrap();
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0].id, orphan);
    assert_eq!(orphans[0].process, Some((4242, 99)));
    let history = SqliteHistory::open(&path).unwrap();
    let record = history.run(orphan).unwrap().unwrap().record;
    assert_eq!(record.status, Status::Abandoned);
    assert_eq!(record.finished_at, Some(50));
    assert_eq!(record.error.as_deref(), Some("pacerd stopped while it ran"));
    assert!(
        store
            .abandon_orphans(60, String::new())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn history_filters_and_pages_by_id() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    for i in 0..10 {
        let id = started(&store, if i % 2 == 0 { "even" } else { "odd" }, i * 100).await;
        let status = if i % 3 == 0 {
            Status::Failed
        } else {
            Status::Succeeded
        };
        store
            .finish_run(finish(id, status, i * 100 + 50))
            .await
            .unwrap();
    }
    let history = SqliteHistory::open(&path).unwrap();
    let ids = |query: HistoryQuery| -> Vec<RunId> {
        history
            .runs(&query)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    let query = |limit| HistoryQuery {
        limit,
        ..HistoryQuery::default()
    };
    assert_eq!(ids(query(3)), [10, 9, 8]);
    assert_eq!(
        ids(HistoryQuery {
            before: Some(8),
            ..query(3)
        }),
        [7, 6, 5]
    );
    assert_eq!(
        ids(HistoryQuery {
            job: Some("even".into()),
            ..query(50)
        }),
        [9, 7, 5, 3, 1]
    );
    assert_eq!(
        ids(HistoryQuery {
            status: Some(Status::Failed),
            ..query(50)
        }),
        [10, 7, 4, 1]
    );
    assert_eq!(
        ids(HistoryQuery {
            since: Some(300),
            until: Some(600),
            ..query(50)
        }),
        [6, 5, 4]
    );
    assert_eq!(
        ids(HistoryQuery {
            after: Some(8),
            ..query(50)
        }),
        [10, 9]
    );
    assert_eq!(
        ids(HistoryQuery {
            job: Some("odd".into()),
            status: Some(Status::Succeeded),
            since: Some(200),
            ..query(50)
        }),
        [8, 6]
    );
}

#[tokio::test]
async fn stats_summarize_each_job() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    for i in 1..=20_i64 {
        // lateness i ms, i ms in the queue
        let id = started_at(&store, "a", i * 1_000, i * 1_000 + i, i).await;
        let status = if i <= 15 {
            Status::Succeeded
        } else {
            Status::Crashed
        };
        store
            .finish_run(finish(id, status, i * 1_000 + i + i * 10))
            .await
            .unwrap();
    }
    started(&store, "a", 99_000).await;
    let history = SqliteHistory::open(&path).unwrap();
    let stats = history.stats(Some("a"), None).unwrap();
    assert_eq!(stats.len(), 1);
    let a = &stats[0];
    assert_eq!((a.runs, a.succeeded, a.failed), (20, 15, 5));
    assert!((a.success_rate - 0.75).abs() < 1e-9);
    assert_eq!(
        (a.p50_ms, a.p95_ms, a.max_ms),
        (Some(100), Some(190), Some(200))
    );
    assert_eq!(
        (a.p50_late_ms, a.p95_late_ms, a.max_late_ms),
        (Some(10), Some(19), Some(20))
    );
    assert_eq!(a.mean_queue_ms, Some(10.5));
    assert_eq!(history.stats(Some("a"), Some(11_000)).unwrap()[0].runs, 10);
    assert!(history.stats(Some("nope"), None).unwrap().is_empty());
    assert_eq!(history.last_statuses().unwrap()["a"], Status::Running);
}

#[tokio::test]
async fn last_successes_skip_newer_failures_and_unknown_jobs() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    for (job, at, status) in [
        ("a", 1_000, Status::Succeeded),
        ("a", 2_000, Status::Succeeded),
        ("a", 3_000, Status::Failed),
        ("b", 1_500, Status::Failed),
        ("c", 1_700, Status::Succeeded),
    ] {
        let id = started(&store, job, at).await;
        store.finish_run(finish(id, status, at + 50)).await.unwrap();
    }
    started(&store, "a", 4_000).await;
    let found = store
        .last_successes(vec!["a".into(), "b".into(), "gone".into()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found["a"], 2_050,
        "the newest success, past a failure and a run going"
    );
}

#[test]
fn the_cli_queries_use_their_indexes() {
    let (_dir, path) = database();
    drop(SqliteStore::open(&path).unwrap());
    let history = SqliteHistory::open(&path).unwrap();
    let plan = |query: HistoryQuery| -> String {
        let (sql, values) = SqliteHistory::history_sql(&query);
        let mut statement = history
            .connection()
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let rows = statement
            .query_map(rusqlite::params_from_iter(values), |row| {
                row.get::<_, String>(3)
            })
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    };
    let base = HistoryQuery {
        limit: 50,
        ..HistoryQuery::default()
    };
    let by_job = plan(HistoryQuery {
        job: Some("a".into()),
        before: Some(100),
        ..base.clone()
    });
    assert!(by_job.contains("USING INDEX runs_by_job"), "{by_job}");
    assert!(!by_job.contains("TEMP B-TREE"), "{by_job}");
    let by_status = plan(HistoryQuery {
        status: Some(Status::Failed),
        ..base.clone()
    });
    assert!(
        by_status.contains("USING INDEX runs_by_status"),
        "{by_status}"
    );
    assert!(!by_status.contains("TEMP B-TREE"), "{by_status}");
    let by_job_and_status = plan(HistoryQuery {
        job: Some("a".into()),
        status: Some(Status::Failed),
        ..base.clone()
    });
    assert!(
        by_job_and_status.contains("COVERING INDEX runs_by_status")
            || by_job_and_status.contains("INDEX runs_by_job "),
        "{by_job_and_status}"
    );
    assert!(
        !by_job_and_status.contains("TEMP B-TREE"),
        "{by_job_and_status}"
    );
    let newest = plan(base.clone());
    assert!(!newest.contains("TEMP B-TREE"), "{newest}");
    let window = plan(HistoryQuery {
        since: Some(1),
        until: Some(2),
        ..base
    });
    assert!(
        window.contains("runs_by_schedule") || !window.contains("TEMP B-TREE"),
        "{window}"
    );
}

#[test]
fn reading_never_creates_a_database() {
    let (_dir, path) = database();
    let error = SqliteHistory::open(&path).unwrap_err().to_string();
    assert!(error.starts_with("no run history at "), "{error}");
    assert!(!path.exists());
}

#[tokio::test]
async fn a_closed_database_reads_without_its_wal_files() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let id = started(&store, "a", 1).await;
    store.close().await.unwrap();
    let shm = PathBuf::from(format!("{}-shm", path.display()));
    assert!(
        !shm.exists(),
        "closing the last connection removes the -shm file"
    );
    let history = SqliteHistory::open(&path).unwrap();
    assert_eq!(history.run(id).unwrap().unwrap().record.job, "a");
}

#[tokio::test]
async fn one_writer_per_database() {
    let (_dir, path) = database();
    let first = SqliteStore::open(&path).unwrap();
    let error = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "another pacerd is using the database {} (it holds {}.lock, pid {})",
            path.display(),
            path.display(),
            std::process::id()
        )),
        "{error}"
    );
    first.close().await.unwrap();
    SqliteStore::open(&path).unwrap();
}

#[tokio::test]
async fn pruning_deletes_old_finished_runs_in_batches() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    for at in 0..25 {
        let id = started(&store, "old", at).await;
        store
            .finish_run(finish(id, Status::Succeeded, at + 1))
            .await
            .unwrap();
    }
    let still_running = started(&store, "old", 3).await;
    let recent = started(&store, "new", 1_000).await;
    assert_eq!(store.prune(100, 10).await.unwrap(), 10);
    assert_eq!(store.prune(100, 10).await.unwrap(), 10);
    assert_eq!(store.prune(100, 10).await.unwrap(), 5);
    assert_eq!(store.prune(100, 10).await.unwrap(), 0);
    store.checkpoint().await.unwrap();
    let history = SqliteHistory::open(&path).unwrap();
    let left: Vec<RunId> = all(&history).into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(left, [recent, still_running]);
    let orphan_outputs: i64 = history
        .connection()
        .query_row(
            "SELECT count(*) FROM run_output WHERE run_id NOT IN (SELECT id FROM runs)",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(orphan_outputs, 0, "output goes with its run");
}

#[tokio::test]
async fn ids_are_never_reused_after_pruning() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let mut last = 0;
    for at in 0..3 {
        last = started(&store, "a", at).await;
        store
            .finish_run(finish(last, Status::Succeeded, at + 1))
            .await
            .unwrap();
    }
    assert_eq!(store.prune(1_000, 100).await.unwrap(), 3);
    let next = started(&store, "a", 2_000).await;
    assert!(next > last, "{next} follows {last}");
}

#[test]
fn a_history_that_cannot_be_looked_at_is_not_called_missing() {
    let (dir, path) = database();
    assert!(matches!(
        SqliteHistory::open(&path),
        Err(StoreError::Missing(_))
    ));
    // A path through a regular file fails for every user, root included, as a denied
    // directory does for others.
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let error = SqliteHistory::open(&file.join("pacer.db")).unwrap_err();
    assert!(matches!(error, StoreError::Unreadable { .. }), "{error}");
    assert!(
        error.to_string().starts_with(&format!(
            "cannot read the run history at {}",
            file.join("pacer.db").display()
        )),
        "{error}"
    );
}

#[tokio::test]
async fn a_database_of_the_first_schema_keeps_its_runs_ids_and_outputs() {
    let (_dir, path) = database();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        rusqlite_migration::Migrations::new(vec![rusqlite_migration::M::up(super::schema::V1)])
            .to_latest(&mut conn)
            .unwrap();
        conn.execute_batch(
            "INSERT INTO runs (id, job, plugin, status, trigger, attempt, scheduled_at,
                               started_at, finished_at, queue_ms, error, params)
             VALUES (3, 'a', 'exec', 'succeeded', 'schedule', 1, 1000, 1003, 1500, 2, NULL,
                     '{\"command\":\"true\"}'),
                    (4, 'a', 'exec', 'failed', 'retry', 2, 2000, 2003, 2500, 0, 'it broke', NULL);
             INSERT INTO run_output (run_id, output, dropped) VALUES (3, X'6869', 0);
             UPDATE sqlite_sequence SET seq = 10 WHERE name = 'runs';
             INSERT INTO job_state (job, last_fire, paused) VALUES ('a', 2000, 1);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let history = SqliteHistory::open(&path).unwrap();
    let old = history.run(3).unwrap().unwrap();
    assert_eq!(old.record.status, Status::Succeeded);
    assert_eq!(old.output, "hi", "the output survives the rebuilt table");
    assert_eq!(
        history.run(4).unwrap().unwrap().record.error.as_deref(),
        Some("it broke")
    );
    assert_eq!(
        started(&store, "a", 3_000).await,
        11,
        "ids given out before the migration are never given out again"
    );
    assert_eq!(
        store.job_states().await.unwrap()["a"],
        JobState {
            last_fire: Some(3_000),
            paused: true,
            timing: None,
        }
    );
}

/// Whether a test that needs root may run: as root yes; otherwise it is skipped, except under
/// `CI=true`, where a skipped fault test would hide a regression.
fn root_or_skip(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} needs root, and CI runs as root"
    );
    eprintln!("skipped: {what} needs root (CI runs as root)");
    false
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs failed");
        Tmpfs { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Remounts with `options`, waiting (with a deadline) while the kernel refuses because a
    /// file is still open for writing: a dropped store's writer thread closes its files on its
    /// own time.
    fn remount(&self, options: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let status = std::process::Command::new("mount")
                .args(["-o", &format!("remount,{options}")])
                .arg(self.path())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            if status.success() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mount -o remount,{options} kept failing"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.path())
            .status();
    }
}

#[tokio::test]
async fn an_empty_database_file_is_refused_not_replaced() {
    let (_dir, path) = database();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "").unwrap();
    let error = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(error, StoreError::Empty(_)), "{error}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("restore it from a backup"), "{message}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left as found");
    let error = SqliteHistory::open(&path).unwrap_err();
    assert!(matches!(error, StoreError::Empty(_)), "{error}");
}

#[tokio::test]
async fn a_new_database_appears_whole_and_a_half_built_one_is_replaced() {
    let (_dir, path) = database();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // What a start that died while building the database leaves.
    let building = PathBuf::from(format!("{}.new", path.display()));
    std::fs::write(&building, "half a database").unwrap();
    let store = SqliteStore::open(&path).unwrap();
    assert!(!building.exists(), "the database is renamed into place");
    let id = started(&store, "a", 1).await;
    store.close().await.unwrap();
    let history = SqliteHistory::open(&path).unwrap();
    assert_eq!(history.run(id).unwrap().unwrap().record.job, "a");
}

#[test]
fn a_file_that_is_not_a_database_is_refused_with_the_way_out() {
    let (_dir, path) = database();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, vec![0x5a_u8; 64 * 1024]).unwrap();
    for error in [
        SqliteStore::open(&path).unwrap_err(),
        SqliteHistory::open(&path).unwrap_err(),
    ] {
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("file is not a database"), "{message}");
        assert!(message.contains("restore it from a backup"), "{message}");
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        vec![0x5a_u8; 64 * 1024],
        "the file is left as found"
    );
}

/// Runs 1 to 6 of jobs `a` and `b`, all finished, then rows 2, 3 and 5 damaged as an edit
/// outside pacer (or a flipped bit) would leave them.
async fn history_with_damaged_rows() -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    for (i, job) in ["a", "b", "a", "b", "a", "b"].into_iter().enumerate() {
        let at = i64::try_from(i).unwrap() * 1_000;
        let id = started(&store, job, at).await;
        store
            .finish_run(finish(id, Status::Succeeded, at + 10))
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA ignore_check_constraints = ON;
         UPDATE runs SET job = CAST(x'ff61' AS TEXT) WHERE id = 2;
         UPDATE runs SET attempt = 'first' WHERE id = 3;
         UPDATE runs SET status = 'exploded' WHERE id = 5;
         INSERT INTO job_state (job, last_fire) VALUES (CAST(x'fe' AS TEXT), 1);",
    )
    .unwrap();
    drop(conn);
    (dir, path)
}

#[tokio::test]
async fn damaged_rows_are_skipped_with_a_warning_and_the_rest_is_served() {
    let (_dir, path) = history_with_damaged_rows().await;
    let history = SqliteHistory::open(&path).unwrap();
    let ids: Vec<RunId> = all(&history).into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(ids, [6, 4, 1]);
    let damaged = history.take_damaged();
    let described: Vec<String> = damaged.iter().map(ToString::to_string).collect();
    assert_eq!(
        described,
        [
            "runs row 5: column `status`: unknown status `exploded`: expected one of queued, running, \
             succeeded, failed, timed_out, crashed, skipped, cancelled, abandoned",
            "runs row 3: column `attempt` holds the text \"first\"",
            "runs row 2: column `job` holds text that is not valid UTF-8",
        ],
        "{damaged:?}"
    );
    assert!(history.take_damaged().is_empty(), "each is reported once");

    let stats = history.stats(None, None).unwrap();
    let runs: Vec<(String, u64)> = stats.iter().map(|s| (s.job.clone(), s.runs)).collect();
    // Stats need no `attempt`, so run 3 counts there.
    assert_eq!(runs, [("a".to_owned(), 2), ("b".to_owned(), 2)]);
    assert_eq!(history.take_damaged().len(), 2);

    assert_eq!(
        history.job_states().unwrap().len(),
        2,
        "the damaged job left out"
    );
    assert_eq!(history.take_damaged().len(), 1);

    let error = history.run(5).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("run 5 in {} is damaged: ", path.display())),
        "{message}"
    );
    assert!(message.contains("exploded"), "{message}");
    assert_eq!(history.run(4).unwrap().unwrap().record.job, "b");

    // The daemon starts on it: the damaged rows are left out of what it reads back.
    let store = SqliteStore::open(&path).unwrap();
    let states = store.job_states().await.unwrap();
    assert_eq!(states.len(), 2, "{states:?}");
    let statuses = store.last_statuses().await.unwrap();
    assert_eq!(statuses.get("a"), None, "a's newest run (5) is damaged");
    assert_eq!(statuses["b"], Status::Succeeded);
    let id = started(&store, "a", 9_000).await;
    assert_eq!(id, 7, "writing goes on");
}

#[tokio::test]
async fn a_damaged_running_row_is_still_abandoned() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let id = started(&store, "a", 1).await;
    store.close().await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE runs SET pid = 'x' WHERE id = ?1", [id])
        .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path).unwrap();
    let orphans = store.abandon_orphans(5, "gone".into()).await.unwrap();
    assert!(orphans.is_empty(), "its process cannot be looked for");
    let history = SqliteHistory::open(&path).unwrap();
    assert_eq!(
        history.run(id).unwrap().unwrap().record.status,
        Status::Abandoned
    );
}

/// Waits (with a deadline) until the store says why it cannot write; its words.
async fn unwritable(store: &SqliteStore) -> String {
    let mut health = store.health();
    let deadline = std::time::Duration::from_secs(30);
    tokio::time::timeout(deadline, async {
        loop {
            if let Some(unwritable) = health.borrow_and_update().clone() {
                return unwritable.to_string();
            }
            health.changed().await.unwrap();
        }
    })
    .await
    .expect("the store reports that it cannot write")
}

#[tokio::test]
async fn a_lock_held_elsewhere_holds_writes_in_order_and_says_how_to_find_the_holder() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let spawn_queued = |fire: NewFire| {
        let store = store.clone();
        tokio::spawn(async move { queued(&store, fire).await })
    };
    let first = spawn_queued(new_fire("a", 1));
    let message = unwritable(&store).await;
    assert!(
        message.contains(&format!(
            "the run history {}: database is locked",
            path.display()
        )),
        "{message}"
    );
    assert!(message.contains("fuser -v"), "{message}");
    let second = spawn_queued(new_fire("a", 2));
    assert!(
        !first.is_finished(),
        "nothing is written, nothing is dropped"
    );
    other.execute_batch("ROLLBACK").unwrap();
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert!(
        first < second,
        "written in the order sent, once the lock is gone"
    );
    assert!(store.health().borrow().is_none(), "and the store says so");
}

#[tokio::test]
async fn a_full_file_system_holds_writes_until_space_is_freed() {
    if !root_or_skip("a full file system (a small tmpfs)") {
        return;
    }
    let tmpfs = Tmpfs::mount("1m");
    let path = tmpfs.path().join("pacer.db");
    let store = SqliteStore::open(&path).unwrap();
    std::fs::write(tmpfs.path().join("filler"), vec![1_u8; 1024 * 1024]).unwrap_err();
    let mut big = new_fire("a", 1);
    big.params = json!({"blob": "x".repeat(512 * 1024)}).into();
    let held = tokio::spawn({
        let store = store.clone();
        async move { queued(&store, big).await }
    });
    let message = unwritable(&store).await;
    assert!(
        message.contains(&format!(
            "the run history {}: database or disk is full",
            path.display()
        )),
        "{message}"
    );
    assert!(message.contains("free space"), "{message}");
    std::fs::remove_file(tmpfs.path().join("filler")).unwrap();
    held.await.unwrap();
    started(&store, "a", 2).await;
    store.close().await.unwrap();
}

#[test]
fn a_read_only_file_system_is_named_as_the_cause() {
    if !root_or_skip("a read-only file system (a tmpfs remounted)") {
        return;
    }
    let tmpfs = Tmpfs::mount("4m");
    let path = tmpfs.path().join("pacer.db");
    drop(SqliteStore::open(&path).unwrap());
    std::fs::remove_file(PathBuf::from(format!("{}.lock", path.display()))).unwrap();
    tmpfs.remount("ro");
    let message = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!(
            "cannot create the lock file {}.lock: Read-only file system",
            path.display()
        )),
        "{message}"
    );
    assert!(message.contains("remount it read-write"), "{message}");
    SqliteHistory::open(&path).unwrap();
}

#[tokio::test]
async fn an_immutable_shared_memory_file_is_refused_at_open() {
    if !root_or_skip("an immutable file (chattr +i)") {
        return;
    }
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    started(&store, "a", 1).await;
    let shm = PathBuf::from(format!("{}-shm", path.display()));
    let other = rusqlite::Connection::open(&path).unwrap();
    // Kept open, so the -shm file outlives the store's close.
    other
        .query_row("SELECT count(*) FROM runs", [], |_| Ok(()))
        .unwrap();
    store.close().await.unwrap();
    let chattr = |flag: &str| {
        let status = std::process::Command::new("chattr")
            .arg(flag)
            .arg(&shm)
            .status()
            .unwrap();
        assert!(status.success(), "chattr {flag} failed");
    };
    chattr("+i");
    let result = SqliteStore::open(&path);
    chattr("-i");
    let message = result.map(drop).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!(
            "cannot write {}: Operation not permitted",
            shm.display()
        )),
        "{message}"
    );
    assert!(message.contains("chattr -i"), "{message}");
}

#[tokio::test]
async fn a_past_window_reads_its_ids_from_the_schedule_index() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    for at in (0..100).map(|i| i * 1_000) {
        started(&store, "a", at).await;
    }
    let history = SqliteHistory::open(&path).unwrap();
    let window = HistoryQuery {
        since: Some(10_000),
        until: Some(20_000),
        before: Some(18),
        limit: 3,
        ..HistoryQuery::default()
    };
    let (sql, _) = SqliteHistory::history_sql(&window);
    assert!(sql.contains("INDEXED BY runs_by_schedule"), "{sql}");
    let ids: Vec<RunId> = history
        .runs(&window)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [17, 16, 15], "ids 11 to 20 are due in the window");
}

#[tokio::test]
async fn the_web_view_reads_a_window_and_the_runs_that_ran_into_it() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let id = started(&store, "a", 5_000).await;
    store
        .finish_run(finish(id, Status::Failed, 9_000))
        .await
        .unwrap();
    let history = SqliteHistory::open(&path).unwrap();
    let window = history.job_window("a", 0, 10_000, 10).unwrap();
    assert_eq!(window.len(), 1);
    assert_eq!(window[0].duration_ms(), Some(3_997));
    assert_eq!(window[0].status, Status::Failed);
    let spans = history.spans(6_000, 20_000, 2_000, 10).unwrap();
    assert_eq!(spans.len(), 1, "due before the window, it ran into it");
}

#[tokio::test]
async fn the_web_views_windows_are_read_from_the_indexes_alone() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let id = started_at(&store, "a", 5_000, 5_500, 400).await;
    store
        .finish_run(finish(id, Status::Succeeded, 6_000))
        .await
        .unwrap();
    let mut waiting = new_fire("a", 7_000);
    waiting.accepted_at = 7_200;
    let waits = queued(&store, waiting).await;
    let history = SqliteHistory::open(&path).unwrap();

    let plan = |sql: &str| -> String {
        let mut statement = history
            .connection()
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let rows = statement
            .query_map([], |row| row.get::<_, String>("detail"))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    };
    let window = plan(
        "SELECT id, job, status, trigger, attempt, scheduled_at, started_at, finished_at,
                queue_ms FROM runs INDEXED BY runs_ended_by_job
         WHERE job = 'a' AND scheduled_at >= 0 AND scheduled_at < 10
           AND status NOT IN ('queued', 'running')
         ORDER BY scheduled_at DESC",
    );
    assert!(
        window.contains("COVERING INDEX runs_ended_by_job"),
        "{window}"
    );
    let waiting = plan(
        "SELECT id FROM runs INDEXED BY runs_by_status
         WHERE status IN ('queued', 'running') AND job = 'a'",
    );
    assert!(
        waiting.contains("COVERING INDEX runs_by_status"),
        "{waiting}"
    );
    let stats = plan(
        "SELECT id, job, status, started_at, finished_at, queue_ms, scheduled_at FROM runs
         WHERE started_at IS NOT NULL AND finished_at IS NOT NULL
           AND status NOT IN ('queued', 'running') AND job = 'a' AND scheduled_at >= 0",
    );
    assert!(
        stats.contains("COVERING INDEX runs_ended_by_job"),
        "{stats}"
    );
    let load = plan(
        "SELECT id, job, scheduled_at, started_at, finished_at, queue_ms
         FROM runs INDEXED BY runs_by_schedule
         WHERE scheduled_at >= 0 AND scheduled_at < 10 AND started_at IS NOT NULL
         ORDER BY scheduled_at DESC",
    );
    assert!(load.contains("COVERING INDEX runs_by_schedule"), "{load}");

    let runs = history.job_window("a", 0, 10_000, 10).unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].id, waits);
    assert_eq!(
        runs[0].waiting_since(),
        Some(7_200),
        "since it was accepted"
    );
    assert_eq!(runs[1].waiting_since(), None);
    let (stats, read) = history.job_figures("a", 0, 10_000, 10).unwrap();
    assert_eq!(
        (stats.runs, stats.succeeded, read),
        (1, 1, 1),
        "the runs that ended"
    );
    assert_eq!(stats.p50_ms, Some(500));
    assert_eq!(stats.mean_queue_ms, Some(400.0));
    let (_, read) = history.job_figures("a", 0, 10_000, 1).unwrap();
    assert_eq!(read, 1, "at most the limit");

    let spans = history.spans(5_000, 10_000, 0, 10).unwrap();
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert!(spans.contains(&Span {
        job: "a".to_owned(),
        waiting_from: 5_100,
        started_at: Some(5_500),
        finished_at: Some(6_000),
    }));
    assert!(spans.contains(&Span {
        job: "a".to_owned(),
        waiting_from: 7_200,
        started_at: None,
        finished_at: None,
    }));
    assert_eq!(
        history.spans(0, 7_000, 0, 10).unwrap().len(),
        1,
        "a fire accepted after the window did not wait in it"
    );
    let capped = history.run_capped(waits, 0).unwrap().unwrap();
    assert_eq!(capped.queued_at, Some(7_200));
}

#[tokio::test]
async fn a_start_taken_back_before_it_is_written_leaves_its_run_queued() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let kept = queued(&store, new_fire("kept", 1_000)).await;
    let taken_back = queued(&store, new_fire("taken_back", 1_000)).await;
    let start = |id| StartRun {
        id,
        started_at: 2_000,
        queue_ms: 1_000,
        process: None,
    };
    let started = store.hold_start_run(start(kept));
    let withdrawn = store.hold_start_run(start(taken_back));
    store.withdraw_start(taken_back);
    store.send_held();
    started.await.unwrap();
    assert!(matches!(
        withdrawn.await,
        Err(StoreError::Withdrawn(id)) if id == taken_back
    ));
    let history = SqliteHistory::open(&path).unwrap();
    assert_eq!(
        all(&history),
        [
            (taken_back, "taken_back".to_owned(), Status::Queued),
            (kept, "kept".to_owned(), Status::Running)
        ]
    );
}

/// How many runs the database file itself holds in `status`, read without the write-ahead log
/// (as the last checkpoint left the file); a read that meets a checkpoint half done counts none.
fn checkpointed_runs(path: &std::path::Path, status: Status) -> i64 {
    let uri = format!("file:{}?immutable=1", path.display());
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    rusqlite::Connection::open_with_flags(uri, flags)
        .and_then(|conn| {
            conn.query_row(
                "SELECT count(*) FROM runs WHERE status = ?1",
                [status.as_str()],
                |row| row.get(0),
            )
        })
        .unwrap_or(0)
}

fn queued_write(job: &str, scheduled_at: i64) -> Write {
    Write::Queued {
        fire: new_fire(job, scheduled_at),
        reason: None,
    }
}

/// Queues `count` fires of `job` in one write; their ids.
async fn queued_many(store: &SqliteStore, job: &str, count: i64) -> Vec<RunId> {
    store
        .write((0..count).map(|i| queued_write(job, i)).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|id| id.unwrap().unwrap())
        .collect()
}

fn start_of(id: RunId) -> StartRun {
    StartRun {
        id,
        started_at: 5_000,
        queue_ms: 1,
        process: None,
    }
}

/// Whether `future` is done at its first poll, without waiting.
fn ready_at_once<T>(future: &mut StoreFuture<T>) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    future.as_mut().poll(&mut cx).is_ready()
}

#[tokio::test]
async fn held_records_are_committed_by_their_sender_while_the_writer_thread_is_idle() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let ids = queued_many(&store, "a", 2).await;
    store.start_run(start_of(ids[1])).await.unwrap();
    // The thread answers before it lets go of the connection.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !store.idle() {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer thread stays busy"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let mut started = store.hold_start_run(start_of(ids[0]));
    let mut ended = store.hold_finish_run(finish(ids[1], Status::Succeeded, 6_000));
    store.send_held();
    // The writer thread would answer some time after being woken; the sender answered at once.
    assert!(ready_at_once(&mut started), "committed by the sender");
    assert!(ready_at_once(&mut ended), "in the same transaction");
    let history = SqliteHistory::open(&path).unwrap();
    assert_eq!(
        all(&history),
        [
            (ids[1], "a".to_owned(), Status::Succeeded),
            (ids[0], "a".to_owned(), Status::Running)
        ]
    );
}

#[tokio::test]
async fn a_lock_held_elsewhere_never_holds_up_the_sender_of_held_records() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let id = queued(&store, new_fire("a", 1)).await;
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = store.hold_start_run(start_of(id));
    let sent = std::time::Instant::now();
    store.send_held();
    assert!(
        sent.elapsed() < super::BUSY_TIMEOUT / 2,
        "the sender gave up the lock at once ({:?})",
        sent.elapsed()
    );
    // The writer thread waits for the lock instead, and writes the start once it is gone.
    unwritable(&store).await;
    other.execute_batch("ROLLBACK").unwrap();
    started.await.unwrap();
    let history = SqliteHistory::open(&path).unwrap();
    assert_eq!(all(&history), [(id, "a".to_owned(), Status::Running)]);
}

#[tokio::test]
async fn held_records_never_overtake_what_the_writer_thread_has_yet_to_write() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    for round in 0..20 {
        let id = queued(&store, new_fire("raced", round)).await;
        // Writes go to the thread; the start comes right behind, while the thread has them.
        let mut writes = vec![Write::Resolve {
            id,
            status: Status::Cancelled,
            reason: "cancelled first".to_owned(),
        }];
        writes.extend((0..100).map(|i| queued_write("filler", i)));
        let cancelled = store.write(writes);
        let started = store.hold_start_run(start_of(id));
        store.send_held();
        cancelled.await.unwrap();
        assert!(
            matches!(started.await, Err(StoreError::NotQueued(not)) if not == id),
            "round {round}: the start sent after the cancel was written before it"
        );
    }
}

#[tokio::test]
async fn commits_made_by_senders_are_checkpointed_by_the_writer_thread() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    for id in queued_many(&store, "a", 300).await {
        let started = store.hold_start_run(start_of(id));
        store.send_held();
        started.await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while checkpointed_runs(&path, Status::Running) < 256 {
        assert!(
            std::time::Instant::now() < deadline,
            "the starts were not checkpointed into the database file"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
