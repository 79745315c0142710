//! The CLI's reads: history with the node, one run with its output, stats, statuses, nodes;
//! and the web view's: windows, figures, spans, a run's capped output, its chain.

use pacer_tests::postgres::Postgres;

use super::{config, database, finished, job, join, manual, room, run};
use crate::model::{Status, Trigger};
use crate::store::{HistoryQuery, StartRun};

const JOBS: &str = r#"
[[jobs]]
name = "report"
plugin = "exec"
overlap = "allow"
[jobs.params]
password = "hunter2"
"#;

#[test]
fn history_names_the_node_and_pages_by_id() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let db = database(&pg).await;
        let (_dir, cfg) = config("", JOBS);
        let a = join(&db, "a", &cfg).await;
        let report = job(&cfg, "report");
        a.claim(&[manual(report, 1), manual(report, 2), manual(report, 3)])
            .await
            .expect("a claim");
        let taken = a.admit(&room(1)).await.expect("admission");
        let id = taken[0].id;
        a.start_run(&StartRun {
            id,
            started_at: 5,
            queue_ms: taken[0].queue_ms,
            process: Some((42, 7)),
        })
        .await
        .expect("a start");
        a.finish_run(&finished(id, Status::Succeeded))
            .await
            .expect("a finish");

        let all = db
            .runs(&HistoryQuery {
                limit: 50,
                ..HistoryQuery::default()
            })
            .await
            .expect("history");
        assert_eq!(all.len(), 3);
        assert!(
            all.windows(2).all(|w| w[0].record.id > w[1].record.id),
            "newest first"
        );
        let done = all.iter().find(|run| run.record.id == id).expect("the run");
        assert_eq!(done.node.as_deref(), Some("a"));
        assert_eq!(done.record.duration_ms, Some(5));
        assert!(
            all.iter()
                .filter(|run| run.record.id != id)
                .all(|run| run.node.is_none())
        );
        let json = serde_json::to_value(done).expect("JSON");
        assert_eq!(json["node"], "a");
        assert_eq!(json["status"], "succeeded");

        let page = db
            .runs(&HistoryQuery {
                job: Some("report".to_owned()),
                status: Some(Status::Queued),
                before: Some(all[0].record.id),
                limit: 1,
                ..HistoryQuery::default()
            })
            .await
            .expect("a page");
        assert_eq!(page.len(), 1);
        assert!(page[0].record.id < all[0].record.id);

        let detail = db.run(id).await.expect("show").expect("the run exists");
        assert_eq!(detail.output, "out");
        assert_eq!(detail.params["password"], "********");

        let stats = db.stats(None, None).await.expect("stats");
        assert_eq!(stats.len(), 1);
        assert_eq!((stats[0].runs, stats[0].succeeded), (1, 1));
        assert_eq!(stats[0].p50_ms, Some(5));
        let statuses = db.last_statuses().await.expect("statuses");
        assert_eq!(statuses["report"], Status::Queued);
        let nodes = db.nodes().await.expect("nodes");
        assert_eq!(nodes.len(), 1);
        assert_eq!((nodes[0].state.as_str(), nodes[0].in_flight), ("alive", 0));
    });
}

#[test]
fn pruning_deletes_old_runs_that_are_over_and_keeps_what_waits_or_runs() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let db = database(&pg).await;
        let (_dir, cfg) = config("", JOBS);
        let a = join(&db, "a", &cfg).await;
        let report = job(&cfg, "report");
        a.claim(&[
            manual(report, 1),
            manual(report, 2),
            manual(report, 3),
            manual(report, 5_000),
        ])
        .await
        .expect("a claim");
        let taken = a.admit(&room(2)).await.expect("admission");
        let (done, going) = (taken[0].id, taken[1].id);
        for id in [done, going] {
            a.start_run(&StartRun {
                id,
                started_at: 4,
                queue_ms: 0,
                process: None,
            })
            .await
            .expect("a start");
        }
        a.finish_run(&finished(done, Status::Succeeded))
            .await
            .expect("a finish");
        let all = db
            .runs(&HistoryQuery {
                limit: 50,
                ..HistoryQuery::default()
            })
            .await
            .expect("history");
        let newer = all
            .iter()
            .find(|run| run.record.scheduled_at == 5_000)
            .expect("the newer run")
            .record
            .id;
        db.cancel(newer, "cancelled by pacer cancel")
            .await
            .expect("a cancel");

        assert_eq!(db.prune(1_000, 1_000).await.expect("a prune"), 1);
        assert_eq!(db.prune(1_000, 1_000).await.expect("a prune"), 0);
        assert!(db.run(done).await.expect("show").is_none(), "pruned");
        let left: Vec<Status> = db
            .runs(&HistoryQuery {
                limit: 50,
                ..HistoryQuery::default()
            })
            .await
            .expect("history")
            .into_iter()
            .map(|run| run.record.status)
            .collect();
        assert_eq!(
            left,
            [Status::Cancelled, Status::Queued, Status::Running],
            "the newer run, the one waiting and the one going stay"
        );
    });
}

#[test]
fn the_web_views_reads_give_the_sqlite_historys_shapes() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let db = database(&pg).await;
        let (_dir, cfg) = config("", JOBS);
        let a = join(&db, "a", &cfg).await;
        let report = job(&cfg, "report");
        a.claim(&[manual(report, 1), manual(report, 2), manual(report, 3)])
            .await
            .expect("a claim");
        let taken = a.admit(&room(1)).await.expect("admission");
        let id = taken[0].id;
        a.start_run(&StartRun {
            id,
            started_at: 5,
            queue_ms: 4,
            process: None,
        })
        .await
        .expect("a start");
        a.finish_run(&finished(id, Status::Succeeded))
            .await
            .expect("a finish");

        let window = db.job_window("report", 0, 100, 10).await.expect("a window");
        let statuses: Vec<Status> = window.iter().map(|run| run.status).collect();
        assert_eq!(
            statuses,
            [Status::Queued, Status::Queued, Status::Succeeded]
        );
        assert_eq!(window[2].duration_ms(), Some(5));
        assert_eq!(window[0].waiting_since(), Some(3));
        assert_eq!(
            db.job_window("report", 0, 100, 1)
                .await
                .expect("a window")
                .len(),
            1
        );
        let names = ["none".to_owned(), "report".to_owned()];
        let figures = db.jobs_figures(&names, 0, 100, 10).await.expect("figures");
        let (stats, read) = &figures[1];
        assert_eq!(
            (stats.runs, stats.succeeded, *read),
            (1, 1, 1),
            "over the runs that ended"
        );
        let cli = db.stats(Some("report"), Some(0)).await.expect("stats");
        assert_eq!(*stats, cli[0], "as `pacer stats` counts");
        assert_eq!((figures[0].0.runs, figures[0].1), (0, 0));
        assert_eq!(
            db.jobs_figures(&names, 0, 100, 0).await.expect("figures")[1].1,
            0,
            "at most the limit"
        );
        let recent = db.recent_runs(&names, 2).await.expect("recent runs");
        assert!(recent[0].is_empty());
        let ids: Vec<i64> = recent[1].iter().map(|run| run.id).collect();
        assert_eq!(ids, [window[0].id, window[1].id], "the newest first");
        assert_eq!(
            db.jobs_with_runs(&names, 0, 100).await.expect("probes"),
            ["report"]
        );
        assert!(
            db.jobs_with_runs(&names, 100, 200)
                .await
                .expect("probes")
                .is_empty()
        );

        let spans = db.spans(0, 100, 0, 10).await.expect("spans");
        assert_eq!(spans.len(), 3, "{spans:?}");
        let ran = spans
            .iter()
            .find(|s| s.started_at.is_some())
            .expect("the run");
        let waited = window[2].queue_ms.expect("its queue wait");
        assert_eq!((ran.waiting_from, ran.finished_at), (5 - waited, Some(10)));
        assert_eq!(
            spans.iter().filter(|s| s.started_at.is_none()).count(),
            2,
            "the fires that wait"
        );

        let capped = db
            .run_capped(id, 2)
            .await
            .expect("a run")
            .expect("it exists");
        assert_eq!(capped.detail.output, "ut");
        assert_eq!(capped.stored_output, 3);
        assert_eq!(capped.detail.record.node, Some(Some("a".to_owned())));
        assert_eq!(capped.detail.params["password"], "********");
        let hidden = db
            .run_capped(id, 0)
            .await
            .expect("a run")
            .expect("it exists");
        assert_eq!(
            (hidden.detail.output.as_str(), hidden.stored_output),
            ("", 3)
        );
        assert!(db.run_capped(999, 0).await.expect("no run").is_none());

        let mut chained = super::fire(report, Trigger::Chained, 10);
        chained.params = std::sync::Arc::new(serde_json::json!({"upstream": {"id": id}}));
        a.claim(&[super::Proposal::of(
            report,
            super::ClaimKey::Chained {
                job: "report".to_owned(),
                upstream: id,
            },
            chained,
        )])
        .await
        .expect("a chained claim");
        let upstream = crate::store::RunRecord::from(
            db.runs(&HistoryQuery {
                limit: 50,
                ..HistoryQuery::default()
            })
            .await
            .expect("history")
            .into_iter()
            .find(|run| run.record.id == id)
            .expect("the upstream run"),
        );
        let downstream = db.downstream(&upstream, 600_000).await.expect("its chain");
        assert_eq!(downstream.len(), 1, "{downstream:?}");
        assert_eq!(downstream[0].trigger, Trigger::Chained);

        let chained_only = db
            .runs(&HistoryQuery {
                trigger: Some(Trigger::Chained),
                limit: 50,
                ..HistoryQuery::default()
            })
            .await
            .expect("filtered by trigger");
        assert_eq!(chained_only.len(), 1);
        assert_eq!(chained_only[0].record.id, downstream[0].id);
    });
}
