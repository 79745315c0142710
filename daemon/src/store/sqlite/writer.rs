//! The one thread that writes: commands arrive on a channel, and whatever arrived together is
//! committed in one `BEGIN IMMEDIATE` transaction, so a burst of fires costs one fsync-free
//! WAL commit instead of one per row.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, mpsc};

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::super::{
    DamagedRow, Finish, JobState, NewRun, OrphanedRun, RunId, Skipped, Store, StoreError,
    StoreFuture, mask_secrets,
};
use super::rows::{self, column};
use super::{WriterLock, open_for_writing};
use crate::model::Status;

/// Most commands folded into one transaction; bounds the latency of the first in a burst.
const MAX_BATCH: usize = 512;

/// A SQLite history with its writer thread. Dropping every handle stops the thread after it
/// commits what was sent.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    commands: mpsc::Sender<Command>,
    /// The database file, named in every error handed out.
    path: Arc<Path>,
}

#[derive(Debug)]
enum Command {
    Start(NewRun, oneshot::Sender<Result<RunId, StoreError>>),
    Finish(Finish, oneshot::Sender<Result<(), StoreError>>),
    Skip(Skipped, oneshot::Sender<Result<RunId, StoreError>>),
    AdvanceLastFire(String, i64, oneshot::Sender<Result<(), StoreError>>),
    SetPaused(String, bool, oneshot::Sender<Result<(), StoreError>>),
    JobStates(oneshot::Sender<Result<HashMap<String, JobState>, StoreError>>),
    AbandonOrphans(
        i64,
        String,
        oneshot::Sender<Result<Vec<OrphanedRun>, StoreError>>,
    ),
    LastStatuses(oneshot::Sender<Result<HashMap<String, Status>, StoreError>>),
    LastSuccesses(
        Vec<String>,
        oneshot::Sender<Result<HashMap<String, i64>, StoreError>>,
    ),
    Prune(i64, u32, oneshot::Sender<Result<u64, StoreError>>),
    Checkpoint(oneshot::Sender<Result<(), StoreError>>),
    Close(oneshot::Sender<Result<(), StoreError>>),
}

impl SqliteStore {
    /// Opens or creates the database at `path`, migrates it, and starts the writer thread.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let (conn, lock) = open_for_writing(path)?;
        let (commands, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("pacer-store".into())
            .spawn(move || write_loop(conn, lock, &receiver))
            .map_err(StoreError::Thread)?;
        Ok(SqliteStore {
            commands,
            path: path.into(),
        })
    }

    fn send<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> StoreFuture<T> {
        let (reply, response) = oneshot::channel();
        let sent = self.commands.send(make(reply)).is_ok();
        let path = Arc::clone(&self.path);
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            response
                .await
                .unwrap_or(Err(StoreError::Closed))
                .map_err(|e| e.in_file(&path))
        })
    }
}

impl Store for SqliteStore {
    fn start_run(&self, run: NewRun) -> StoreFuture<RunId> {
        self.send(|reply| Command::Start(run, reply))
    }

    fn finish_run(&self, finish: Finish) -> StoreFuture<()> {
        self.send(|reply| Command::Finish(finish, reply))
    }

    fn record_skipped(&self, skipped: Skipped) -> StoreFuture<RunId> {
        self.send(|reply| Command::Skip(skipped, reply))
    }

    fn advance_last_fire(&self, job: String, at_ms: i64) -> StoreFuture<()> {
        self.send(|reply| Command::AdvanceLastFire(job, at_ms, reply))
    }

    fn set_paused(&self, job: String, paused: bool) -> StoreFuture<()> {
        self.send(|reply| Command::SetPaused(job, paused, reply))
    }

    fn job_states(&self) -> StoreFuture<HashMap<String, JobState>> {
        self.send(Command::JobStates)
    }

    fn abandon_orphans(&self, now_ms: i64, reason: String) -> StoreFuture<Vec<OrphanedRun>> {
        self.send(|reply| Command::AbandonOrphans(now_ms, reason, reply))
    }

    fn last_statuses(&self) -> StoreFuture<HashMap<String, Status>> {
        self.send(Command::LastStatuses)
    }

    fn last_successes(&self, jobs: Vec<String>) -> StoreFuture<HashMap<String, i64>> {
        self.send(|reply| Command::LastSuccesses(jobs, reply))
    }

    fn prune(&self, before_ms: i64, batch: u32) -> StoreFuture<u64> {
        self.send(|reply| Command::Prune(before_ms, batch, reply))
    }

    fn checkpoint(&self) -> StoreFuture<()> {
        self.send(Command::Checkpoint)
    }

    fn close(&self) -> StoreFuture<()> {
        self.send(Command::Close)
    }
}

fn write_loop(mut conn: Connection, lock: WriterLock, commands: &mpsc::Receiver<Command>) {
    let mut closing = None;
    while let Ok(first) = commands.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        if let Some(at) = batch
            .iter()
            .position(|c| matches!(c, Command::Checkpoint(_)))
        {
            // A checkpoint cannot run inside a transaction: commit what came before it first.
            let rest = batch.split_off(at + 1);
            if let Some(Command::Checkpoint(reply)) = batch.pop() {
                commit_batch(&mut conn, batch);
                let result = conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .map_err(StoreError::from);
                let _ = reply.send(result);
            }
            batch = rest;
            if batch.is_empty() {
                continue;
            }
        }
        if let Some(at) = batch.iter().position(|c| matches!(c, Command::Close(_))) {
            let rest = batch.split_off(at + 1);
            if let Some(Command::Close(reply)) = batch.pop() {
                closing = Some(reply);
            }
            commit_batch(&mut conn, batch);
            for command in rest {
                fail(command, || StoreError::Closed);
            }
            break;
        }
        commit_batch(&mut conn, batch);
    }
    // Closing the last connection checkpoints the write-ahead log and removes it; only then may
    // another daemon take the database.
    let closed = conn.close().map_err(|(_, e)| StoreError::from(e));
    drop(lock);
    if let Some(reply) = closing {
        let _ = reply.send(closed);
    }
}

/// A reply waiting for the batch's commit: results are only sent once they are durable.
type Reply = Box<dyn FnOnce(Option<&Arc<rusqlite::Error>>)>;

fn commit_batch(conn: &mut Connection, batch: Vec<Command>) {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!(error = %e, "cannot begin a history transaction");
            let cause = Arc::new(e);
            for command in batch {
                fail(command, || StoreError::Sqlite {
                    path: None,
                    cause: Arc::clone(&cause),
                });
            }
            return;
        }
    };
    let replies: Vec<Reply> = batch
        .into_iter()
        .map(|command| apply(&tx, command))
        .collect();
    let committed = tx.commit().map_err(Arc::new);
    if let Err(e) = &committed {
        tracing::error!(error = %e, "cannot commit the history");
    }
    for reply in replies {
        reply(committed.as_ref().err());
    }
}

/// Runs one command inside the open transaction and returns how to answer it after commit.
fn apply(conn: &Connection, command: Command) -> Reply {
    match command {
        Command::Start(run, reply) => deferred(reply, insert_started(conn, &run)),
        Command::Finish(finish, reply) => deferred(reply, update_finished(conn, &finish)),
        Command::Skip(skipped, reply) => deferred(reply, insert_skipped(conn, &skipped)),
        Command::AdvanceLastFire(job, at, reply) => deferred(reply, advance(conn, &job, at)),
        Command::SetPaused(job, paused, reply) => deferred(
            reply,
            conn.execute(
                "INSERT INTO job_state (job, paused) VALUES (?1, ?2)
                 ON CONFLICT (job) DO UPDATE SET paused = excluded.paused",
                params![job, paused],
            )
            .map(drop)
            .map_err(StoreError::from),
        ),
        Command::JobStates(reply) => deferred(
            reply,
            rows::job_states(conn).map(|(states, damaged)| warned(states, &damaged)),
        ),
        Command::AbandonOrphans(now, reason, reply) => {
            deferred(reply, abandon_orphans(conn, now, &reason))
        }
        Command::LastStatuses(reply) => deferred(
            reply,
            rows::last_statuses(conn).map(|(statuses, damaged)| warned(statuses, &damaged)),
        ),
        Command::LastSuccesses(jobs, reply) => deferred(reply, rows::last_successes(conn, &jobs)),
        Command::Prune(before, limit, reply) => deferred(reply, prune(conn, before, limit)),
        Command::Checkpoint(reply) | Command::Close(reply) => deferred(reply, Ok(())),
    }
}

fn deferred<T: Send + 'static>(
    reply: oneshot::Sender<Result<T, StoreError>>,
    result: Result<T, StoreError>,
) -> Reply {
    Box::new(move |commit_error: Option<&Arc<rusqlite::Error>>| {
        let result = match commit_error {
            Some(cause) => Err(StoreError::Sqlite {
                path: None,
                cause: Arc::clone(cause),
            }),
            None => result,
        };
        // The caller may have stopped waiting (the daemon is stopping); nothing to do then.
        let _ = reply.send(result);
    })
}

/// The daemon goes on without the rows that do not decode; the log says which they are.
fn warned<T>(value: T, damaged: &[DamagedRow]) -> T {
    for row in damaged {
        tracing::warn!("skipped a damaged row of the run history: {row}");
    }
    value
}

/// Answers a command that never reached the database with `error()`. A send fails only when
/// the caller stopped waiting, which needs no answer.
fn fail(command: Command, error: impl Fn() -> StoreError) {
    fn answer<T>(reply: oneshot::Sender<Result<T, StoreError>>, error: StoreError) {
        let _ = reply.send(Err(error));
    }
    match command {
        Command::Start(_, reply) | Command::Skip(_, reply) => answer(reply, error()),
        Command::Finish(_, reply)
        | Command::AdvanceLastFire(_, _, reply)
        | Command::SetPaused(_, _, reply)
        | Command::Checkpoint(reply)
        | Command::Close(reply) => answer(reply, error()),
        Command::Prune(_, _, reply) => answer(reply, error()),
        Command::JobStates(reply) => answer(reply, error()),
        Command::AbandonOrphans(_, _, reply) => answer(reply, error()),
        Command::LastStatuses(reply) => answer(reply, error()),
        Command::LastSuccesses(_, reply) => answer(reply, error()),
    }
}

fn insert_started(conn: &Connection, run: &NewRun) -> Result<RunId, StoreError> {
    let params_json =
        serde_json::to_string(&mask_secrets(&run.params)).map_err(StoreError::Params)?;
    let (pid, pid_start) = run.process.map_or((None, None), |(pid, start)| {
        (Some(pid), i64::try_from(start).ok())
    });
    conn.prepare_cached(
        "INSERT INTO runs (job, plugin, status, trigger, attempt, scheduled_at, started_at,
                           queue_ms, params, pid, pid_start)
         VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        run.job,
        run.plugin,
        run.trigger.as_str(),
        run.attempt,
        run.scheduled_at,
        run.started_at,
        run.queue_ms,
        params_json,
        pid,
        pid_start,
    ])?;
    let id = conn.last_insert_rowid();
    if run.advances_schedule {
        advance(conn, &run.job, run.scheduled_at)?;
    }
    Ok(id)
}

fn insert_skipped(conn: &Connection, skipped: &Skipped) -> Result<RunId, StoreError> {
    conn.prepare_cached(
        "INSERT INTO runs (job, plugin, status, trigger, attempt, scheduled_at, error)
         VALUES (?1, ?2, 'skipped', ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        skipped.job,
        skipped.plugin,
        skipped.trigger.as_str(),
        skipped.attempt,
        skipped.scheduled_at,
        skipped.reason,
    ])?;
    let id = conn.last_insert_rowid();
    if skipped.advances_schedule {
        advance(conn, &skipped.job, skipped.scheduled_at)?;
    }
    Ok(id)
}

fn update_finished(conn: &Connection, finish: &Finish) -> Result<(), StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE runs SET status = ?2, finished_at = ?3, error = ?4, pid = NULL, pid_start = NULL
             WHERE id = ?1 AND status = 'running'",
        )?
        .execute(params![
            finish.id,
            finish.status.as_str(),
            finish.finished_at,
            finish.error,
        ])?;
    if changed == 0 {
        return Err(StoreError::NotRunning(finish.id));
    }
    if !finish.output.is_empty() || finish.output_dropped > 0 {
        conn.prepare_cached(
            "INSERT INTO run_output (run_id, output, dropped) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![
            finish.id,
            finish.output,
            i64::try_from(finish.output_dropped).unwrap_or(i64::MAX)
        ])?;
    }
    Ok(())
}

/// Oldest first, through the `scheduled_at` index; runs still going are kept whatever their age.
fn prune(conn: &Connection, before: i64, limit: u32) -> Result<u64, StoreError> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM runs WHERE id IN (
                 SELECT id FROM runs WHERE scheduled_at < ?1 AND status != 'running'
                 ORDER BY scheduled_at LIMIT ?2)",
        )?
        .execute(params![before, limit])?;
    Ok(deleted as u64)
}

/// Several fires of one job may be recorded out of order; the last fire only moves forward.
fn advance(conn: &Connection, job: &str, at: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO job_state (job, last_fire) VALUES (?1, ?2)
         ON CONFLICT (job) DO UPDATE SET last_fire = max(coalesce(last_fire, ?2), ?2)",
    )?
    .execute(params![job, at])?;
    Ok(())
}

fn abandon_orphans(
    conn: &Connection,
    now: i64,
    reason: &str,
) -> Result<Vec<OrphanedRun>, StoreError> {
    let orphans = {
        let mut statement = conn.prepare_cached(
            "SELECT id, job, pid, pid_start FROM runs WHERE status = ?1 ORDER BY id",
        )?;
        let mut rows = statement.query([Status::Running.as_str()])?;
        let mut orphans = Vec::new();
        while let Some(row) = rows.next()? {
            let orphan = (|| {
                let pid: Option<i32> = column(row, "pid")?;
                let start: Option<i64> = column(row, "pid_start")?;
                Ok::<_, rows::Problem>(OrphanedRun {
                    id: column(row, "id")?,
                    job: column(row, "job")?,
                    process: pid.zip(start.and_then(|s| u64::try_from(s).ok())),
                })
            })();
            // A damaged row is still marked abandoned below; only its process is not looked for.
            match orphan {
                Ok(orphan) => orphans.push(orphan),
                Err(problem) => warned(
                    (),
                    &[DamagedRow {
                        id: rows::run_id(row),
                        table: "runs",
                        problem,
                    }],
                ),
            }
        }
        orphans
    };
    conn.prepare_cached(
        "UPDATE runs SET status = 'abandoned', finished_at = ?1, error = ?2
         WHERE status = 'running'",
    )?
    .execute(params![now, reason])?;
    Ok(orphans)
}
