//! Claims, overlap, caps and the queue bound across nodes.

use std::collections::HashSet;
use std::sync::Arc;

use pacer_tests::postgres::Postgres;

use super::{config, database, finished as finish, job, join, manual, room, run, scheduled, sql};
use crate::admission::SkipKind;
use crate::model::Status;
use crate::store::postgres::{FinishOutcome, Outcome};

const JOBS: &str = r#"
[[jobs]]
name = "every"
plugin = "exec"
schedule = "* * * * * *"
overlap = "allow"

[[jobs]]
name = "skip"
plugin = "exec"

[[jobs]]
name = "queue"
plugin = "exec"
overlap = "queue"

[[jobs]]
name = "replace"
plugin = "exec"
overlap = "replace"
"#;

#[test]
fn each_fire_is_claimed_once_however_many_nodes_race() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let db = database(&pg).await;
        let (_dir, cfg) = config("", JOBS);
        let every = job(&cfg, "every");
        let mut nodes = Vec::new();
        for id in ["a", "b", "c"] {
            nodes.push(Arc::new(join(&db, id, &cfg).await));
        }
        // Every node proposes the same 60 fires, in batches of 10, from 4 tasks each.
        let mut tasks = Vec::new();
        for node in &nodes {
            for _ in 0..4 {
                let node = Arc::clone(node);
                let every = Arc::clone(every);
                tasks.push(tokio::spawn(async move {
                    let mut queued = Vec::new();
                    for batch in 0..6 {
                        let proposals: Vec<_> = (0..10)
                            .map(|i| scheduled(&every, 1_000 * (batch * 10 + i + 1)))
                            .collect();
                        let claimed = node.claim(&proposals).await.expect("a claim");
                        for (proposal, outcome) in proposals.iter().zip(claimed.outcomes) {
                            match outcome {
                                Outcome::Queued { id, .. } => {
                                    queued.push((proposal.key.to_string(), id));
                                }
                                Outcome::Taken => {}
                                other => panic!("unexpected {other:?}"),
                            }
                        }
                    }
                    queued
                }));
            }
        }
        let mut keys = HashSet::new();
        for task in tasks {
            for (key, _) in task.await.expect("the task ends") {
                assert!(keys.insert(key.clone()), "{key} was claimed twice");
            }
        }
        assert_eq!(keys.len(), 60, "every fire is claimed by someone");
        assert_eq!(sql(&pg, "SELECT count(*) FROM runs"), "60");
        assert_eq!(
            sql(&pg, "SELECT last_fire FROM job_state WHERE job = 'every'"),
            "60000"
        );
        // A node that lags behind proposes fires already taken: none is recorded again.
        let late = nodes[0]
            .claim(&[scheduled(every, 30_000), scheduled(every, 61_000)])
            .await
            .expect("a claim");
        assert_eq!(late.outcomes[0], Outcome::Taken);
        assert!(matches!(late.outcomes[1], Outcome::Queued { .. }));
    });
}

#[test]
fn overlap_policies_see_every_nodes_runs() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let db = database(&pg).await;
        let (_dir, cfg) = config("", JOBS);
        let a = join(&db, "a", &cfg).await;
        let b = join(&db, "b", &cfg).await;

        // skip: a's run goes on, so b's fire is skipped, saying which run.
        let first = a
            .claim(&[manual(job(&cfg, "skip"), 1)])
            .await
            .expect("a claim");
        assert!(matches!(
            first.outcomes[0],
            Outcome::Queued { reason: None, .. }
        ));
        let started = a.admit(&room(4)).await.expect("admission");
        assert_eq!(started.len(), 1);
        let running = started[0].id;
        let second = b
            .claim(&[manual(job(&cfg, "skip"), 2)])
            .await
            .expect("a claim");
        let Outcome::Skipped { reason, kind, .. } = &second.outcomes[0] else {
            panic!("{:?}", second.outcomes);
        };
        assert_eq!(*kind, SkipKind::Overlap);
        assert_eq!(
            reason,
            &format!("run {running} of `skip` is still running (overlap = \"skip\")")
        );

        // queue: one fire waits for the run on the other node, a second is skipped.
        a.claim(&[manual(job(&cfg, "queue"), 1)])
            .await
            .expect("a claim");
        let queue_run = a.admit(&room(4)).await.expect("admission")[0].id;
        let held = b
            .claim(&[manual(job(&cfg, "queue"), 2)])
            .await
            .expect("a claim");
        let Outcome::Queued {
            id: held_id,
            reason: Some(reason),
        } = &held.outcomes[0]
        else {
            panic!("{:?}", held.outcomes);
        };
        assert_eq!(
            reason,
            "waiting for the previous run of `queue` to end (overlap)"
        );
        let third = b
            .claim(&[manual(job(&cfg, "queue"), 3)])
            .await
            .expect("a claim");
        assert!(
            matches!(&third.outcomes[0], Outcome::Skipped { reason, .. }
                if reason.ends_with("(overlap = \"queue\" holds at most one)")),
            "{:?}",
            third.outcomes
        );
        assert!(
            b.admit(&room(4)).await.expect("admission").is_empty(),
            "the held fire waits while the run goes on"
        );
        assert_eq!(
            a.finish_run(&finish(queue_run, Status::Succeeded))
                .await
                .expect("a finish"),
            FinishOutcome::Written
        );
        let next = b.admit(&room(4)).await.expect("admission");
        assert_eq!(
            next.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![*held_id]
        );

        // replace: b's fire stops a's run (a hears it in its next beat) and waits for it.
        a.claim(&[manual(job(&cfg, "replace"), 1)])
            .await
            .expect("a claim");
        let old = a.admit(&room(4)).await.expect("admission")[0].id;
        let replacing = b
            .claim(&[manual(job(&cfg, "replace"), 2)])
            .await
            .expect("a claim");
        assert_eq!(replacing.stops.len(), 1);
        assert_eq!(replacing.stops[0].id, old);
        assert_eq!(replacing.stops[0].node, "a");
        let beat = a
            .heartbeat(3, std::time::Instant::now())
            .await
            .expect("a beat");
        assert_eq!(beat.cancel, vec![old]);
    });
}

#[test]
fn caps_hold_across_nodes_and_finishing_frees_a_slot() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let db = database(&pg).await;
        let extra = "[daemon]\nmax_concurrency = 3\n[pools.small]\nmax_concurrency = 1\n";
        let jobs = format!(
            "{JOBS}\n[[jobs]]\nname = \"small\"\nplugin = \"exec\"\npool = \"small\"\noverlap = \"allow\"\n"
        );
        let (_dir, cfg) = config(extra, &jobs);
        let nodes = [
            Arc::new(join(&db, "a", &cfg).await),
            Arc::new(join(&db, "b", &cfg).await),
            Arc::new(join(&db, "c", &cfg).await),
        ];
        let mut proposals = Vec::new();
        for i in 0..10 {
            proposals.push(manual(job(&cfg, "every"), i));
            proposals.push(manual(job(&cfg, "small"), i));
        }
        nodes[0].claim(&proposals).await.expect("a claim");
        let mut tasks = Vec::new();
        for node in &nodes {
            let node = Arc::clone(node);
            tasks.push(tokio::spawn(async move {
                let mut taken = Vec::new();
                for _ in 0..5 {
                    taken.extend(node.admit(&room(10)).await.expect("admission"));
                }
                taken
            }));
        }
        let mut admitted = Vec::new();
        for task in tasks {
            admitted.extend(task.await.expect("the task ends"));
        }
        assert_eq!(admitted.len(), 3, "the global cap holds across nodes");
        assert_eq!(
            admitted.iter().filter(|run| run.job == "small").count(),
            1,
            "the pool's cap holds across nodes"
        );
        assert_eq!(
            sql(&pg, "SELECT count(*) FROM runs WHERE status = 'running'"),
            "3"
        );
        let owner = nodes
            .iter()
            .find(|node| {
                sql(
                    &pg,
                    &format!("SELECT node FROM runs WHERE id = {}", admitted[0].id),
                ) == node.id()
            })
            .expect("the run has a node");
        owner
            .finish_run(&finish(admitted[0].id, Status::Failed))
            .await
            .expect("a finish");
        assert_eq!(nodes[2].admit(&room(10)).await.expect("admission").len(), 1);
    });
}

#[test]
fn the_queue_bound_is_cluster_wide_and_keeps_the_highest_priority() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let db = database(&pg).await;
        let jobs = format!(
            "{JOBS}\n[[jobs]]\nname = \"urgent\"\nplugin = \"exec\"\npriority = 5\noverlap = \"allow\"\n"
        );
        let (_dir, cfg) = config("[daemon]\nmax_queue = 3\n", &jobs);
        let a = join(&db, "a", &cfg).await;
        let b = join(&db, "b", &cfg).await;
        let every = job(&cfg, "every");
        let first: Vec<_> = (1..=2).map(|i| manual(every, i)).collect();
        a.claim(&first).await.expect("a claim");
        let more = b
            .claim(&[manual(every, 3), manual(every, 4)])
            .await
            .expect("a claim");
        assert!(matches!(more.outcomes[0], Outcome::Queued { .. }));
        let Outcome::Skipped { reason, kind, .. } = &more.outcomes[1] else {
            panic!("{:?}", more.outcomes);
        };
        assert_eq!(*kind, SkipKind::QueueFull);
        assert_eq!(
            reason,
            "the queue is full: 3 fires wait for a slot (max_queue = 3)"
        );
        let urgent = a
            .claim(&[manual(job(&cfg, "urgent"), 5)])
            .await
            .expect("a claim");
        assert!(matches!(urgent.outcomes[0], Outcome::Queued { .. }));
        assert_eq!(
            urgent.withdrawn.len(),
            1,
            "the worst waiting fire made room"
        );
        assert!(
            urgent.withdrawn[0]
                .1
                .ends_with("and fires of higher priority came")
        );
        assert_eq!(
            sql(&pg, "SELECT count(*) FROM runs WHERE status = 'queued'"),
            "3"
        );
        let first_out = a.admit(&room(1)).await.expect("admission");
        assert_eq!(first_out[0].job, "urgent", "priority first, across nodes");
    });
}

#[test]
fn a_paused_job_leaves_no_record_and_its_schedule_moves_on() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let db = database(&pg).await;
        let (_dir, cfg) = config("", JOBS);
        let a = join(&db, "a", &cfg).await;
        db.set_paused("every", true).await.expect("paused");
        let claimed = a
            .claim(&[
                scheduled(job(&cfg, "every"), 5_000),
                manual(job(&cfg, "every"), 6),
            ])
            .await
            .expect("a claim");
        assert_eq!(claimed.outcomes[0], Outcome::Paused);
        assert!(
            matches!(claimed.outcomes[1], Outcome::Queued { .. }),
            "a manual run is not paused"
        );
        assert_eq!(
            sql(&pg, "SELECT last_fire FROM job_state WHERE job = 'every'"),
            "5000"
        );
        assert_eq!(sql(&pg, "SELECT count(*) FROM runs"), "1");
    });
}

#[test]
fn a_node_whose_job_differs_neither_claims_nor_runs_it() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let db = database(&pg).await;
        let (dir, old) = config("", JOBS);
        // The same file with one job changed, as a node that reloaded sees it.
        let changed = JOBS.replace(
            "name = \"skip\"\nplugin = \"exec\"",
            "name = \"skip\"\nplugin = \"exec\"\npriority = 3",
        );
        let path = dir.path().join("pacer.toml");
        std::fs::write(&path, changed).expect("the config is written");
        let new = crate::config::load(
            &path,
            crate::config::Environment {
                can_switch_users: true,
                can_run_as_root: false,
            },
        )
        .expect("the changed config loads");
        let a = join(&db, "a", &old).await;
        let b = join(&db, "b", &new).await;
        let claimed = a
            .claim(&[manual(job(&old, "skip"), 1)])
            .await
            .expect("a claim");
        assert_eq!(
            claimed.outcomes[0],
            Outcome::JobDiffers,
            "b's later config is the cluster's"
        );
        b.claim(&[manual(job(&new, "skip"), 1)])
            .await
            .expect("a claim");
        assert!(a.admit(&room(4)).await.expect("admission").is_empty());
        assert_eq!(b.admit(&room(4)).await.expect("admission").len(), 1);
        let nodes = db.nodes().await.expect("nodes");
        assert_eq!(nodes[0].node, "a");
        assert_eq!(nodes[0].drift, vec!["skip".to_owned()]);
        assert!(nodes[1].drift.is_empty());
    });
}

#[test]
fn a_claim_wakes_the_listeners() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let db = database(&pg).await;
        let (_dir, cfg) = config("", JOBS);
        let a = join(&db, "a", &cfg).await;
        let woken = db.listen();
        let wait = || tokio::time::timeout(pacer_tests::DEADLINE, woken.notified());
        wait().await.expect("woken once it listens");
        a.claim(&[manual(job(&cfg, "every"), 1)])
            .await
            .expect("a claim");
        wait().await.expect("woken by the claim");
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(300), woken.notified())
                .await
                .is_err(),
            "one claim, one wake-up"
        );
    });
}

#[test]
fn a_node_takes_only_runs_of_its_plugins_and_its_pools() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let db = database(&pg).await;
        let (_dir, cfg) = config(
            "[pools.mail]\nmax_concurrency = 4\n",
            r#"
[[jobs]]
name = "send"
plugin = "exec"
pool = "mail"
overlap = "allow"

[[jobs]]
name = "local"
plugin = "exec"
overlap = "allow"

[[jobs]]
name = "fetch"
plugin = "http"
overlap = "allow"
"#,
        );
        let mut only_mail = super::request("mailer", &cfg);
        only_mail.pools = Some(vec!["mail".to_owned()]);
        let mailer = crate::store::postgres::PgNode::join(&db, only_mail)
            .await
            .expect("mailer joins")
            .node;
        let any = join(&db, "any", &cfg).await;
        any.claim(&[
            manual(job(&cfg, "local"), 1),
            manual(job(&cfg, "fetch"), 2),
            manual(job(&cfg, "send"), 3),
        ])
        .await
        .expect("a claim");
        let jobs = |taken: Vec<crate::store::postgres::AdmittedRun>| -> Vec<String> {
            taken.into_iter().map(|run| run.job).collect()
        };

        let taken = mailer.admit(&room(5)).await.expect("admission");
        assert_eq!(jobs(taken), ["send"], "the pool it serves, not the others");
        let taken = any.admit(&room(5)).await.expect("admission");
        assert_eq!(jobs(taken), ["local"], "only the plugins it has");
        let with_http = crate::store::postgres::Room {
            slots: 5,
            plugins: vec!["exec".to_owned(), "http".to_owned()],
        };
        let taken = any.admit(&with_http).await.expect("admission");
        assert_eq!(jobs(taken), ["fetch"]);
    });
}

#[test]
fn a_reboot_fire_is_recorded_once_per_boot_and_runs_on_its_own_node() {
    let Some(pg) = Postgres::start() else { return };
    run(async {
        let db = database(&pg).await;
        let (_dir, cfg) = config(
            "",
            "[[jobs]]\nname = \"warm\"\nplugin = \"exec\"\nschedule = \"@reboot\"\noverlap = \"allow\"\n",
        );
        let warm = job(&cfg, "warm");
        let at_boot = |boot_id: &str| {
            let mut fire = super::fire(warm, crate::model::Trigger::Schedule, 1);
            fire.advances_schedule = false;
            crate::store::postgres::Proposal::of(
                warm,
                crate::store::postgres::ClaimKey::Boot {
                    job: "warm".to_owned(),
                    boot_id: boot_id.to_owned(),
                },
                fire,
            )
        };
        let a = join(&db, "a", &cfg).await;
        let b = join(&db, "b", &cfg).await;
        a.claim(&[at_boot("boot-a")]).await.expect("a claims");
        // The same boot proposed again (a restart of pacerd without a reboot) is no new fire.
        a.claim(&[at_boot("boot-a")]).await.expect("a claims again");
        b.claim(&[at_boot("boot-b")]).await.expect("b claims");
        assert_eq!(
            sql(&pg, "SELECT count(*) FROM runs WHERE job = 'warm'"),
            "2",
            "one fire per boot"
        );

        let taken = b.admit(&room(5)).await.expect("admission");
        assert_eq!(taken.len(), 1, "b takes its own boot's fire, not a's");
        assert_eq!(taken[0].fire_key, "b:warm:boot-b");
        let taken = a.admit(&room(5)).await.expect("admission");
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].fire_key, "b:warm:boot-a");
    });
}
