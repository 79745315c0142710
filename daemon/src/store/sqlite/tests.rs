//! The SQLite store against real database files in temporary directories.

use std::path::PathBuf;

use serde_json::json;

use super::super::{
    Finish, History, HistoryQuery, JobState, NewRun, RunId, Skipped, Store, StoreError,
};
use super::{SqliteHistory, SqliteStore};
use crate::model::{Status, Trigger};

fn database() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/pacer.db");
    (dir, path)
}

fn new_run(job: &str, scheduled_at: i64) -> NewRun {
    NewRun {
        job: job.to_owned(),
        plugin: "exec".to_owned(),
        trigger: Trigger::Schedule,
        attempt: 1,
        scheduled_at,
        started_at: scheduled_at + 3,
        queue_ms: 2,
        params: json!({"command": "true", "token": "s3cret"}).into(),
        process: Some((4242, 99)),
        advances_schedule: true,
    }
}

fn finish(id: RunId, status: Status, finished_at: i64) -> Finish {
    Finish {
        id,
        status,
        finished_at,
        error: (status != Status::Succeeded).then(|| "it broke".to_owned()),
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
async fn a_run_is_recorded_at_start_and_completed_at_end() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let id = store.start_run(new_run("backup", 1_000)).await.unwrap();

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
    assert!(matches!(again, Err(StoreError::Corrupt(_))), "{again:?}");
}

#[tokio::test]
async fn concurrent_writes_are_batched_and_all_land() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let starts: Vec<_> = (0..300)
        .map(|i| store.start_run(new_run(&format!("job{}", i % 7), i)))
        .collect();
    let mut ids = Vec::new();
    for start in starts {
        ids.push(start.await.unwrap());
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
    let skipped = store
        .record_skipped(Skipped {
            job: "a".into(),
            plugin: "exec".into(),
            trigger: Trigger::Schedule,
            attempt: 1,
            scheduled_at: 5_000,
            reason: "run 1 is still running (overlap = \"skip\")".into(),
            advances_schedule: true,
        })
        .await
        .unwrap();
    // Recorded out of order, the last fire still only moves forward.
    store.start_run(new_run("a", 4_000)).await.unwrap();
    store.advance_last_fire("b".into(), 7_000).await.unwrap();
    store.set_paused("b".into(), true).await.unwrap();

    let states = store.job_states().await.unwrap();
    assert_eq!(
        states["a"],
        JobState {
            last_fire: Some(5_000),
            paused: false
        }
    );
    assert_eq!(
        states["b"],
        JobState {
            last_fire: Some(7_000),
            paused: true
        }
    );
    let history = SqliteHistory::open(&path).unwrap();
    let record = history.run(skipped).unwrap().unwrap().record;
    assert_eq!(record.status, Status::Skipped);
    assert_eq!((record.started_at, record.finished_at), (None, None));
    assert_eq!(
        record.error.as_deref(),
        Some("run 1 is still running (overlap = \"skip\")")
    );
    assert_eq!(history.job_states().unwrap(), states);
}

#[tokio::test]
async fn orphans_become_abandoned_with_their_processes() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    let finished = store.start_run(new_run("a", 1)).await.unwrap();
    store
        .finish_run(finish(finished, Status::Succeeded, 9))
        .await
        .unwrap();
    let orphan = store.start_run(new_run("b", 2)).await.unwrap();
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
        let id = store
            .start_run(new_run(if i % 2 == 0 { "even" } else { "odd" }, i * 100))
            .await
            .unwrap();
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
        let mut run = new_run("a", i * 1_000);
        run.started_at = i * 1_000 + i; // lateness i ms
        run.queue_ms = i;
        let id = store.start_run(run).await.unwrap();
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
    store.start_run(new_run("a", 99_000)).await.unwrap();
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
        let id = store.start_run(new_run(job, at)).await.unwrap();
        store.finish_run(finish(id, status, at + 50)).await.unwrap();
    }
    store.start_run(new_run("a", 4_000)).await.unwrap();
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
    let id = store.start_run(new_run("a", 1)).await.unwrap();
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
        let id = store.start_run(new_run("old", at)).await.unwrap();
        store
            .finish_run(finish(id, Status::Succeeded, at + 1))
            .await
            .unwrap();
    }
    let still_running = store.start_run(new_run("old", 3)).await.unwrap();
    let recent = store.start_run(new_run("new", 1_000)).await.unwrap();
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
        last = store.start_run(new_run("a", at)).await.unwrap();
        store
            .finish_run(finish(last, Status::Succeeded, at + 1))
            .await
            .unwrap();
    }
    assert_eq!(store.prune(1_000, 100).await.unwrap(), 3);
    let next = store.start_run(new_run("a", 2_000)).await.unwrap();
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
async fn a_past_window_reads_its_ids_from_the_schedule_index() {
    let (_dir, path) = database();
    let store = SqliteStore::open(&path).unwrap();
    for at in (0..100).map(|i| i * 1_000) {
        store.start_run(new_run("a", at)).await.unwrap();
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
    let id = store.start_run(new_run("a", 5_000)).await.unwrap();
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
