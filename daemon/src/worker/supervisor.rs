//! The daemon's side of a worker: spawn it, hand it its assignment, collect its reports and
//! output, stop it at its deadline or on request, and reap it.

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;
use tokio::net::unix::pipe;
use tokio::sync::watch;
use tokio::time::Instant;

use super::output::Tail;
use super::protocol::{Assignment, LineFramer, Report};
use crate::sys::exit_watch;

/// The worker's argument that carries the descriptor limit it is to go back to.
pub(super) const DESCRIPTOR_LIMIT_ARG: &str = "--descriptor-limit=";

/// Starts workers from the running executable.
///
/// Workers inherit the daemon's environment untouched, and each drops systemd's variables
/// itself after exec ([`super::child`]): any change to a command's environment makes std
/// copy, sort and convert the whole environment on every spawn, which cost the daemon more
/// than the spawn itself. For the same reason the command (program, arguments, process group)
/// is built once and shared; a spawn sets only its directory and descriptors.
#[derive(Debug, Clone)]
pub struct Launcher {
    command: Arc<Mutex<Command>>,
}

impl Launcher {
    /// Workers of this very executable: `/proc/PID/exe` names the image that is running even
    /// after a package upgrade replaced the file, so workers always speak the daemon's protocol.
    /// The daemon's own pid, not `self`: the path is resolved in the new process, and looking
    /// up its own `/proc` entry would make reaping it slower. Workers go back to the descriptor
    /// limit the daemon started with (the daemon raised its own).
    pub fn current(arg0: &'static str) -> Launcher {
        let mut command = Command::new(format!("/proc/{}/exe", std::process::id()));
        command
            .arg0(arg0)
            .arg("worker")
            .args(
                crate::descriptors::limit_for_runs()
                    .map(|limit| format!("{DESCRIPTOR_LIMIT_ARG}{limit}")),
            )
            .process_group(0);
        Launcher {
            command: Arc::new(Mutex::new(command)),
        }
    }

    /// Spawns a worker whose working directory is `workdir`.
    ///
    /// Only std's plain settings are used (no `pre_exec`, no uid change), so std spawns with
    /// `posix_spawn` rather than forking the daemon; the worker hardens itself after exec.
    pub fn spawn(&self, workdir: &Path) -> io::Result<Worker> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let (output_reader, output_writer) = io::pipe()?;
        let stderr_writer = output_writer.try_clone()?;
        let mut command = self
            .command
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        command
            .current_dir(workdir)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(output_writer)
            .stderr(stderr_writer);
        let spawned_after = boot_ticks();
        let spawned = command.spawn();
        // The daemon's copies of the worker's ends are closed at once, so EOF on them means the
        // worker (and everything it started) is gone.
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        drop(command);
        let child = spawned.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start a worker in {}: {e}", workdir.display()),
            )
        })?;
        let spawned = Instant::now();
        let spawned_at_ms = crate::time::to_ms(jiff::Timestamp::now());
        let pid = i32::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
        let pidfd = exit_watch(pid)?;
        ours.set_nonblocking(true)?;
        Ok(Worker {
            child,
            pid,
            spawned_after,
            pidfd,
            channel: UnixStream::from_std(ours)?,
            output: output_receiver(OwnedFd::from(output_reader))?,
            spawned,
            spawned_at_ms,
            renewals: None,
        })
    }
}

/// The daemon's end of a worker's output pipe, for tokio. The pipe was just made and its read
/// end is known to hold no other flag, so it is set non-blocking with one call (tokio's
/// checked conversion asks the kernel twice more).
fn output_receiver(reader: OwnedFd) -> io::Result<pipe::Receiver> {
    nix::fcntl::fcntl(
        &reader,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    pipe::Receiver::from_owned_fd_unchecked(reader)
}

/// A spawned worker process, not yet reaped.
#[derive(Debug)]
pub struct Worker {
    child: Child,
    pid: i32,
    /// The boot clock just before the spawn, in clock ticks.
    spawned_after: Option<u64>,
    pidfd: AsyncFd<OwnedFd>,
    channel: UnixStream,
    output: pipe::Receiver,
    spawned: Instant,
    spawned_at_ms: i64,
    /// In a cluster, the node's lease renewals, passed on to the worker (see `worker::guard`).
    renewals: Option<watch::Receiver<()>>,
}

/// How a worker may run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// SIGTERM to its process group this long after it was spawned.
    pub timeout: Option<Duration>,
    /// Output bytes kept (the tail).
    pub output_limit: u64,
    /// SIGKILL this long after SIGTERM.
    pub kill_grace: Duration,
}

/// Why the daemon stopped a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Its timeout elapsed.
    TimedOut(Duration),
    /// It was cancelled, for this reason.
    Cancelled(String),
}

/// What a worker reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reports {
    /// `Descriptor`: ABI version, name, version.
    pub descriptor: Option<(u32, Option<String>, Option<String>)>,
    /// Each `Verdict`, in order.
    pub validated: Vec<Option<String>>,
    /// `Returned`: `run`'s code.
    pub returned: Option<i32>,
    /// `Refused`: why the task could not be done.
    pub refused: Option<String>,
    /// The plugin's last message.
    pub message: Option<String>,
}

/// A reaped worker.
#[derive(Debug)]
pub struct Ended {
    /// How its process ended.
    pub exit: ExitStatus,
    /// What it reported.
    pub reports: Reports,
    /// Whether the daemon stopped it.
    pub stop: Option<Stop>,
    /// Its output.
    pub output: Tail,
}

impl Worker {
    /// The worker's pid, and the boot clock (in clock ticks) read just before it was spawned:
    /// together they identify it even after the pid is reused (see [`is_spawned_as`]).
    pub fn process(&self) -> (i32, Option<u64>) {
        (self.pid, self.spawned_after)
    }

    /// When it was spawned, Unix ms.
    pub fn spawned_at_ms(&self) -> i64 {
        self.spawned_at_ms
    }

    /// Passes each of the node's lease renewals on to the worker, whose assignment carries the
    /// lease (`Setup::lease_ms`).
    pub fn renewed_by(&mut self, renewals: watch::Receiver<()>) {
        self.renewals = Some(renewals);
    }

    /// Sends the worker its one assignment.
    pub async fn assign(&mut self, assignment: &Assignment) -> io::Result<()> {
        let mut line = serde_json::to_vec(assignment).map_err(io::Error::other)?;
        line.push(b'\n');
        self.channel.write_all(&line).await
    }

    /// Follows the worker until it exits, then kills whatever it left in its process group and
    /// reaps it. `cancel` resolving (with a reason) stops it like a timeout does.
    pub async fn supervise(
        mut self,
        limits: Limits,
        cancel: impl Future<Output = String>,
    ) -> Ended {
        let mut output = Tail::new(limits.output_limit);
        let mut reports = Reports::default();
        let mut framer = LineFramer::default();
        let mut stop = None;
        let mut kill_at = None;
        let term_at = limits.timeout.map(|timeout| self.spawned + timeout);
        // Allocated when the first bytes arrive, and never zeroed: most runs write no output,
        // and every byte read is written before it is looked at.
        let mut channel_buf = Vec::new();
        let mut output_buf = Vec::new();
        let (mut channel_open, mut output_open) = (true, true);
        tokio::pin!(cancel);
        loop {
            tokio::select! {
                exited = self.pidfd.readable() => {
                    if exited.is_ok() {
                        break;
                    }
                }
                ready = self.channel.readable(), if channel_open => {
                    channel_open = ready.is_ok()
                        && read_reports(
                            &self.channel,
                            &mut channel_buf,
                            &mut framer,
                            &mut reports,
                            &mut output,
                        ) != Read::Closed;
                }
                ready = self.output.readable(), if output_open => {
                    output_open = ready.is_ok()
                        && read_output(&self.output, &mut output_buf, &mut output) != Read::Closed;
                }
                () = sleep_until(term_at), if stop.is_none() => {
                    stop = limits.timeout.map(Stop::TimedOut);
                    kill_at = Some(self.terminate(limits.kill_grace));
                }
                reason = &mut cancel, if stop.is_none() => {
                    stop = Some(Stop::Cancelled(reason));
                    kill_at = Some(self.terminate(limits.kill_grace));
                }
                () = sleep_until(kill_at) => {
                    self.signal_group(Signal::SIGKILL);
                    kill_at = None;
                }
                renewed = next_renewal(&mut self.renewals) => {
                    if renewed {
                        // A full buffer means the worker is not reading: it is stopping.
                        let _ = self.channel.try_write(b"\n");
                    } else {
                        self.renewals = None;
                    }
                }
            }
        }
        // The worker is a zombie now: its pid, and so its process group's id, cannot be reused
        // until it is reaped. That makes this the safe moment to kill what it left behind.
        self.signal_group(Signal::SIGKILL);
        // What they wrote last; a descendant that escaped the kill may still hold the ends
        // open, so this takes what is there and does not wait for the end.
        while channel_open
            && read_reports(
                &self.channel,
                &mut channel_buf,
                &mut framer,
                &mut reports,
                &mut output,
            ) == Read::Data
        {}
        while output_open && read_output(&self.output, &mut output_buf, &mut output) == Read::Data {
        }
        let exit = reap(&mut self.child);
        Ended {
            exit,
            reports,
            stop,
            output,
        }
    }

    fn terminate(&self, grace: Duration) -> Instant {
        self.signal_group(Signal::SIGTERM);
        Instant::now() + grace
    }

    fn signal_group(&self, signal: Signal) {
        // ESRCH (the group is already empty) is the expected case after a clean exit.
        let _ = killpg(Pid::from_raw(self.pid), signal);
    }
}

/// Spawns a worker for a task that is not a run (inspect, validate), waits for it at most
/// `timeout`, and returns what it reported.
pub async fn perform(
    launcher: &Launcher,
    workdir: &Path,
    assignment: &Assignment,
    timeout: Duration,
) -> io::Result<Ended> {
    let mut worker = launcher.spawn(workdir)?;
    // A worker that dies before reading its assignment shows up in the result below.
    let _ = worker.assign(assignment).await;
    let limits = Limits {
        timeout: Some(timeout),
        output_limit: 64 * 1024,
        kill_grace: crate::config::defaults::KILL_GRACE,
    };
    Ok(worker.supervise(limits, std::future::pending()).await)
}

/// The next lease renewal (`false`: there will be none), or never without a lease.
async fn next_renewal(renewals: &mut Option<watch::Receiver<()>>) -> bool {
    match renewals {
        Some(renewals) => renewals.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn absorb(line: &[u8], reports: &mut Reports, output: &mut Tail) {
    let Ok(report) = serde_json::from_slice::<Report>(line) else {
        output.push(b"[pacer] the worker sent an unreadable report\n");
        return;
    };
    match report {
        Report::Log { level, line } => {
            let level = super::protocol::level_name(level);
            output.push(format!("[{level}] {line}\n").as_bytes());
        }
        Report::Message { text } => reports.message = Some(text),
        Report::Descriptor {
            abi_version,
            name,
            version,
        } => reports.descriptor = Some((abi_version, name, version)),
        Report::Verdict { error } => reports.validated.push(error),
        Report::Returned { code } => reports.returned = Some(code),
        Report::Refused { reason } => reports.refused = Some(reason),
    }
}

/// Bytes taken from a worker's channel or output per read.
const READ_SIZE: usize = 16 * 1024;

/// What one read from a worker's channel or output found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Bytes, taken in.
    Data,
    /// Nothing now.
    Empty,
    /// The end (or a failure, which ends it as well).
    Closed,
}

impl Read {
    fn of(result: io::Result<usize>) -> Read {
        match result {
            Ok(0) => Read::Closed,
            Ok(_) => Read::Data,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read::Empty,
            Err(_) => Read::Closed,
        }
    }
}

/// Reads what the channel holds now into `reports` (and `output`, for log lines), through
/// `buf`, which keeps its allocation from one read to the next.
fn read_reports(
    channel: &UnixStream,
    buf: &mut Vec<u8>,
    framer: &mut LineFramer,
    reports: &mut Reports,
    output: &mut Tail,
) -> Read {
    buf.clear();
    buf.reserve(READ_SIZE);
    let read = Read::of(channel.try_read_buf(buf));
    if read == Read::Data {
        for line in framer.push(buf) {
            absorb(&line, reports, output);
        }
    }
    read
}

/// Reads what the output pipe holds now into `output`, through `buf`.
fn read_output(pipe: &pipe::Receiver, buf: &mut Vec<u8>, output: &mut Tail) -> Read {
    buf.clear();
    buf.reserve(READ_SIZE);
    let read = Read::of(pipe.try_read_buf(buf));
    if read == Read::Data {
        output.push(buf);
    }
    read
}

/// Reaps the worker, whose exit the pidfd already reported.
fn reap(child: &mut Child) -> ExitStatus {
    loop {
        match child.wait() {
            Ok(status) => return status,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Only possible if something else reaped it; report it as killed.
            Err(_) => return ExitStatus::from_raw(libc::SIGKILL),
        }
    }
}

/// How long after the boot clock was read the kernel may stamp a worker's start: the spawn
/// itself, with room for a loaded machine. No pid is handed out twice that quickly.
const SPAWN_WINDOW_TICKS: u64 = 100;

/// The boot clock in clock ticks, the unit and clock of a process's start time in
/// `/proc/PID/stat`.
///
/// The kernel stamps a child's start time while spawning it, so the clock read just before
/// is a lower bound on it. Reading the stamp itself from `/proc` would cost a file read per
/// run, and more again when the process is reaped.
fn boot_ticks() -> Option<u64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    let per_second =
        u64::try_from(nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??).ok()?;
    let seconds = u64::try_from(now.tv_sec()).ok()?;
    let nanos = u64::try_from(now.tv_nsec()).ok()?;
    Some(seconds * per_second + nanos * per_second / 1_000_000_000)
}

/// Whether process `pid` is the worker recorded as spawned after boot tick `spawned_after`
/// (see [`Worker::process`]), and not an unrelated process that reused its pid.
pub fn is_spawned_as(pid: i32, spawned_after: u64) -> bool {
    process_start_ticks(pid)
        .is_some_and(|start| (spawned_after..=spawned_after + SPAWN_WINDOW_TICKS).contains(&start))
}

/// Field 22 of `/proc/PID/stat`: the process's start time in clock ticks after boot.
fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself hold spaces or parentheses.
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_recognized_by_the_boot_tick_read_before_its_spawn() {
        let before = boot_ticks().expect("the boot clock is readable");
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        assert!(is_spawned_as(pid, before));
        // A record of a spawn well before or after is another process that had the pid.
        assert!(!is_spawned_as(pid, before + 2 * SPAWN_WINDOW_TICKS));
        assert!(!is_spawned_as(
            pid,
            before.saturating_sub(2 * SPAWN_WINDOW_TICKS)
        ));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!is_spawned_as(pid, before), "a reaped process is no one");
    }
}
