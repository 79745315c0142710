//! The cluster's schema, as versioned migrations. A released migration is never edited: a
//! change is a new one appended to [`MIGRATIONS`].
//!
//! Migrations run in one transaction under a PostgreSQL advisory lock, so nodes that start
//! together wait for the first, then find the schema up to date.

use deadpool_postgres::Client;

use super::{ClusterError, db};

/// The advisory lock key the migrations run under ("pacer" in ASCII).
const MIGRATION_LOCK: i64 = 0x0070_6163_6572;

/// Every migration, oldest first; `pacer_schema` records how many have run.
pub(super) const MIGRATIONS: [&str; 4] = [V1, V2_WEB_VIEW, V3_JOB_AND_STATUS, V4_ENDED_RUNS_BY_JOB];

/// Brings the schema up to date.
pub(super) async fn migrate(client: &mut Client) -> Result<(), ClusterError> {
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS pacer_schema (version integer NOT NULL)")
        .await
        .map_err(db)?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM pacer_schema", &[])
        .await
        .map_err(db)?
        .get(0);
    let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    if found > known {
        return Err(ClusterError::SchemaTooNew { found, known });
    }
    for (version, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.batch_execute(sql).await.map_err(db)?;
        tx.execute(
            "INSERT INTO pacer_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)
}

/// The first schema. Instants are Unix milliseconds (`bigint`), as in SQLite; `pacer_now_ms()`
/// is the database's clock, the one every node's decisions are measured on.
const V1: &str = r"
CREATE FUNCTION pacer_now_ms() RETURNS bigint LANGUAGE sql VOLATILE
    AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

-- A node's incarnation is unique across the cluster's life, so a node id used again never
-- lets an old process's writes pass as the new one's.
CREATE SEQUENCE incarnations;
CREATE SEQUENCE claim_tokens;

-- One row: the lock that every decision spanning nodes takes, and the cluster-wide caps (the
-- last config a node loaded).
CREATE TABLE cluster (
    id              integer PRIMARY KEY CHECK (id = 1),
    max_concurrency integer NOT NULL,
    max_queue       integer NOT NULL
);
INSERT INTO cluster (id, max_concurrency, max_queue) VALUES (1, 8, 10000);

CREATE TABLE nodes (
    id              text    PRIMARY KEY,
    incarnation     bigint  NOT NULL,
    -- Moves with every heartbeat; peers judge liveness by whether it moves, on their own
    -- clocks, never by comparing clocks.
    beat            bigint  NOT NULL DEFAULT 0,
    state           text    NOT NULL CHECK (state IN ('alive', 'stopping', 'stopped', 'dead')),
    host            text    NOT NULL,
    pid             integer NOT NULL,
    boot_id         text    NOT NULL,
    plugins         text[]  NOT NULL,
    -- NULL: every pool.
    pools           text[],
    max_concurrency integer,
    joined_at       bigint  NOT NULL,
    -- The database clock at its last beat.
    last_beat_at    bigint  NOT NULL,
    -- Its wall clock minus the database's, as last measured.
    clock_offset_ms bigint  NOT NULL DEFAULT 0,
    in_flight       integer NOT NULL DEFAULT 0
);

-- Each node's digest of each job, so drift between nodes shows.
CREATE TABLE node_jobs (
    node   text NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    job    text NOT NULL,
    digest text NOT NULL,
    PRIMARY KEY (node, job)
);

-- Token buckets, refilled on the database clock.
CREATE TABLE pools (
    name            text             PRIMARY KEY,
    max_concurrency integer,
    rate            double precision,
    tokens          double precision NOT NULL DEFAULT 0,
    refilled_at     bigint           NOT NULL DEFAULT 0
);

CREATE TABLE job_state (
    job       text    PRIMARY KEY,
    last_fire bigint,
    paused    boolean NOT NULL DEFAULT false,
    -- The job's digest in the config the cluster follows: a node whose own differs does not
    -- propose the job's fires nor run them.
    digest    text,
    timing    text
);

CREATE TABLE runs (
    id               bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Names the fire across nodes: the one thing two nodes can never both insert.
    fire_key         text    NOT NULL UNIQUE,
    job              text    NOT NULL,
    plugin           text    NOT NULL,
    pool             text    NOT NULL,
    priority         integer NOT NULL,
    digest           text    NOT NULL,
    recover          boolean NOT NULL DEFAULT false,
    status           text    NOT NULL CHECK (status IN ('queued', 'running', 'succeeded',
                         'failed', 'timed_out', 'crashed', 'skipped', 'cancelled', 'abandoned')),
    trigger          text    NOT NULL CHECK (trigger IN ('schedule', 'manual', 'retry',
                         'catch_up', 'chained')),
    attempt          integer NOT NULL,
    scheduled_at     bigint  NOT NULL,
    queued_at        bigint,
    -- The database clock when it was claimed: its age in the queue.
    claimed_at       bigint  NOT NULL,
    -- Not admitted before this instant of the database clock (a retry's back-off).
    ready_at         bigint,
    -- Held back by `overlap = queue/replace` until its job's runs end.
    held             boolean NOT NULL DEFAULT false,
    -- Only this node may run it (an `@reboot` fire).
    pinned_to        text,
    started_at       bigint,
    finished_at      bigint,
    queue_ms         bigint,
    error            text,
    message          text,
    params           text,
    -- A fire's own params (manual, chained), unmasked, until it ends: a retry after its node
    -- died runs with exactly them.
    pending_params   text,
    pid              integer,
    pid_start        bigint,
    node             text,
    incarnation      bigint,
    claim_token      bigint,
    cancel_requested boolean NOT NULL DEFAULT false
);

-- `pacer history --job J`, newest first, paged by id; a job's newest status.
CREATE INDEX runs_by_job ON runs (job, id);
-- `pacer history --status S`, newest first, paged by id.
CREATE INDEX runs_by_status ON runs (status, id);
-- `--since`/`--until` windows, `pacer stats`, and retention.
CREATE INDEX runs_by_schedule ON runs (scheduled_at);
-- The overlap policy: a job's fires waiting or going, on every node.
CREATE INDEX runs_active_by_job ON runs (job) WHERE status IN ('queued', 'running');
-- Admission: queue heads by priority, then due time, then age.
CREATE INDEX runs_queue ON runs (priority DESC, scheduled_at, id)
    WHERE status = 'queued' AND NOT held;
-- Held fires to release once their job is idle.
CREATE INDEX runs_held ON runs (job) WHERE status = 'queued' AND held;
-- Caps: runs in flight per pool.
CREATE INDEX runs_running_by_pool ON runs (pool) WHERE status = 'running';
-- A node's runs: fencing, cancel requests, abandoning them when it dies.
CREATE INDEX runs_running_by_node ON runs (node, incarnation) WHERE status = 'running';

-- Output can be large; keeping it apart keeps the runs table dense for scans.
CREATE TABLE run_output (
    run_id  bigint PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    output  bytea  NOT NULL,
    dropped bigint NOT NULL
);
";

/// The web view's windows and filters. A job's runs are spread over the whole table, so its
/// window is read from an index that carries the columns drawn; the load under the timeline
/// likewise; the rare triggers are indexed for the runs page's filter.
const V2_WEB_VIEW: &str = r"
-- A job's runs in a window: its figures, charts and timeline row.
CREATE INDEX runs_by_job_schedule ON runs (job, scheduled_at)
    INCLUDE (status, trigger, attempt, queued_at, started_at, finished_at, queue_ms);
-- The runs that held a slot in a window: the load under the timeline.
CREATE INDEX runs_spans ON runs (scheduled_at) INCLUDE (started_at, finished_at, queue_ms, job)
    WHERE started_at IS NOT NULL;
-- The runs page's trigger filter, newest first. Only the rare triggers are indexed:
-- `schedule` is most rows, and walking the newest ids finds them at once.
CREATE INDEX runs_by_trigger ON runs (trigger, id) WHERE trigger <> 'schedule';
";

/// `pacer history --job J --status S` and the runs page with both filters, newest first.
const V3_JOB_AND_STATUS: &str = r"
CREATE INDEX runs_by_job_status ON runs (job, status, id);
";

/// Fewer index entries written per run. A run's start and end each write a new row version
/// into every index (the status changes, so no update is heap-only): the per-job window index
/// and the job-and-status index took two more entries per run. A job's window is now read in
/// two parts: the runs that ended, from an index of ended runs alone (one entry, when a run ends
/// or a fire is skipped), and the runs waiting or going, few, from `runs_by_status`, which now
/// carries the job (and so also serves `pacer history --job J --status S`).
const V4_ENDED_RUNS_BY_JOB: &str = r"
DROP INDEX runs_by_job_schedule;
DROP INDEX runs_by_job_status;
CREATE INDEX runs_ended_by_job ON runs (job, scheduled_at)
    INCLUDE (id, status, trigger, attempt, queued_at, started_at, finished_at, queue_ms)
    WHERE status NOT IN ('queued', 'running');
DROP INDEX runs_by_status;
CREATE INDEX runs_by_status ON runs (status, id) INCLUDE (job);
";
