//! The protocol on a real PostgreSQL (`pacer_tests::postgres`), with several [`PgNode`]s as
//! nodes on one database, racing where the protocol must hold under races. Without
//! PostgreSQL installed each test says so and passes, except under `CI=true`.

mod membership;
mod protocol;
mod reads;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_tests::postgres::Postgres;

use super::{ClaimKey, JoinRequest, PgDatabase, PgNode, Proposal, Room};
use crate::admission::Limits;
use crate::config::{Config, DatabaseUrl, Job, UrlSource, load_text};
use crate::model::Status;
use crate::model::Trigger;
use crate::store::{Finish, NewFire};

/// A short lease, so that tests that pass instants stay readable.
const LEASE: Duration = Duration::from_secs(3);
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Runs `test` on a runtime of its own.
fn run<F: Future<Output = ()>>(test: F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(test);
}

/// A database on a new server, migrated.
async fn database(pg: &Postgres) -> PgDatabase {
    let db = connect(&pg.url()).await;
    db.migrate().await.expect("the schema is made");
    db
}

async fn connect(url: &str) -> PgDatabase {
    let url = DatabaseUrl::parse(url, std::path::Path::new("/"), UrlSource::Inline)
        .expect("the URL parses");
    PgDatabase::connect(&url, 4).expect("a pool")
}

/// A config with `jobs` (TOML `[[jobs]]` entries) and `extra` before them.
fn config(extra: &str, jobs: &str) -> (tempfile::TempDir, Arc<Config>) {
    let (dir, config) = load_text(&format!("{extra}\n{jobs}"));
    (dir, Arc::new(config))
}

fn job<'a>(config: &'a Config, name: &str) -> &'a Arc<Job> {
    config.job(name).expect("the job is in the config")
}

/// What node `id` says when it joins with `config`.
fn request(id: &str, config: &Config) -> JoinRequest {
    JoinRequest {
        node: id.to_owned(),
        host: format!("host-{id}"),
        pid: std::process::id(),
        boot_id: "boot".to_owned(),
        plugins: vec!["exec".to_owned()],
        pools: None,
        max_concurrency: None,
        jobs: config
            .jobs
            .iter()
            .map(|job| (job.name.clone(), job.digest()))
            .collect(),
        limits: Limits::of(config),
        lease_ttl: LEASE,
        heartbeat: HEARTBEAT,
    }
}

async fn join(db: &PgDatabase, id: &str, config: &Config) -> PgNode {
    PgNode::join(db, request(id, config))
        .await
        .unwrap_or_else(|e| panic!("{id} joins: {e}"))
        .node
}

/// A scheduled fire of `job` due at `at`.
fn scheduled(job: &Arc<Job>, at: i64) -> Proposal {
    Proposal::of(
        job,
        ClaimKey::Schedule {
            job: job.name.clone(),
            at,
        },
        fire(job, Trigger::Schedule, at),
    )
}

/// A manual fire of `job` at `at`.
fn manual(job: &Arc<Job>, at: i64) -> Proposal {
    Proposal::of(
        job,
        ClaimKey::manual().expect("a UUID"),
        fire(job, Trigger::Manual, at),
    )
}

fn fire(job: &Arc<Job>, trigger: Trigger, at: i64) -> NewFire {
    NewFire {
        job: job.name.clone(),
        plugin: job.plugin.clone(),
        trigger,
        attempt: 1,
        scheduled_at: at,
        accepted_at: at,
        params: Arc::clone(&job.params),
        own_params: false,
        advances_schedule: matches!(trigger, Trigger::Schedule | Trigger::CatchUp),
    }
}

/// Room for `slots` runs of the `exec` plugin.
fn room(slots: u32) -> Room {
    Room {
        slots,
        plugins: vec!["exec".to_owned()],
    }
}

/// `psql`'s answer as one trimmed string.
fn sql(pg: &Postgres, query: &str) -> String {
    pg.psql(query).trim().to_owned()
}

/// A base instant for tests that pass instants to heartbeats and reaps.
fn epoch() -> Instant {
    Instant::now()
}

/// A run's end at 10 ms, with a little output.
fn finished(id: i64, status: Status) -> Finish {
    Finish {
        id,
        status,
        finished_at: 10,
        error: None,
        message: None,
        output: b"out".to_vec(),
        output_dropped: 0,
    }
}
