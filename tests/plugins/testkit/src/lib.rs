//! `testkit`: a plugin that misbehaves on request, for Pacer's end-to-end tests.
//!
//! Params are `{"action": "<action>", ...}`; each action is a variant of [`Params`]. An unknown
//! action or key is a params error, so `pacer check` has something to report.

use std::io::{self, Write};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use pacer_plugin_api::{Context, Error, Plugin, export_plugin};
use serde::Deserialize;

/// What the test asks for.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
enum Action {
    /// Succeeds after writing what it is given.
    Ok {
        print: Option<String>,
        stderr: Option<String>,
        #[serde(default)]
        log: Vec<(LogLevel, String)>,
        message: Option<String>,
    },
    /// Returns an error with `message`.
    Fail { message: String },
    /// Panics with `message`.
    Panic { message: String },
    /// Aborts the process (SIGABRT).
    Abort,
    /// Dies by SIGSEGV.
    Segfault,
    /// Exits the process from inside `run`.
    Exit { code: i32 },
    /// Sleeps, returning early with an error when cancelled.
    Sleep { ms: u64 },
    /// Never returns and ignores cancellation, so only SIGKILL ends it.
    Hang {
        #[serde(default)]
        spawn_grandchild: bool,
    },
    /// Writes `bytes` bytes of `x` lines to stdout as fast as it can.
    Flood { bytes: u64 },
    /// Allocates and touches memory until an allocation fails.
    Leak,
    /// Prints `NAME=value` (or `NAME=<unset>`) for each name.
    Env { names: Vec<String> },
    /// Prints the working directory.
    Cwd,
    /// Prints the params it received as one line of JSON.
    Echo,
    /// Prints `deadline <Unix ms>` or `deadline none`.
    Deadline,
    /// Prints the process's identity: `pid`, `pgid`, `uid`, `gid`, `groups`, and its
    /// effective, permitted and ambient capabilities (`capeff`, `capprm`, `capamb`).
    Ids,
    /// Prints each open file descriptor as `fd N -> target`.
    Fds,
    /// Reads stdin to its end and prints `stdin N bytes`.
    Stdin,
    /// Prints `version <VERSION>`, so tests can tell a replaced library from the old one.
    Version,
    /// Appends `start RUN JOB TRIGGER SCHEDULED_AT NS` to `ledger`, sleeps `ms` (returning early
    /// when cancelled), then appends `end RUN NS`: when the plugin really ran, NS on
    /// CLOCK_MONOTONIC, which every process of the machine shares and nothing sets.
    Probe { ledger: String, ms: u64 },
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// The action, and the params as received, for `echo`.
#[derive(Debug, Deserialize)]
#[serde(try_from = "serde_json::Value")]
struct Params {
    action: Action,
    json: String,
}

impl TryFrom<serde_json::Value> for Params {
    type Error = serde_json::Error;

    fn try_from(value: serde_json::Value) -> Result<Self, Self::Error> {
        Ok(Self {
            action: Action::deserialize(&value)?,
            json: value.to_string(),
        })
    }
}

#[derive(Debug, Default)]
struct Testkit;

impl Plugin for Testkit {
    const NAME: &'static str = "testkit";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Params = Params;

    fn run(&self, ctx: &Context, params: Params) -> Result<(), Error> {
        match params.action {
            Action::Ok {
                print,
                stderr,
                log,
                message,
            } => {
                if let Some(text) = print {
                    println!("{text}");
                }
                if let Some(text) = stderr {
                    eprintln!("{text}");
                }
                for (level, text) in log {
                    match level {
                        LogLevel::Error => tracing::error!("{text}"),
                        LogLevel::Warn => tracing::warn!("{text}"),
                        LogLevel::Info => tracing::info!("{text}"),
                        LogLevel::Debug => tracing::debug!("{text}"),
                        LogLevel::Trace => tracing::trace!("{text}"),
                    }
                }
                if let Some(text) = message {
                    ctx.set_message(&text);
                }
                Ok(())
            }
            Action::Fail { message } => Err(Error::msg(message)),
            Action::Panic { message } => panic!("{message}"),
            Action::Abort => std::process::abort(),
            Action::Segfault => segfault(),
            Action::Exit { code } => std::process::exit(code),
            Action::Sleep { ms } => {
                ctx.sleep(Duration::from_millis(ms))?;
                Ok(())
            }
            Action::Hang { spawn_grandchild } => {
                if spawn_grandchild {
                    let child = Command::new("sleep").arg("1000").spawn()?;
                    println!("grandchild {}", child.id());
                    io::stdout().flush()?;
                }
                loop {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Action::Flood { bytes } => flood(bytes),
            Action::Leak => leak(),
            Action::Env { names } => {
                for name in names {
                    match std::env::var_os(&name) {
                        Some(value) => println!("{name}={}", value.to_string_lossy()),
                        None => println!("{name}=<unset>"),
                    }
                }
                Ok(())
            }
            Action::Cwd => {
                println!("{}", std::env::current_dir()?.display());
                Ok(())
            }
            Action::Echo => {
                println!("{}", params.json);
                Ok(())
            }
            Action::Ids => ids(),
            Action::Fds => {
                let mut fds: Vec<(u32, String)> = std::fs::read_dir("/proc/self/fd")?
                    .filter_map(Result::ok)
                    .filter_map(|entry| {
                        let fd = entry.file_name().to_str()?.parse().ok()?;
                        let target = std::fs::read_link(entry.path()).ok()?;
                        Some((fd, target.display().to_string()))
                    })
                    .collect();
                fds.sort();
                for (fd, target) in fds {
                    println!("fd {fd} -> {target}");
                }
                Ok(())
            }
            Action::Stdin => {
                let mut buf = Vec::new();
                io::Read::read_to_end(&mut io::stdin(), &mut buf)?;
                println!("stdin {} bytes", buf.len());
                Ok(())
            }
            Action::Version => {
                println!("version {}", Self::VERSION);
                Ok(())
            }
            Action::Probe { ledger, ms } => probe(ctx, &ledger, ms),
            Action::Deadline => {
                match ctx.deadline() {
                    Some(at) => println!("deadline {}", at.duration_since(UNIX_EPOCH)?.as_millis()),
                    None => println!("deadline none"),
                }
                Ok(())
            }
        }
    }
}

export_plugin!(Testkit);

/// The `Pid`, `Uid`, `Gid`, `Groups`, capability and `NoNewPrivs` lines of `/proc/self/status`,
/// and the process group from `/proc/self/stat`.
fn ids() -> Result<(), Error> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|rest| rest.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = &stat[stat.rfind(')').unwrap_or(0) + 2..];
    let pgid = after_name.split(' ').nth(2).unwrap_or("?");
    println!("pid {}", std::process::id());
    println!("pgid {pgid}");
    println!("uid {}", field("Uid:").first().copied().unwrap_or("?"));
    println!("gid {}", field("Gid:").first().copied().unwrap_or("?"));
    println!("groups {}", field("Groups:").join(","));
    println!(
        "capeff {}",
        field("CapEff:").first().copied().unwrap_or("?")
    );
    println!(
        "capprm {}",
        field("CapPrm:").first().copied().unwrap_or("?")
    );
    println!(
        "capamb {}",
        field("CapAmb:").first().copied().unwrap_or("?")
    );
    println!(
        "capinh {}",
        field("CapInh:").first().copied().unwrap_or("?")
    );
    println!(
        "capbnd {}",
        field("CapBnd:").first().copied().unwrap_or("?")
    );
    println!(
        "nonewprivs {}",
        field("NoNewPrivs:").first().copied().unwrap_or("?")
    );
    Ok(())
}

// `segfault` must die by a real SIGSEGV, as a buggy C plugin would, which safe Rust cannot do.
#[allow(unsafe_code)]
fn segfault() -> ! {
    // Page zero is never mapped on Linux (vm.mmap_min_addr), so this store faults. It is not a
    // literal null pointer because debug builds check `write_volatile` for null and would abort
    // (SIGABRT) instead.
    let unmapped = std::ptr::without_provenance_mut::<u8>(16);
    // SAFETY: none; crashing is the point. The store is volatile so it cannot be optimized away.
    unsafe { std::ptr::write_volatile(unmapped, 1) };
    unreachable!("a store to page zero returned")
}

fn flood(bytes: u64) -> Result<(), Error> {
    const LINE: &[u8] = &[b'x'; 80];
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut left = bytes;
    while left > 0 {
        let n = left.min(LINE.len() as u64) as usize;
        out.write_all(&LINE[..n - 1])?;
        out.write_all(b"\n")?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

fn leak() -> Result<(), Error> {
    const CHUNK: usize = 16 << 20;
    let mut mib = 0;
    loop {
        let mut chunk: Vec<u8> = Vec::new();
        if chunk.try_reserve_exact(CHUNK).is_err() {
            return Err(Error::msg(format_args!("out of memory after {mib} MiB")));
        }
        // Writing every byte makes the kernel back the pages, so the memory is really used.
        chunk.resize(CHUNK, 0xa5);
        chunk.leak();
        mib += CHUNK >> 20;
    }
}

fn probe(ctx: &Context, ledger: &str, ms: u64) -> Result<(), Error> {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| "-".to_owned());
    let run = var("PACER_RUN_ID");
    append(
        ledger,
        &format!(
            "start {run} {} {} {} {}\n",
            var("PACER_JOB"),
            var("PACER_TRIGGER"),
            var("PACER_SCHEDULED_AT"),
            monotonic_ns()?
        ),
    )?;
    let slept = ctx.sleep(Duration::from_millis(ms));
    append(ledger, &format!("end {run} {}\n", monotonic_ns()?))?;
    slept?;
    Ok(())
}

/// One `write` on a file opened for appending: lines from concurrent runs never interleave.
fn append(path: &str, line: &str) -> Result<(), Error> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(line.as_bytes())?;
    Ok(())
}

fn monotonic_ns() -> Result<i128, Error> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_err(|e| Error::msg(format!("clock_gettime: {e}")))?;
    Ok(i128::from(now.tv_sec()) * 1_000_000_000 + i128::from(now.tv_nsec()))
}
