//! The worker process (`pacerd worker`): it hardens itself, loads one plugin, does one task and
//! reports over its channel. It is the only process that ever maps a plugin.
//!
//! The daemon spawns it plainly (so std uses `posix_spawn`, not a `fork` of a large parent) and
//! the worker applies its own settings after exec: parent-death signal, a clean stdin, the
//! memory limit and the user switch, all before the plugin's code is mapped.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use nix::sys::signal::Signal;

use super::protocol::{Assignment, Report, Setup, Task, fit_line};
use super::service_env;
use super::supervisor::DESCRIPTOR_LIMIT_ARG;
use crate::sys::{self, HostState, LoadedPlugin};

/// Exit code when the worker was started by hand rather than by the daemon.
const USAGE: i32 = 2;

/// Whether this process was started as a worker (`<binary> worker`): both binaries check this
/// before parsing their own arguments.
pub fn is_worker_invocation() -> bool {
    std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "worker")
}

/// Runs the worker and exits.
pub fn main() -> ! {
    let code = match serve() {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("pacer worker: {message}");
            USAGE
        }
    };
    let _ = std::io::stdout().flush();
    sys::flush_c_stdio();
    std::process::exit(code)
}

fn serve() -> Result<(), String> {
    // First, while this process has a single thread: the plugin must not see the service's
    // variables, which the daemon passed on untouched.
    service_env::drop_service_variables();
    // A plugin's faults end the process with their own signal, which the run's record names.
    sys::restore_default_actions(&[Signal::SIGSEGV, Signal::SIGBUS]);
    restore_descriptor_limit()?;
    // Dies with the daemon; if the daemon is already gone the channel read below sees EOF.
    let daemon = nix::unistd::getppid();
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("cannot set the parent-death signal: {e}"))?;
    let channel = take_channel()?;
    // Whatever pacerd itself inherited (from a shell, a supervisor, a build tool) stops here.
    sys::close_descriptors_except(channel.as_raw_fd());
    let mut line = String::new();
    // The daemon sends one line and then, in a cluster, only lease renewals, which the reader
    // may take a few of: the guard below just waits for the next.
    match BufReader::new(&channel).read_line(&mut line) {
        Ok(0) => return Ok(()),
        Ok(_) => {}
        Err(e) => return Err(format!("cannot read the assignment: {e}")),
    }
    let assignment: Assignment =
        serde_json::from_str(&line).map_err(|e| format!("bad assignment: {e}"))?;
    if let Some(ms) = assignment.setup.lease_ms {
        super::guard::watch(&channel, std::time::Duration::from_millis(ms))?;
    }
    let reporter = Reporter(Arc::new(Mutex::new(channel)));
    // SIGTERM asks the plugin to stop (it reads this through `is_cancelled`); SIGKILL follows.
    let cancelled = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&cancelled))
        .map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    if let Err(reason) = perform(&assignment, &reporter, &cancelled, daemon) {
        reporter.send(&Report::Refused { reason });
    }
    Ok(())
}

/// Goes back to the descriptor limit the daemon was started with, which the daemon passes
/// after raising its own (see [`crate::descriptors`]).
fn restore_descriptor_limit() -> Result<(), String> {
    let Some(limit) = std::env::args_os().nth(2).and_then(|arg| {
        arg.to_str()?
            .strip_prefix(DESCRIPTOR_LIMIT_ARG)?
            .parse::<u64>()
            .ok()
    }) else {
        return Ok(());
    };
    crate::descriptors::restore_limit(limit)
        .map_err(|e| format!("cannot set the limit on open descriptors to {limit}: {e}"))
}

/// The channel arrives as stdin. The plugin gets `/dev/null` there instead, so nothing it does
/// with stdin can corrupt the protocol.
fn take_channel() -> Result<UnixStream, String> {
    let stdin = std::io::stdin();
    let is_socket = nix::sys::stat::fstat(stdin.as_fd())
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK);
    if !is_socket {
        return Err("this command is internal: pacerd starts it for each run".to_owned());
    }
    let channel: OwnedFd = stdin
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("cannot duplicate the channel: {e}"))?;
    let null =
        std::fs::File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?;
    nix::unistd::dup2_stdin(&null).map_err(|e| format!("cannot replace stdin: {e}"))?;
    Ok(UnixStream::from(channel))
}

/// Sends reports; shared by the host callbacks, which plugins may call from any thread.
#[derive(Clone)]
struct Reporter(Arc<Mutex<UnixStream>>);

impl Reporter {
    fn send(&self, report: &Report) {
        let Ok(mut line) = serde_json::to_vec(report) else {
            return;
        };
        line.push(b'\n');
        let mut channel = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A failed write means the daemon is gone; the parent-death signal ends us next.
        let _ = channel.write_all(&line);
    }
}

fn perform(
    assignment: &Assignment,
    reporter: &Reporter,
    cancelled: &Arc<AtomicBool>,
    daemon: nix::unistd::Pid,
) -> Result<(), String> {
    apply_setup(&assignment.setup, daemon)?;
    if let Task::Run { env, .. } = &assignment.task {
        for (key, value) in env {
            sys::set_env(key, value);
        }
    }
    let plugin = LoadedPlugin::load(&assignment.plugin)?;
    let declared = plugin.declared();
    if declared.abi_version == pacer_plugin_api::abi::ABI_VERSION && !declared.has_run {
        return Err("the descriptor's run function is NULL".to_owned());
    }
    let expected = match &assignment.task {
        Task::Inspect => {
            reporter.send(&Report::Descriptor {
                abi_version: declared.abi_version,
                name: declared.name,
                version: declared.version,
            });
            return Ok(());
        }
        Task::Validate { expected_name, .. } | Task::Run { expected_name, .. } => expected_name,
    };
    if declared.abi_version != pacer_plugin_api::abi::ABI_VERSION {
        return Err(format!(
            "the library declares ABI version {}; this pacerd speaks version {}",
            declared.abi_version,
            pacer_plugin_api::abi::ABI_VERSION
        ));
    }
    if declared.name.as_deref() != Some(expected.as_str()) {
        return Err(format!(
            "the library now declares the name {:?}, not `{expected}`; it was replaced by another plugin",
            declared.name.unwrap_or_default()
        ));
    }
    match &assignment.task {
        Task::Inspect => {}
        Task::Validate { params, .. } => {
            for params in params {
                let error = validate_one(&plugin, reporter, cancelled, params).map(fit_line);
                reporter.send(&Report::Verdict { error });
            }
        }
        Task::Run {
            params,
            deadline_ms,
            ..
        } => {
            let host = host_state(reporter, cancelled, *deadline_ms);
            let text = params.to_string();
            let mut code = plugin.validate(&host, &text);
            if code == 0 {
                code = plugin.run(&host, &text);
            }
            let _ = std::io::stdout().flush();
            sys::flush_c_stdio();
            reporter.send(&Report::Returned { code });
        }
    }
    Ok(())
}

/// Validates one params object and returns why it is invalid, if it is.
fn validate_one(
    plugin: &LoadedPlugin,
    reporter: &Reporter,
    cancelled: &Arc<AtomicBool>,
    params: &serde_json::Value,
) -> Option<String> {
    let message = Arc::new(Mutex::new(None::<String>));
    let captured = Arc::clone(&message);
    let host = HostState {
        log: log_sender(reporter),
        message: Box::new(move |text| {
            *captured
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(text);
        }),
        cancelled: Arc::clone(cancelled),
        deadline_ms: -1,
    };
    let code = plugin.validate(&host, &params.to_string());
    let message = message
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    (code != 0).then(|| message.unwrap_or_else(|| format!("validate returned {code}")))
}

fn host_state(
    reporter: &Reporter,
    cancelled: &Arc<AtomicBool>,
    deadline_ms: Option<i64>,
) -> HostState {
    let messages = reporter.clone();
    HostState {
        log: log_sender(reporter),
        message: Box::new(move |text| messages.send(&Report::Message { text })),
        cancelled: Arc::clone(cancelled),
        deadline_ms: deadline_ms.unwrap_or(-1),
    }
}

fn log_sender(reporter: &Reporter) -> Box<dyn Fn(i32, String) + Send + Sync> {
    let reporter = reporter.clone();
    Box::new(move |level, line| {
        reporter.send(&Report::Log {
            level,
            line: fit_line(line),
        });
    })
}

/// The memory limit and user switch, applied to the worker itself before the plugin loads and
/// inherited by every process the plugin starts.
fn apply_setup(setup: &Setup, daemon: nix::unistd::Pid) -> Result<(), String> {
    if let Some(limit) = setup.memory_limit {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, limit, limit)
            .map_err(|e| format!("cannot set memory_limit: {e}"))?;
    }
    let daemon_was_root = nix::unistd::geteuid().is_root();
    if let Some(name) = &setup.user {
        switch_user(name)?;
        // The kernel clears the parent-death signal when credentials change: set it again, and
        // make sure the daemon did not end meanwhile (the worker would then have another parent).
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .map_err(|e| format!("cannot set the parent-death signal: {e}"))?;
        if nix::unistd::getppid() != daemon {
            return Err("pacerd ended while the run was starting".to_owned());
        }
    }
    // The daemon's capabilities are its own: a non-root process keeps them across setuid, and a
    // switch to root raises them to effective. The run keeps only what its user is entitled to.
    crate::privilege::confine_run(daemon_was_root)
}

/// Group, supplementary groups, then user (the order matters: after `setuid` the process could
/// no longer change its groups), and the login variables cron also sets.
fn switch_user(name: &str) -> Result<(), String> {
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| format!("cannot look up user `{name}`: {e}"))?
        .ok_or_else(|| format!("no user `{name}` on this system"))?;
    let c_name = CString::new(name).map_err(|_| format!("bad user name `{name}`"))?;
    nix::unistd::initgroups(&c_name, user.gid)
        .map_err(|e| format!("cannot set the groups of `{name}`: {e}"))?;
    nix::unistd::setgid(user.gid)
        .map_err(|e| format!("cannot switch to group {}: {e}", user.gid))?;
    nix::unistd::setuid(user.uid).map_err(|e| format!("cannot switch to user `{name}`: {e}"))?;
    sys::set_env("USER", name);
    sys::set_env("LOGNAME", name);
    sys::set_env("HOME", &user.dir.to_string_lossy());
    Ok(())
}
