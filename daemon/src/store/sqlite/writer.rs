//! The one thread that writes: commands arrive on a channel, and whatever arrived together is
//! committed in one `BEGIN IMMEDIATE` transaction (group commit), so a burst of fires costs
//! one fsync-free WAL commit instead of one per row. A transaction takes at most
//! [`MAX_BATCH_ROWS`] rows from several commands, so what comes behind a burst is not held
//! up by all of it.
//!
//! Runs' own records (a start, an end) can also be held and sent together at a moment the
//! daemon chooses ([`SqliteStore::hold_start_run`], [`SqliteStore::send_held`]): the end of
//! one run and the start of the run that takes its slot are then one transaction, not two.
//!
//! The held run records of a step are committed by the thread that sends them when the writer
//! thread has nothing to do ([`SqliteStore::commit_here`]): handing them over cost as much as
//! the commit (waking the writer, then being woken by its answer, each a switch between
//! threads and, under a hypervisor, between CPUs). They never wait there: a lock held by
//! another process, a batch the writer is busy with or any failure sends them to the thread,
//! which retries as below. Other writes (fires, requests), and run records with more than a few
//! pages of output, always go to the thread, which commits what arrives while it is busy
//! together and leaves the event loop free meanwhile. Checkpoints, and the first commit after
//! each (which starts the log over and syncs its header), are the thread's alone, so a slow
//! disk's `fsync` never holds up the event loop.
//!
//! A transaction that fails for a reason that may pass (a full disk, a lock held by another
//! process, an I/O error) is rolled back and tried again, with back-off, until it commits:
//! nothing sent is dropped and nothing behind it overtakes it, so the history never records a
//! later fire of a job without the earlier ones. While that lasts, [`SqliteStore::unwritable`]
//! says why.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use tokio::sync::{oneshot, watch};

use super::super::{
    DamagedRow, Finish, JobState, NewFire, OrphanedRun, QueuedFire, RunId, StartRun, Store,
    StoreError, StoreFuture, Write, mask_secrets,
};
use super::files::WriterLock;
use super::open_for_writing;
use super::rows::{self, column};
use crate::model::{Status, Trigger};

/// Most rows one transaction takes from several commands (one command's rows are never
/// split): a run's start or end that comes behind a burst's records waits for this many at
/// most, not for the whole burst.
const MAX_BATCH_ROWS: usize = 512;

/// Most run records a step may have for them to be committed by the thread that sends them:
/// runs that end and start one by one, not a wave of them, whose commit would keep that thread
/// from other work.
const HERE_MAX_ROWS: usize = 16;

/// Rows written after which the writer thread checkpoints the write-ahead log (`PASSIVE`, as
/// SQLite's own automatic checkpoint, which is off because it would run in whichever commit
/// crossed its threshold). A run's start and end move about eight pages together, so this is
/// about SQLite's default of 1,000 pages; a run's output counts a row per page it fills.
const CHECKPOINT_ROWS: usize = 256;

/// The first pause before a failed transaction is tried again; it doubles up to
/// [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Why the history cannot be written now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwritable {
    /// Since when, Unix ms.
    pub since_ms: i64,
    /// SQLite's or the system's words.
    pub cause: String,
}

/// A SQLite history with its writer thread. Dropping every handle stops the thread after it
/// commits what was sent.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    commands: mpsc::Sender<Sent>,
    /// Run records held until [`SqliteStore::send_held`], shared by every handle.
    held: Arc<Mutex<Vec<Command>>>,
    /// The database file, named in every error handed out.
    path: Arc<Path>,
    health: Arc<Health>,
    alive: Arc<std::fs::File>,
    previous_alive: Option<i64>,
}

impl std::fmt::Display for Unwritable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the history cannot be written since {}: {}",
            crate::time::rfc3339_ms(self.since_ms),
            self.cause
        )
    }
}

/// What the writer thread shares with the daemon.
#[derive(Debug)]
struct Health {
    unwritable: watch::Sender<Option<Unwritable>>,
    /// Set once the daemon closes the store: a failing write is then given up rather than
    /// retried forever, so the daemon can stop.
    closing: AtomicBool,
    /// Runs whose start, not written yet, was taken back: the writer leaves each `queued`.
    withdrawn: Mutex<HashSet<RunId>>,
    /// The one connection that writes: the thread's, and lent to a sender while the thread has
    /// nothing to do. `None` once the store is closed.
    connection: Mutex<Option<Connection>>,
    /// Messages sent to the thread and not yet done with: while there are any, a sender does
    /// not commit its own batch, which would overtake them.
    in_thread: AtomicUsize,
    /// Rows written since the last checkpoint.
    unchecked: AtomicUsize,
    /// Set by a checkpoint (and at open): the next commit may start the log over and sync its
    /// new header to the disk, which is the thread's to do.
    log_restarts: AtomicBool,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

#[derive(Debug)]
enum Command {
    Write(
        Vec<Write>,
        oneshot::Sender<Vec<Result<Option<RunId>, StoreError>>>,
    ),
    Start(StartRun, Reply<()>),
    Finish(Finish, Reply<()>),
    JobStates(Reply<HashMap<String, JobState>>),
    QueuedFires(Reply<Vec<QueuedFire>>),
    AbandonOrphans(i64, String, Reply<Vec<OrphanedRun>>),
    LastStatuses(Reply<HashMap<String, Status>>),
    LastSuccesses(Vec<String>, Reply<HashMap<String, i64>>),
    FiredSince(Vec<String>, i64, Reply<Vec<String>>),
    Prune(i64, u32, Reply<u64>),
    Checkpoint(Reply<()>),
    Close(Reply<()>),
}

/// What goes down the channel: one command, the held ones at once (so the writer finds them
/// all in its next transaction), or a wake-up for the checkpoint that commits made elsewhere
/// made due.
#[derive(Debug)]
enum Sent {
    One(Command),
    Many(Vec<Command>),
    Tidy,
}

/// What a command produced inside a transaction that has not committed yet.
enum Answer {
    Ids(Vec<Result<Option<RunId>, StoreError>>),
    Unit(Result<(), StoreError>),
    JobStates(Result<HashMap<String, JobState>, StoreError>),
    QueuedFires(Result<Vec<QueuedFire>, StoreError>),
    Orphans(Result<Vec<OrphanedRun>, StoreError>),
    Statuses(Result<HashMap<String, Status>, StoreError>),
    Successes(Result<HashMap<String, i64>, StoreError>),
    Jobs(Result<Vec<String>, StoreError>),
    Count(Result<u64, StoreError>),
}

impl SqliteStore {
    /// Opens or creates the database at `path`, migrates it, and starts the writer thread.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let (conn, lock) = open_for_writing(path)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|cause| StoreError::Open {
                path: path.to_owned(),
                cause,
                hint: "",
            })?;
        let alive = Arc::new(lock.alive.try_clone().map_err(|cause| StoreError::File {
            path: path.to_owned(),
            action: "open the lock file of",
            cause,
        })?);
        let previous_alive = lock.previous_alive;
        let (commands, receiver) = mpsc::channel();
        let health = Arc::new(Health {
            unwritable: watch::Sender::new(None),
            closing: AtomicBool::new(false),
            withdrawn: Mutex::default(),
            connection: Mutex::new(Some(conn)),
            in_thread: AtomicUsize::new(0),
            unchecked: AtomicUsize::new(0),
            log_restarts: AtomicBool::new(true),
        });
        let shared = Arc::clone(&health);
        std::thread::Builder::new()
            .name("pacer-store".into())
            .spawn({
                let path = path.to_owned();
                move || write_loop(lock, &receiver, &shared, &path)
            })
            .map_err(StoreError::Thread)?;
        Ok(SqliteStore {
            commands,
            held: Arc::default(),
            path: path.into(),
            health,
            alive,
            previous_alive,
        })
    }

    /// When the daemon that held the database before was last seen alive, Unix ms (`None`
    /// for a new database).
    pub fn previous_alive(&self) -> Option<i64> {
        self.previous_alive
    }

    /// Notes that this daemon is alive (the lock file's modification time).
    pub fn mark_alive(&self) {
        if let Err(e) = self.alive.set_modified(std::time::SystemTime::now()) {
            tracing::debug!("cannot touch the database's lock file: {e}");
        }
    }

    /// Why the history cannot be written now, if it cannot (writes wait, in order, until it
    /// can), as it changes.
    pub fn health(&self) -> watch::Receiver<Option<Unwritable>> {
        self.health.unwritable.subscribe()
    }

    /// Turns a queued run `running`, with the next [`SqliteStore::send_held`].
    pub fn hold_start_run(&self, start: StartRun) -> StoreFuture<()> {
        self.hold(|reply| Command::Start(start, reply))
    }

    /// Takes back the start of run `id` if it is not written yet (it waits for a history that
    /// cannot be written): its future then fails with [`StoreError::Withdrawn`] and the run
    /// stays `queued`. A start already written stays written.
    pub fn withdraw_start(&self, id: RunId) {
        self.health.withdrawn().insert(id);
    }

    /// Records a run's end, with the next [`SqliteStore::send_held`].
    pub fn hold_finish_run(&self, finish: Finish) -> StoreFuture<()> {
        self.hold(|reply| Command::Finish(finish, reply))
    }

    /// Commits the held run records together, in the order they were held: here if it may be
    /// ([`SqliteStore::commit_here`]), else by the writer thread.
    ///
    /// Called in a tokio runtime, the thread's answers come back through one task: the writer
    /// then wakes this thread once per batch rather than once per record.
    pub fn send_held(&self) {
        let held = std::mem::take(
            &mut *self
                .held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if held.is_empty() {
            return;
        }
        let Some(mut held) = self.commit_here(held) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let relays: Vec<_> = held.iter_mut().filter_map(Command::relay).collect();
            runtime.spawn(async move {
                // The first answer wakes this task; the others are there by the time it runs.
                for (answered, reply) in relays {
                    let _ = reply.send(answered.await.unwrap_or(Err(StoreError::Closed)));
                }
            });
        }
        if let Err(Sent::Many(held)) = self.to_thread(Sent::Many(held)) {
            for command in held {
                command.fail(|| StoreError::Closed);
            }
        }
    }

    /// Commits `batch` on this thread if nothing waits for the writer thread and the batch is
    /// small, answering each command; gives it back when the thread must do it (see the
    /// module's introduction). The connection's lock is only tried, and a lock held by another
    /// process fails the attempt at once instead of being waited for.
    fn commit_here(&self, batch: Vec<Command>) -> Option<Vec<Command>> {
        let rows = batch.iter().map(Command::rows).sum::<usize>();
        if rows > HERE_MAX_ROWS {
            return Some(batch);
        }
        let Ok(mut connection) = self.health.connection.try_lock() else {
            return Some(batch);
        };
        // Read under the lock: the thread holds it while it writes what it was sent.
        if self.health.in_thread.load(Ordering::SeqCst) > 0
            || self.health.log_restarts.load(Ordering::SeqCst)
        {
            return Some(batch);
        }
        let Some(conn) = connection.as_mut() else {
            return Some(batch);
        };
        if conn.busy_timeout(Duration::ZERO).is_err() {
            return Some(batch);
        }
        let attempt = try_commit(conn, &batch, &self.health);
        // Cannot fail: it only sets the connection's busy handler.
        let _ = conn.busy_timeout(super::BUSY_TIMEOUT);
        drop(connection);
        let Ok(answers) = attempt else {
            return Some(batch);
        };
        self.health.forget_withdrawn(&start_ids(&batch));
        if self.health.committed(batch, answers) {
            // The store is closing if this fails: closing checkpoints anyway.
            let _ = self.to_thread(Sent::Tidy);
        }
        None
    }

    /// Whether the writer thread has nothing left to do and the next held records may be
    /// committed by their sender.
    #[cfg(test)]
    pub(super) fn idle(&self) -> bool {
        self.health.in_thread.load(Ordering::SeqCst) == 0
            && !self.health.log_restarts.load(Ordering::SeqCst)
            && self.health.connection.try_lock().is_ok()
    }

    /// Hands `sent` to the writer thread; gives it back when the thread is gone.
    fn to_thread(&self, sent: Sent) -> Result<(), Sent> {
        self.health.in_thread.fetch_add(1, Ordering::SeqCst);
        self.commands.send(sent).map_err(|mpsc::SendError(sent)| {
            self.health.in_thread.fetch_sub(1, Ordering::SeqCst);
            sent
        })
    }

    fn send<T: Send + 'static>(&self, make: impl FnOnce(Reply<T>) -> Command) -> StoreFuture<T> {
        let (reply, response) = oneshot::channel();
        let sent = self.to_thread(Sent::One(make(reply))).is_ok();
        self.answer(sent, response)
    }

    fn hold<T: Send + 'static>(&self, make: impl FnOnce(Reply<T>) -> Command) -> StoreFuture<T> {
        let (reply, response) = oneshot::channel();
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(make(reply));
        self.answer(true, response)
    }

    fn answer<T: Send + 'static>(
        &self,
        sent: bool,
        response: oneshot::Receiver<Result<T, StoreError>>,
    ) -> StoreFuture<T> {
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
    fn write(&self, writes: Vec<Write>) -> StoreFuture<Vec<Result<Option<RunId>, StoreError>>> {
        let (reply, response) = oneshot::channel();
        let sent = self
            .to_thread(Sent::One(Command::Write(writes, reply)))
            .is_ok();
        let path = Arc::clone(&self.path);
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            let results = response.await.map_err(|_| StoreError::Closed)?;
            Ok(results
                .into_iter()
                .map(|result| result.map_err(|e| e.in_file(&path)))
                .collect())
        })
    }

    fn start_run(&self, start: StartRun) -> StoreFuture<()> {
        self.send(|reply| Command::Start(start, reply))
    }

    fn finish_run(&self, finish: Finish) -> StoreFuture<()> {
        self.send(|reply| Command::Finish(finish, reply))
    }

    fn job_states(&self) -> StoreFuture<HashMap<String, JobState>> {
        self.send(Command::JobStates)
    }

    fn queued_fires(&self) -> StoreFuture<Vec<QueuedFire>> {
        self.send(Command::QueuedFires)
    }

    fn abandon_orphans(&self, last_alive: i64, reason: String) -> StoreFuture<Vec<OrphanedRun>> {
        self.send(|reply| Command::AbandonOrphans(last_alive, reason, reply))
    }

    fn last_statuses(&self) -> StoreFuture<HashMap<String, Status>> {
        self.send(Command::LastStatuses)
    }

    fn last_successes(&self, jobs: Vec<String>) -> StoreFuture<HashMap<String, i64>> {
        self.send(|reply| Command::LastSuccesses(jobs, reply))
    }

    fn fired_since(&self, jobs: Vec<String>, since_ms: i64) -> StoreFuture<Vec<String>> {
        self.send(|reply| Command::FiredSince(jobs, since_ms, reply))
    }

    fn prune(&self, before_ms: i64, batch: u32) -> StoreFuture<u64> {
        self.send(|reply| Command::Prune(before_ms, batch, reply))
    }

    fn checkpoint(&self) -> StoreFuture<()> {
        self.send(Command::Checkpoint)
    }

    fn close(&self) -> StoreFuture<()> {
        self.send_held();
        self.health.closing.store(true, Ordering::SeqCst);
        self.send(Command::Close)
    }
}

fn write_loop(lock: WriterLock, commands: &mpsc::Receiver<Sent>, health: &Health, path: &Path) {
    // A command taken from the channel that did not fit in the last transaction.
    let mut next = None;
    while let Some(first) = next.take().or_else(|| commands.recv().ok()) {
        let mut rows = first.rows();
        let mut taken = 1;
        let mut batch = Vec::new();
        first.add_to(&mut batch);
        while rows < MAX_BATCH_ROWS {
            let Ok(sent) = commands.try_recv() else {
                break;
            };
            if rows + sent.rows() > MAX_BATCH_ROWS {
                next = Some(sent);
                break;
            }
            rows += sent.rows();
            taken += 1;
            sent.add_to(&mut batch);
        }
        let mut connection = health.connection();
        let Some(conn) = connection.as_mut() else {
            // Closed already: nothing is sent after a close, but say so if it were.
            for command in batch {
                command.fail(|| StoreError::Closed);
            }
            break;
        };
        let closing = write_batch(conn, batch, health, path);
        if closing.is_none()
            && health.unchecked.load(Ordering::SeqCst) >= CHECKPOINT_ROWS
            && let Err(e) = checkpoint(conn, health, "PASSIVE")
        {
            tracing::debug!("cannot checkpoint the history: {e}");
        }
        if let Some(reply) = closing {
            // Closing the last connection checkpoints the write-ahead log and removes it; only
            // then may another daemon take the database.
            let closed = connection.take().map_or(Ok(()), |conn| {
                conn.close().map_err(|(_, e)| StoreError::from(e))
            });
            drop(connection);
            drop(lock);
            let _ = reply.send(closed);
            return;
        }
        drop(connection);
        health.in_thread.fetch_sub(taken, Ordering::SeqCst);
    }
    // Every handle is gone without a close: the connection closes (and checkpoints) before the
    // lock goes.
    drop(health.connection().take());
    drop(lock);
}

/// Writes one batch taken from the channel. A checkpoint asked for in it runs between the
/// commands before and after it; a close ends it (the commands after a close are refused) and
/// its reply is returned.
fn write_batch(
    conn: &mut Connection,
    mut batch: Vec<Command>,
    health: &Health,
    path: &Path,
) -> Option<Reply<()>> {
    if let Some(at) = batch
        .iter()
        .position(|c| matches!(c, Command::Checkpoint(_)))
    {
        // A checkpoint cannot run inside a transaction: commit what came before it first.
        let rest = batch.split_off(at + 1);
        if let Some(Command::Checkpoint(reply)) = batch.pop() {
            commit_batch(conn, batch, health, path);
            let _ = reply.send(checkpoint(conn, health, "TRUNCATE"));
        }
        batch = rest;
    }
    if let Some(at) = batch.iter().position(|c| matches!(c, Command::Close(_))) {
        let rest = batch.split_off(at + 1);
        let closing = match batch.pop() {
            Some(Command::Close(reply)) => Some(reply),
            _ => None,
        };
        commit_batch(conn, batch, health, path);
        for command in rest {
            command.fail(|| StoreError::Closed);
        }
        return closing;
    }
    commit_batch(conn, batch, health, path);
    None
}

/// Copies the write-ahead log into the database file (`mode`: `PASSIVE` leaves what readers
/// still use, `TRUNCATE` waits for them and empties the log).
fn checkpoint(conn: &Connection, health: &Health, mode: &str) -> Result<(), StoreError> {
    health.unchecked.store(0, Ordering::SeqCst);
    health.log_restarts.store(true, Ordering::SeqCst);
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))
        .map_err(StoreError::from)
}

/// Commits `batch`, trying again while the failure may pass; answers every command once its
/// outcome is durable (or final).
fn commit_batch(conn: &mut Connection, batch: Vec<Command>, health: &Health, path: &Path) {
    if batch.is_empty() {
        return;
    }
    let starts = start_ids(&batch);
    commit_answered(conn, batch, health, path);
    health.forget_withdrawn(&starts);
}

/// The runs whose starts are in `batch`.
fn start_ids(batch: &[Command]) -> Vec<RunId> {
    batch
        .iter()
        .filter_map(|command| match command {
            Command::Start(start, _) => Some(start.id),
            _ => None,
        })
        .collect()
}

/// [`commit_batch`]'s attempts, until each command is answered.
fn commit_answered(conn: &mut Connection, batch: Vec<Command>, health: &Health, path: &Path) {
    let mut delay = FIRST_RETRY_DELAY;
    loop {
        match try_commit(conn, &batch, health) {
            Ok(answers) => {
                health.log_restarts.store(false, Ordering::SeqCst);
                // This thread checkpoints after the batch when one is due.
                health.committed(batch, answers);
                return;
            }
            Err(cause) if is_transient(&cause) && !health.closing.load(Ordering::SeqCst) => {
                health.failing(&StoreError::Sqlite {
                    path: Some(path.to_owned()),
                    cause: Arc::clone(&cause),
                });
                std::thread::sleep(delay);
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
            Err(cause) => {
                tracing::error!(
                    commands = batch.len(),
                    "cannot write the history, and these writes are given up: {cause}"
                );
                for command in batch {
                    command.fail(|| StoreError::Sqlite {
                        path: None,
                        cause: Arc::clone(&cause),
                    });
                }
                return;
            }
        }
    }
}

/// One attempt at the whole batch: every command's answer, or SQLite's reason that rolled it
/// back (shared by every command of the batch).
///
/// `BEGIN` and `COMMIT` are cached statements like the rest: parsing them anew for every
/// transaction, as `Connection::transaction` does, cost about a twentieth of this thread's
/// time when runs start and end one by one.
fn try_commit(
    conn: &Connection,
    batch: &[Command],
    health: &Health,
) -> Result<Vec<Answer>, Arc<rusqlite::Error>> {
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
    run("BEGIN IMMEDIATE").map_err(Arc::new)?;
    let applied = batch
        .iter()
        .map(|command| apply(conn, command, health))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|answers| run("COMMIT").map(|_| answers).map_err(Arc::new));
    if applied.is_err() && !conn.is_autocommit() {
        // The failure is what is reported; a rollback that fails too leaves nothing to add.
        let _ = run("ROLLBACK");
    }
    applied
}

impl Health {
    /// The writer's connection, waited for.
    fn connection(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets that the starts of runs `ids` were taken back: they are written or refused now.
    fn forget_withdrawn(&self, ids: &[RunId]) {
        if !ids.is_empty() {
            let mut withdrawn = self.withdrawn();
            for id in ids {
                withdrawn.remove(id);
            }
        }
    }

    /// Answers each command of a committed batch; whether its rows made a checkpoint due.
    fn committed(&self, batch: Vec<Command>, answers: Vec<Answer>) -> bool {
        self.recovered();
        let rows: usize = batch.iter().map(Command::rows).sum();
        for (command, answer) in batch.into_iter().zip(answers) {
            command.answer(answer);
        }
        let before = self.unchecked.fetch_add(rows, Ordering::SeqCst);
        before < CHECKPOINT_ROWS && before + rows >= CHECKPOINT_ROWS
    }

    fn withdrawn(&self) -> std::sync::MutexGuard<'_, HashSet<RunId>> {
        self.withdrawn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn failing(&self, cause: &StoreError) {
        self.unwritable.send_if_modified(|unwritable| {
            if unwritable.is_some() {
                return false;
            }
            tracing::error!(
                "cannot write the history: {cause}; fires wait in order and writes are retried \
                 until they succeed"
            );
            *unwritable = Some(Unwritable {
                since_ms: crate::time::to_ms(jiff::Timestamp::now()),
                cause: cause.to_string(),
            });
            true
        });
    }

    fn recovered(&self) {
        self.unwritable.send_if_modified(|unwritable| {
            let Some(was) = unwritable.take() else {
                return false;
            };
            tracing::warn!("the history can be written again ({was})");
            true
        });
    }
}

/// Whether a failure may pass by itself: space freed, a lock released, a device back.
fn is_transient(error: &rusqlite::Error) -> bool {
    let Some(code) = error.sqlite_error_code() else {
        return false;
    };
    matches!(
        code,
        ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::OutOfMemory
    )
}

/// Runs one command inside the open transaction. A failure that may pass aborts the batch
/// (`Err`); any other failure is that command's answer.
fn apply(
    conn: &Connection,
    command: &Command,
    health: &Health,
) -> Result<Answer, Arc<rusqlite::Error>> {
    fn keep<T>(
        result: Result<T, StoreError>,
    ) -> Result<Result<T, StoreError>, Arc<rusqlite::Error>> {
        match result {
            Err(StoreError::Sqlite { cause, .. }) if is_transient(&cause) => Err(cause),
            other => Ok(other),
        }
    }
    Ok(match command {
        Command::Write(writes, _) => {
            let mut ids = Vec::with_capacity(writes.len());
            for write in writes.iter() {
                ids.push(keep(apply_write(conn, write))?);
            }
            Answer::Ids(ids)
        }
        // Looked at in each attempt, so a start taken back while its batch is retried is left
        // out of the attempt that commits.
        Command::Start(start, _) if health.withdrawn().contains(&start.id) => {
            Answer::Unit(Err(StoreError::Withdrawn(start.id)))
        }
        Command::Start(start, _) => Answer::Unit(keep(update_started(conn, start))?),
        Command::Finish(finish, _) => Answer::Unit(keep(update_finished(conn, finish))?),
        Command::JobStates(_) => Answer::JobStates(keep(
            rows::job_states(conn).map(|(states, damaged)| warned(states, &damaged)),
        )?),
        Command::QueuedFires(_) => Answer::QueuedFires(keep(queued_fires(conn))?),
        Command::AbandonOrphans(last_alive, reason, _) => {
            Answer::Orphans(keep(abandon_orphans(conn, *last_alive, reason))?)
        }
        Command::LastStatuses(_) => Answer::Statuses(keep(
            rows::last_statuses(conn).map(|(statuses, damaged)| warned(statuses, &damaged)),
        )?),
        Command::LastSuccesses(jobs, _) => {
            Answer::Successes(keep(rows::last_successes(conn, jobs))?)
        }
        Command::FiredSince(jobs, since, _) => Answer::Jobs(keep(fired_since(conn, jobs, *since))?),
        Command::Prune(before, limit, _) => Answer::Count(keep(prune(conn, *before, *limit))?),
        Command::Checkpoint(_) | Command::Close(_) => Answer::Unit(Ok(())),
    })
}

impl Sent {
    /// How many rows it writes, about.
    fn rows(&self) -> usize {
        match self {
            Sent::One(command) => command.rows(),
            Sent::Many(commands) => commands.iter().map(Command::rows).sum(),
            Sent::Tidy => 0,
        }
    }

    fn add_to(self, batch: &mut Vec<Command>) {
        match self {
            Sent::One(command) => batch.push(command),
            Sent::Many(commands) => batch.extend(commands),
            Sent::Tidy => {}
        }
    }
}

/// Where a held record's answer goes first, and where it is passed on to.
type Relay = (oneshot::Receiver<Result<(), StoreError>>, Reply<()>);

impl Command {
    /// How many rows it writes, about (a query counts as one, and a run's end one more for
    /// each page its output fills).
    fn rows(&self) -> usize {
        match self {
            Command::Write(writes, _) => writes.len(),
            Command::Finish(finish, _) => 1 + finish.output.len() / 4096,
            _ => 1,
        }
    }

    /// Points a run record's answer at a new channel; returns that channel and the caller's.
    fn relay(&mut self) -> Option<Relay> {
        let (Command::Start(_, reply) | Command::Finish(_, reply)) = self else {
            return None;
        };
        let (first, answered) = oneshot::channel();
        Some((answered, std::mem::replace(reply, first)))
    }

    /// Sends the answer the command produced. The caller may have stopped waiting (the daemon
    /// is stopping); nothing to do then.
    fn answer(self, answer: Answer) {
        match (self, answer) {
            (Command::Write(_, reply), Answer::Ids(ids)) => drop(reply.send(ids)),
            (
                Command::Start(_, reply)
                | Command::Finish(_, reply)
                | Command::Checkpoint(reply)
                | Command::Close(reply),
                Answer::Unit(result),
            ) => drop(reply.send(result)),
            (Command::JobStates(reply), Answer::JobStates(result)) => drop(reply.send(result)),
            (Command::QueuedFires(reply), Answer::QueuedFires(result)) => {
                drop(reply.send(result));
            }
            (Command::AbandonOrphans(_, _, reply), Answer::Orphans(result)) => {
                drop(reply.send(result));
            }
            (Command::LastStatuses(reply), Answer::Statuses(result)) => drop(reply.send(result)),
            (Command::LastSuccesses(_, reply), Answer::Successes(result)) => {
                drop(reply.send(result));
            }
            (Command::FiredSince(_, _, reply), Answer::Jobs(result)) => drop(reply.send(result)),
            (Command::Prune(_, _, reply), Answer::Count(result)) => drop(reply.send(result)),
            (_, _) => unreachable!("each command's answer comes from that command"),
        }
    }

    /// Answers a command that never reached the database with `error()`.
    fn fail(self, error: impl Fn() -> StoreError) {
        fn err<T>(reply: Reply<T>, error: &impl Fn() -> StoreError) {
            let _ = reply.send(Err(error()));
        }
        let error = &error;
        match self {
            Command::Write(writes, reply) => {
                let failed = writes.iter().map(|_| Err(error())).collect();
                let _ = reply.send(failed);
            }
            Command::Start(_, reply)
            | Command::Finish(_, reply)
            | Command::Checkpoint(reply)
            | Command::Close(reply) => err(reply, error),
            Command::JobStates(reply) => err(reply, error),
            Command::QueuedFires(reply) => err(reply, error),
            Command::AbandonOrphans(_, _, reply) => err(reply, error),
            Command::LastStatuses(reply) => err(reply, error),
            Command::LastSuccesses(_, reply) => err(reply, error),
            Command::FiredSince(_, _, reply) => err(reply, error),
            Command::Prune(_, _, reply) => err(reply, error),
        }
    }
}

fn apply_write(conn: &Connection, write: &Write) -> Result<Option<RunId>, StoreError> {
    match write {
        Write::Queued { fire, reason } => {
            insert_fire(conn, fire, Status::Queued, reason.as_deref()).map(Some)
        }
        Write::Skipped { fire, reason } => {
            insert_fire(conn, fire, Status::Skipped, Some(reason)).map(Some)
        }
        Write::Waiting { id, reason } => {
            conn.prepare_cached("UPDATE runs SET error = ?2 WHERE id = ?1 AND status = 'queued'")?
                .execute(params![id, reason])?;
            Ok(None)
        }
        Write::Resolve { id, status, reason } => resolve(conn, *id, *status, reason).map(|()| None),
        Write::LastFire { job, at, timing } => {
            advance(conn, job, *at, timing.as_deref()).map(|()| None)
        }
        Write::Paused { job, paused } => {
            conn.prepare_cached(
                "INSERT INTO job_state (job, paused) VALUES (?1, ?2)
                 ON CONFLICT (job) DO UPDATE SET paused = excluded.paused",
            )?
            .execute(params![job, paused])?;
            Ok(None)
        }
    }
}

fn insert_fire(
    conn: &Connection,
    fire: &NewFire,
    status: Status,
    reason: Option<&str>,
) -> Result<RunId, StoreError> {
    // A skipped fire never reaches its plugin: its params would only be noise.
    let (shown, kept) = if status == Status::Queued {
        let shown =
            serde_json::to_string(&mask_secrets(&fire.params)).map_err(StoreError::Params)?;
        let kept = if fire.own_params {
            Some(serde_json::to_string(&*fire.params).map_err(StoreError::Params)?)
        } else {
            None
        };
        (Some(shown), kept)
    } else {
        (None, None)
    };
    conn.prepare_cached(
        "INSERT INTO runs (job, plugin, status, trigger, attempt, scheduled_at, queued_at, error,
                           params, pending_params)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        fire.job,
        fire.plugin,
        status.as_str(),
        fire.trigger.as_str(),
        fire.attempt,
        fire.scheduled_at,
        fire.accepted_at,
        reason,
        shown,
        kept,
    ])?;
    let id = conn.last_insert_rowid();
    if fire.advances_schedule {
        advance(conn, &fire.job, fire.scheduled_at, None)?;
    }
    Ok(id)
}

fn resolve(conn: &Connection, id: RunId, status: Status, reason: &str) -> Result<(), StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE runs SET status = ?2, error = ?3, pending_params = NULL
             WHERE id = ?1 AND status = 'queued'",
        )?
        .execute(params![id, status.as_str(), reason])?;
    if changed == 0 {
        return Err(StoreError::NotQueued(id));
    }
    Ok(())
}

fn update_started(conn: &Connection, start: &StartRun) -> Result<(), StoreError> {
    let (pid, pid_start) = start.process.map_or((None, None), |(pid, start)| {
        (Some(pid), i64::try_from(start).ok())
    });
    let changed = conn
        .prepare_cached(
            "UPDATE runs SET status = 'running', started_at = ?2, queue_ms = ?3, pid = ?4,
                             pid_start = ?5, error = NULL, pending_params = NULL
             WHERE id = ?1 AND status = 'queued'",
        )?
        .execute(params![
            start.id,
            start.started_at,
            start.queue_ms,
            pid,
            pid_start
        ])?;
    if changed == 0 {
        return Err(StoreError::NotQueued(start.id));
    }
    Ok(())
}

fn update_finished(conn: &Connection, finish: &Finish) -> Result<(), StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE runs SET status = ?2, finished_at = ?3, error = ?4, message = ?5, pid = NULL,
                             pid_start = NULL
             WHERE id = ?1 AND status = 'running'",
        )?
        .execute(params![
            finish.id,
            finish.status.as_str(),
            finish.finished_at,
            finish.error,
            finish.message,
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

/// Oldest first, through the `scheduled_at` index; runs waiting or going are kept whatever
/// their age.
fn prune(conn: &Connection, before: i64, limit: u32) -> Result<u64, StoreError> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM runs WHERE id IN (
                 SELECT id FROM runs WHERE scheduled_at < ?1
                     AND status NOT IN ('queued', 'running')
                 ORDER BY scheduled_at LIMIT ?2)",
        )?
        .execute(params![before, limit])?;
    Ok(deleted as u64)
}

/// Several fires of one job may be recorded out of order; the last fire only moves forward.
fn advance(conn: &Connection, job: &str, at: i64, timing: Option<&str>) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO job_state (job, last_fire, timing) VALUES (?1, ?2, ?3)
         ON CONFLICT (job) DO UPDATE SET last_fire = max(coalesce(last_fire, ?2), ?2),
                                         timing = coalesce(?3, timing)",
    )?
    .execute(params![job, at, timing])?;
    Ok(())
}

fn queued_fires(conn: &Connection) -> Result<Vec<QueuedFire>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT id, job, trigger, attempt, scheduled_at, queued_at, pending_params FROM runs
         WHERE status = 'queued' ORDER BY id",
    )?;
    let mut rows = statement.query([])?;
    let mut fires = Vec::new();
    let mut damaged = Vec::new();
    while let Some(row) = rows.next()? {
        let decoded = (|| {
            let trigger: String = column(row, "trigger")?;
            let params: Option<String> = column(row, "pending_params")?;
            let scheduled_at: i64 = column(row, "scheduled_at")?;
            let accepted_at: Option<i64> = column(row, "queued_at")?;
            Ok::<_, rows::Problem>(QueuedFire {
                id: column(row, "id")?,
                job: column(row, "job")?,
                trigger: trigger
                    .parse::<Trigger>()
                    .map_err(|e| format!("column `trigger`: {e}"))?,
                attempt: column(row, "attempt")?,
                scheduled_at,
                accepted_at: accepted_at.unwrap_or(scheduled_at),
                params: params
                    .map(|text| serde_json::from_str(&text))
                    .transpose()
                    .map_err(|e| format!("column `pending_params` is not JSON ({e})"))?,
            })
        })();
        // A queued fire that does not decode cannot run; it stays queued, and the log says so
        // at every start until the row is mended or removed.
        match decoded {
            Ok(fire) => fires.push(fire),
            Err(problem) => damaged.push(DamagedRow {
                id: rows::run_id(row),
                table: "runs",
                problem,
            }),
        }
    }
    Ok(warned(fires, &damaged))
}

fn fired_since(conn: &Connection, jobs: &[String], since: i64) -> Result<Vec<String>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT 1 FROM runs INDEXED BY runs_by_job
         WHERE job = ?1 AND trigger = 'schedule' AND scheduled_at >= ?2 LIMIT 1",
    )?;
    let mut fired = Vec::new();
    for job in jobs {
        if statement
            .query_row(params![job, since], |_| Ok(()))
            .optional()?
            .is_some()
        {
            fired.push(job.clone());
        }
    }
    Ok(fired)
}

fn abandon_orphans(
    conn: &Connection,
    last_alive: i64,
    reason: &str,
) -> Result<Vec<OrphanedRun>, StoreError> {
    let orphans = {
        let mut statement = conn.prepare_cached(
            "SELECT id, job, pid, pid_start FROM runs WHERE status = 'running' ORDER BY id",
        )?;
        let mut rows = statement.query([])?;
        let mut orphans = Vec::new();
        let mut damaged = Vec::new();
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
                Err(problem) => damaged.push(DamagedRow {
                    id: rows::run_id(row),
                    table: "runs",
                    problem,
                }),
            }
        }
        warned(orphans, &damaged)
    };
    conn.prepare_cached(
        "UPDATE runs SET status = 'abandoned', error = ?2, pid = NULL, pid_start = NULL,
                         finished_at = max(coalesce(started_at, ?1), ?1)
         WHERE status = 'running'",
    )?
    .execute(params![last_alive, reason])?;
    Ok(orphans)
}

/// The daemon goes on without the rows that do not decode; the log says which they are.
fn warned<T>(value: T, damaged: &[DamagedRow]) -> T {
    for row in damaged {
        tracing::warn!("skipped a damaged row of the run history: {row}");
    }
    value
}
