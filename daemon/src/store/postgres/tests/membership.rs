//! Joining, heartbeats, fencing and reaping; migrations racing; partitions through a proxy;
//! a database restart; TLS.

use std::time::Duration;

use pacer_tests::postgres::{Options, Postgres};
use pacer_tests::proxy::Proxy;

use super::{
    HEARTBEAT, LEASE, config, connect, database, epoch, finished, job, join, manual, request, room,
    run, sql,
};
use crate::model::Status;
use crate::store::postgres::{ClusterError, FinishOutcome, PgNode};

const JOBS: &str = r#"
[[jobs]]
name = "keep"
plugin = "exec"
overlap = "allow"
recover = "retry"

[[jobs]]
name = "drop"
plugin = "exec"
overlap = "allow"
"#;

#[test]
fn migrations_run_once_when_nodes_start_together() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let db = connect(&pg.url()).await;
            tasks.push(tokio::spawn(async move { db.migrate().await }));
        }
        for task in tasks {
            task.await
                .expect("the task ends")
                .expect("the migration succeeds or waits");
        }
        assert_eq!(
            sql(&pg, "SELECT count(*) FROM pacer_schema"),
            super::super::schema::MIGRATIONS.len().to_string(),
            "each migration ran once"
        );
        assert_eq!(sql(&pg, "SELECT count(*) FROM cluster"), "1");
    });
}

#[test]
fn a_live_node_id_is_refused_and_a_dead_ones_runs_are_taken_over() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let db = database(&pg).await;
        let (_dir, cfg) = config("", JOBS);
        let first = join(&db, "web-1", &cfg).await;
        first
            .claim(&[manual(job(&cfg, "keep"), 1)])
            .await
            .expect("a claim");
        let run_id = first.admit(&room(1)).await.expect("admission")[0].id;

        let mut elsewhere = request("web-1", &cfg);
        elsewhere.host = "host-other".to_owned();
        let refused = PgNode::join(&db, elsewhere)
            .await
            .expect_err("the id is taken");
        let message = refused.to_string();
        assert!(
            message.contains("host-web-1")
                && message.contains(&format!("pid {}", std::process::id())),
            "the refusal names the holder's host and pid: {message}"
        );

        // The same host, with the holder's process gone: taken over at once, its run
        // abandoned and, as its job asks, retried once.
        let mut restarted = request("web-1", &cfg);
        restarted.pid = dead_pid();
        sql(
            &pg,
            &format!("UPDATE nodes SET pid = {} WHERE id = 'web-1'", dead_pid()),
        );
        let joined = PgNode::join(&db, restarted)
            .await
            .expect("a restart takes over");
        let previous = joined.previous.expect("the old incarnation's runs");
        assert_eq!(previous.abandoned.len(), 1);
        assert_eq!(previous.abandoned[0].id, run_id);
        assert_eq!(previous.retries.len(), 1);
        assert!(joined.node.incarnation() > first.incarnation());
        assert_eq!(
            sql(&pg, &format!("SELECT status FROM runs WHERE id = {run_id}")),
            "abandoned"
        );
        assert_eq!(
            first
                .finish_run(&finished(run_id, Status::Succeeded))
                .await
                .expect("a finish"),
            FinishOutcome::Fenced,
            "the old process's end is not written"
        );
        assert!(matches!(
            first.heartbeat(0, epoch()).await,
            Err(ClusterError::Fenced { .. })
        ));
    });
}

#[test]
fn a_silent_node_is_declared_dead_once_and_its_retries_queued_once() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let db = database(&pg).await;
        let (_dir, cfg) = config("", JOBS);
        let dying = join(&db, "dying", &cfg).await;
        let b = join(&db, "b", &cfg).await;
        let c = join(&db, "c", &cfg).await;
        dying
            .claim(&[manual(job(&cfg, "keep"), 1), manual(job(&cfg, "drop"), 2)])
            .await
            .expect("a claim");
        let taken = dying.admit(&room(2)).await.expect("admission");
        assert_eq!(taken.len(), 2);
        let t0 = epoch();
        // Both observers beat along; the dying node does not.
        let mut at = t0;
        for node in [&b, &c] {
            node.heartbeat(0, at).await.expect("a beat");
            assert!(node.reap(at).await.expect("a look").is_empty());
        }
        while at < t0 + LEASE - HEARTBEAT {
            at += HEARTBEAT;
            for node in [&b, &c] {
                node.heartbeat(0, at).await.expect("a beat");
                assert!(
                    node.reap(at).await.expect("a look").is_empty(),
                    "nobody is dead before the lease"
                );
            }
        }
        at += HEARTBEAT * 2;
        b.heartbeat(0, at).await.expect("a beat");
        c.heartbeat(0, at).await.expect("a beat");
        let (by_b, by_c) = tokio::join!(b.reap(at), c.reap(at));
        let mut reaped = by_b.expect("b looks");
        reaped.extend(by_c.expect("c looks"));
        assert_eq!(reaped.len(), 1, "one observer declares it dead: {reaped:?}");
        assert_eq!(reaped[0].node, "dying");
        assert_eq!(reaped[0].abandoned.len(), 2);
        assert_eq!(
            reaped[0].retries.len(),
            1,
            "only the job with recover = retry"
        );
        assert_eq!(
            sql(
                &pg,
                "SELECT count(*) FROM runs WHERE trigger = 'retry' AND fire_key LIKE 'r:%'"
            ),
            "1"
        );
        assert_eq!(
            sql(&pg, "SELECT state FROM nodes WHERE id = 'dying'"),
            "dead"
        );
        assert_eq!(
            sql(
                &pg,
                "SELECT count(*) FROM runs WHERE status = 'abandoned'
                      AND finished_at = (SELECT last_beat_at FROM nodes WHERE id = 'dying')"
            ),
            "2",
            "abandoned runs end at their node's last beat"
        );
        // Fenced: the dead node can neither finish, admit nor beat.
        assert_eq!(
            dying
                .finish_run(&finished(taken[0].id, Status::Succeeded))
                .await
                .expect("a finish"),
            FinishOutcome::Fenced
        );
        assert!(matches!(
            dying.admit(&room(2)).await,
            Err(ClusterError::Fenced { .. })
        ));
        assert!(matches!(
            dying.heartbeat(2, at).await,
            Err(ClusterError::Fenced { .. })
        ));
        // The retry runs on a live node.
        let retry = b.admit(&room(2)).await.expect("admission");
        assert_eq!(retry.len(), 1);
        assert_eq!(retry[0].job, "keep");
        assert_eq!(retry[0].attempt, 2);
    });
}

#[test]
fn a_cut_shorter_than_the_lease_abandons_nothing_and_a_longer_one_fences() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let db = database(&pg).await;
        let (_dir, cfg) = config("", JOBS);
        let proxy = Proxy::to_port(pg.port());
        let via_proxy = connect(&pg.url_via(proxy.port(), "")).await;
        let cut_off = join(&via_proxy, "cut-off", &cfg).await;
        let watcher = join(&db, "watcher", &cfg).await;
        cut_off
            .claim(&[manual(job(&cfg, "drop"), 1)])
            .await
            .expect("a claim");
        let running = cut_off.admit(&room(1)).await.expect("admission")[0].id;
        let t0 = epoch();
        cut_off.heartbeat(1, t0).await.expect("a beat");
        watcher.heartbeat(0, t0).await.expect("a beat");
        watcher.reap(t0).await.expect("a look");

        proxy.cut();
        let failed = cut_off.heartbeat(1, t0 + HEARTBEAT).await;
        assert!(
            failed.as_ref().is_err_and(ClusterError::is_transient),
            "a cut is an error to retry, not a fence: {failed:?}"
        );
        let mut at = t0;
        while at < t0 + LEASE - HEARTBEAT {
            at += HEARTBEAT;
            watcher.heartbeat(0, at).await.expect("a beat");
            assert!(watcher.reap(at).await.expect("a look").is_empty());
        }
        proxy.restore();
        let back = wait_for_beat(&cut_off, 1, at).await;
        assert!(back.cancel.is_empty());
        at += HEARTBEAT;
        watcher.heartbeat(0, at).await.expect("a beat");
        assert!(
            watcher.reap(at).await.expect("a look").is_empty(),
            "it beat again in time"
        );

        proxy.cut();
        let cut_at = at;
        while at < cut_at + LEASE + HEARTBEAT {
            at += HEARTBEAT;
            watcher.heartbeat(0, at).await.expect("a beat");
            let reaped = watcher.reap(at).await.expect("a look");
            if !reaped.is_empty() {
                assert_eq!(reaped[0].abandoned[0].id, running);
                break;
            }
        }
        assert_eq!(
            sql(&pg, "SELECT state FROM nodes WHERE id = 'cut-off'"),
            "dead"
        );
        proxy.restore();
        let fenced = loop {
            match cut_off.heartbeat(1, at).await {
                Err(ClusterError::Fenced { .. }) => break true,
                Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
                other => panic!("expected a fence, got {other:?}"),
            }
        };
        assert!(fenced);
    });
}

#[test]
fn a_database_restart_shorter_than_the_lease_abandons_nothing() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let db = database(&pg).await;
        let (_dir, cfg) = config("", JOBS);
        let a = join(&db, "a", &cfg).await;
        let b = join(&db, "b", &cfg).await;
        a.claim(&[manual(job(&cfg, "drop"), 1)])
            .await
            .expect("a claim");
        a.admit(&room(1)).await.expect("admission");
        let t0 = epoch();
        a.heartbeat(1, t0).await.expect("a beat");
        b.heartbeat(0, t0).await.expect("a beat");
        b.reap(t0).await.expect("a look");
        pg.restart_immediate();
        // Nobody could beat while the database was away; the observer's first beat after it
        // counts as the start of its watch, so the others' silence during it does not count.
        let after = t0 + LEASE * 2;
        let beat = wait_for_beat(&b, 0, after).await;
        assert!(beat.db_now > 0);
        assert!(b.reap(after).await.expect("a look").is_empty());
        wait_for_beat(&a, 1, after + HEARTBEAT).await;
        assert!(b.reap(after + HEARTBEAT).await.expect("a look").is_empty());
        assert_eq!(
            sql(&pg, "SELECT count(*) FROM runs WHERE status = 'running'"),
            "1"
        );
    });
}

#[test]
fn a_clean_stop_hands_its_runs_over_without_waiting_for_the_lease() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let db = database(&pg).await;
        let (_dir, cfg) = config("", JOBS);
        let a = join(&db, "a", &cfg).await;
        a.claim(&[manual(job(&cfg, "keep"), 1)])
            .await
            .expect("a claim");
        a.admit(&room(1)).await.expect("admission");
        a.stopping().await.expect("stopping");
        a.claim(&[manual(job(&cfg, "keep"), 2)])
            .await
            .expect("a claim");
        assert!(
            a.admit(&room(1)).await.expect("admission").is_empty(),
            "a stopping node takes no run"
        );
        let reaped = a.stopped().await.expect("stopped");
        assert_eq!(reaped.abandoned.len(), 1);
        assert_eq!(reaped.retries.len(), 1);
        assert_eq!(
            sql(&pg, "SELECT state FROM nodes WHERE id = 'a'"),
            "stopped"
        );
        let again = join(&db, "a", &cfg).await;
        assert!(
            again.incarnation() > a.incarnation(),
            "a stopped node's id is free at once"
        );
    });
}

#[test]
fn verify_full_connects_with_the_ca_file_and_refuses_another_ca() {
    let ca = pacer_test_pki::TestCa::new();
    let (cert, key) = ca.server_pem(&["127.0.0.1", "localhost"]);
    let Some(pg) = Postgres::start_with(&Options {
        tls: Some((cert, key)),
    }) else {
        return;
    };
    let dir = tempfile::tempdir().expect("a directory");
    let trusted = ca.save(dir.path());
    let stranger_dir = tempfile::tempdir().expect("a directory");
    let stranger = pacer_test_pki::TestCa::stranger().save(stranger_dir.path());
    run(async {
        let good = connect(&pg.url_via(
            pg.port(),
            &format!("sslmode=verify-full&sslrootcert={}", trusted.display()),
        ))
        .await;
        good.migrate()
            .await
            .expect("verify-full connects with the CA file");
        assert_ne!(
            sql(&pg, "SELECT count(*) FROM pg_stat_ssl WHERE ssl"),
            "0",
            "the pool's connection is encrypted (psql's, on the socket, is not)"
        );
        let bad = connect(&pg.url_via(
            pg.port(),
            &format!("sslmode=verify-full&sslrootcert={}", stranger.display()),
        ))
        .await;
        let error = bad.migrate().await.expect_err("an unknown CA is refused");
        assert!(error.to_string().contains("certificate"), "{error}");
        let by_name = connect(&format!(
            "postgresql://pacer:pacer-test@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
            pg.port(),
            trusted.display()
        ))
        .await;
        by_name
            .migrate()
            .await
            .expect("the name in the certificate matches");
    });
}

/// Beats until the database answers again.
async fn wait_for_beat(
    node: &PgNode,
    in_flight: u32,
    at: std::time::Instant,
) -> crate::store::postgres::Beat {
    let deadline = std::time::Instant::now() + pacer_tests::DEADLINE;
    loop {
        match node.heartbeat(in_flight, at).await {
            Ok(beat) => return beat,
            Err(e) if e.is_transient() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the node could not beat again: {e}"),
        }
    }
}

/// A pid that no process has: a child's, after it was reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("true runs");
    let pid = child.id();
    child.wait().expect("true ends");
    pid
}
