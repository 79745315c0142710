//! The schema, as versioned migrations. A released migration is never edited: a change is a new
//! migration appended to the list, so every older database can still be opened.

use rusqlite_migration::{M, Migrations};

/// Every migration, oldest first. SQLite's `user_version` records how many have run.
///
/// Migrations run with foreign keys off (as SQLite's procedure for rebuilding a table asks),
/// and each checks the keys once it is done.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(V1),
        M::up(V2_QUEUED_FIRES).foreign_key_check(),
        M::up(WEB_VIEW),
        M::up(WEB_WINDOWS_FROM_INDEXES),
        M::up(JOB_AND_STATUS),
        M::up(ENDED_RUNS_BY_JOB),
    ])
}

pub(super) const V1: &str = r"
-- AUTOINCREMENT: a run id is never handed out twice, even after retention deleted the newest
-- rows, so `pacer show ID` and paging by id stay unambiguous.
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job          TEXT    NOT NULL,
    plugin       TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed',
                     'timed_out', 'crashed', 'skipped', 'cancelled', 'abandoned')),
    trigger      TEXT    NOT NULL CHECK (trigger IN ('schedule', 'manual', 'retry',
                     'catch_up', 'chained')),
    attempt      INTEGER NOT NULL,
    scheduled_at INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    queue_ms     INTEGER,
    error        TEXT,
    params       TEXT,
    pid          INTEGER,
    pid_start    INTEGER
);

-- `pacer history --job J`, newest first, paged by id.
CREATE INDEX runs_by_job ON runs (job, id);
-- `pacer history --status S`, newest first, paged by id.
CREATE INDEX runs_by_status ON runs (status, id);
-- `--since`/`--until` windows, `pacer stats`, and retention.
CREATE INDEX runs_by_schedule ON runs (scheduled_at);

-- Output can be large; keeping it apart keeps the runs table dense for scans.
CREATE TABLE run_output (
    run_id  INTEGER PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    output  BLOB    NOT NULL,
    dropped INTEGER NOT NULL
);

CREATE TABLE job_state (
    job       TEXT PRIMARY KEY,
    last_fire INTEGER,
    paused    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
";

/// Fires become records when accepted: status `queued`, when each was accepted, the params a
/// waiting fire of its own keeps for a restart, and a succeeded run's message. SQLite cannot
/// change a CHECK constraint in place, so `runs` is rebuilt (ids, and the counter that keeps
/// them from being reused, carried over).
const V2_QUEUED_FIRES: &str = r"
CREATE TABLE runs_v2 (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    job            TEXT    NOT NULL,
    plugin         TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'succeeded',
                       'failed', 'timed_out', 'crashed', 'skipped', 'cancelled', 'abandoned')),
    trigger        TEXT    NOT NULL CHECK (trigger IN ('schedule', 'manual', 'retry',
                       'catch_up', 'chained')),
    attempt        INTEGER NOT NULL,
    scheduled_at   INTEGER NOT NULL,
    queued_at      INTEGER,
    started_at     INTEGER,
    finished_at    INTEGER,
    queue_ms       INTEGER,
    error          TEXT,
    message        TEXT,
    params         TEXT,
    -- Only while queued, and only for a fire whose params are its own (manual, chained):
    -- unmasked, so a restart runs it with exactly them.
    pending_params TEXT,
    pid            INTEGER,
    pid_start      INTEGER
);

INSERT INTO runs_v2 (id, job, plugin, status, trigger, attempt, scheduled_at, started_at,
                     finished_at, queue_ms, error, params, pid, pid_start)
SELECT id, job, plugin, status, trigger, attempt, scheduled_at, started_at, finished_at,
       queue_ms, error, params, pid, pid_start
FROM runs;

DELETE FROM sqlite_sequence WHERE name = 'runs_v2';
INSERT INTO sqlite_sequence (name, seq) SELECT 'runs_v2', seq FROM sqlite_sequence WHERE name = 'runs';

DROP TABLE runs;
ALTER TABLE runs_v2 RENAME TO runs;

-- `pacer history --job J`, newest first, paged by id.
CREATE INDEX runs_by_job ON runs (job, id);
-- `pacer history --status S`, newest first, paged by id; the queued fires at start.
CREATE INDEX runs_by_status ON runs (status, id);
-- `--since`/`--until` windows, `pacer stats`, and retention.
CREATE INDEX runs_by_schedule ON runs (scheduled_at);

-- The job's timing when its last fire was written, so a start can tell it changed meanwhile.
ALTER TABLE job_state ADD COLUMN timing TEXT;
";

/// The web view's windows and filters. Its own migration, appended after the others.
const WEB_VIEW: &str = r"
-- A job's runs in a time window (the web view's per-job figures, charts and timeline rows),
-- which `runs_by_job` (ordered by id) can only answer by walking all of the job's newer runs.
CREATE INDEX runs_by_job_schedule ON runs (job, scheduled_at);
-- The web view's trigger filter, newest first. Only the rare triggers are indexed: `schedule`
-- is most rows, and walking the newest ids finds them at once.
CREATE INDEX runs_by_trigger ON runs (trigger, id) WHERE trigger <> 'schedule';
";

/// The web view reads whole windows of runs (a job's charts and timeline row, every job's load
/// under the timeline). A job's runs are spread over the whole table, about one to a page, so
/// reading a window through an index of instants alone costs one table lookup per run: 50,000
/// of them for a month of a page of jobs. These indexes carry the columns those windows draw,
/// so a window is read from the index alone, in order. Each replaces a narrower index of the
/// same name, which it serves as well (its leading columns are the same).
const WEB_WINDOWS_FROM_INDEXES: &str = r"
-- A job's runs in a window: its figures, charts and timeline row, and `pacer stats --job`.
DROP INDEX runs_by_job_schedule;
CREATE INDEX runs_by_job_schedule ON runs (job, scheduled_at, status, started_at, finished_at,
                                           queue_ms, trigger, attempt, queued_at);
-- `--since`/`--until` windows, `pacer stats`, retention, and the runs that held a slot in a
-- window (the load under the timeline).
DROP INDEX runs_by_schedule;
CREATE INDEX runs_by_schedule ON runs (scheduled_at, started_at, finished_at, queue_ms, job);
";

/// `pacer history --job J --status S` and the runs page with both filters, newest first: with
/// `runs_by_job` or `runs_by_status` alone, a page walks all of the job's runs, or all runs of
/// the status, to find its rows.
const JOB_AND_STATUS: &str = r"
CREATE INDEX runs_by_job_status ON runs (job, status, id);
";

/// Fewer pages written per run. The per-job window index carried the columns a start and an
/// end change, and the job-and-status index the status: both moved the run's entries at each
/// start and end, each at a random place in a large index (a job's runs are ordered by job, and
/// the next run to start is any job's), and the writes of a run's record cost about twice as
/// much. A job's window is now read in two parts: the runs that ended, from an index of ended
/// runs alone (an entry written once, when a run ends or a fire is skipped), and the runs
/// waiting or going, few, from `runs_by_status`, which now carries the job so that finding them
/// reads the index alone. The job there also serves `pacer history --job J --status S` (walking
/// the newest runs of the status, each one's job is read from the index), and costs the writes
/// nothing: the entries of `runs_by_status` move with the status whatever they hold.
const ENDED_RUNS_BY_JOB: &str = r"
DROP INDEX runs_by_job_schedule;
DROP INDEX runs_by_job_status;
CREATE INDEX runs_ended_by_job ON runs (job, scheduled_at, status, started_at, finished_at,
                                        queue_ms, trigger, attempt)
    WHERE status NOT IN ('queued', 'running');
DROP INDEX runs_by_status;
CREATE INDEX runs_by_status ON runs (status, id, job);
";
