//! One run's view of its host.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::abi;

/// How often [`Context::sleep`] looks at the cancellation flag. Cancellation arrives as a flag
/// the host sets from its SIGTERM handler, and SIGKILL follows one second later, so a short
/// interval leaves the plugin most of that second to clean up.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// The severity of a log line, as the host records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something looks wrong but the run goes on.
    Warn,
    /// Progress worth keeping in the run's output.
    Info,
    /// Detail for debugging; `tracing`'s TRACE level maps here too.
    Debug,
}

impl Level {
    pub(crate) fn to_abi(self) -> i32 {
        match self {
            Self::Error => abi::LOG_ERROR,
            Self::Warn => abi::LOG_WARN,
            Self::Info => abi::LOG_INFO,
            Self::Debug => abi::LOG_DEBUG,
        }
    }

    /// `tracing` has one level more than the ABI; TRACE goes with DEBUG.
    pub(crate) fn from_tracing(level: &tracing::Level) -> Self {
        match *level {
            tracing::Level::ERROR => Self::Error,
            tracing::Level::WARN => Self::Warn,
            tracing::Level::INFO => Self::Info,
            _ => Self::Debug,
        }
    }
}

/// The run was asked to stop, by `pacer cancel`, its timeout or the daemon shutting down.
///
/// Converts into [`Error`](crate::Error) with `?`, giving the message `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cancelled")
    }
}

impl std::error::Error for Cancelled {}

/// What a [`Context`] talks to: the real host through the C ABI, or a test host.
pub(crate) trait Host: Send + Sync {
    /// Records one line (no newline) of output.
    fn log(&self, level: Level, line: &str);
    fn set_message(&self, message: &str);
    fn is_cancelled(&self) -> bool;
    fn deadline(&self) -> Option<SystemTime>;
}

/// One run's view of the host: logging, its result message, cancellation and deadline.
///
/// The plugin gets it by reference for the duration of one call. Its methods may be used from
/// any thread the plugin runs during that call (for example with [`std::thread::scope`]); it
/// cannot be kept beyond the call because the host's side of it ends there.
pub struct Context {
    host: Arc<dyn Host>,
}

impl Context {
    pub(crate) fn new(host: Arc<dyn Host>) -> Self {
        Self { host }
    }

    /// Appends `message` to the run's output at `level`, one host line per line of text.
    ///
    /// `tracing` events reach the same place; this is for plugins that do not use `tracing`.
    pub fn log(&self, level: Level, message: &str) {
        for line in message.lines() {
            self.host.log(level, line);
        }
    }

    /// Sets the message stored with the run record; the last call wins.
    ///
    /// A failure's message replaces it, so this is for saying what a successful run did.
    pub fn set_message(&self, message: &str) {
        self.host.set_message(message);
    }

    /// Whether the run has been asked to stop (cancelled, timed out or the daemon is stopping).
    ///
    /// The run's process group has been sent SIGTERM by then, and SIGKILL follows after a
    /// grace period, so a plugin that sees `true` should wrap up quickly.
    pub fn is_cancelled(&self) -> bool {
        self.host.is_cancelled()
    }

    /// When the host will kill the run (its timeout), if it has one.
    pub fn deadline(&self) -> Option<SystemTime> {
        self.host.deadline()
    }

    /// How long until [`deadline`](Context::deadline): zero once it has passed, `None` without
    /// a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        let deadline = self.deadline()?;
        Some(
            deadline
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    }

    /// Sleeps for `duration`, returning early with [`Cancelled`] once the run is asked to stop.
    ///
    /// Use it instead of [`std::thread::sleep`] wherever a run waits, so that cancelling it
    /// takes effect promptly.
    pub fn sleep(&self, duration: Duration) -> Result<(), Cancelled> {
        // `None`: so far in the future that the sleep only ends by cancellation.
        let end = Instant::now().checked_add(duration);
        loop {
            if self.is_cancelled() {
                return Err(Cancelled);
            }
            let left = match end {
                Some(end) => end.saturating_duration_since(Instant::now()),
                None => CANCEL_POLL,
            };
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(CANCEL_POLL));
        }
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("cancelled", &self.is_cancelled())
            .field("deadline", &self.deadline())
            .finish()
    }
}
