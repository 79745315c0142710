//! Forwards `tracing` events to the host's log, one line at a time with its level.
//!
//! `tracing-subscriber`'s `fmt` does the formatting (fields, spans, the `message` field) and
//! hands each event's text to a `MakeWriter`, whose `make_writer_for` sees the event's level. A
//! hand-written `Subscriber` would have to redo that field and span bookkeeping for no gain.
//! Timestamps, levels and ANSI colours are left out: the host records the time and the level
//! itself.

use std::io;
use std::sync::{Arc, Once, PoisonError, RwLock};

use tracing_subscriber::fmt::MakeWriter;

use crate::Level;
use crate::context::Host;

/// The host of the call in progress, which receives events from every thread of the process.
///
/// Process-global because a plugin process serves exactly one call at a time. Forwarding holds
/// the read lock while it calls the host, so [`Attached`]'s drop waits for lines in flight and
/// no line reaches a host whose call has returned.
static CURRENT: RwLock<Option<Arc<dyn Host>>> = RwLock::new(None);

/// Routes `tracing` events from the whole process to `host` until dropped.
///
/// For calls through the C ABI; installs the process-wide subscriber on first use. Should
/// another global subscriber be in place already, it keeps the events.
pub(crate) fn attach(host: Arc<dyn Host>) -> Attached {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = tracing::subscriber::set_global_default(subscriber(Sink::Current));
    });
    *CURRENT.write().unwrap_or_else(PoisonError::into_inner) = Some(host);
    Attached
}

/// Stops forwarding to the attached host when dropped.
pub(crate) struct Attached;

impl Drop for Attached {
    fn drop(&mut self) {
        *CURRENT.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Runs `f` with `tracing` events of the current thread going to `host`.
///
/// For the test host: tests run in parallel threads of one process, so each call keeps its
/// events to itself instead of using the process-wide route.
pub(crate) fn scoped<R>(host: Arc<dyn Host>, f: impl FnOnce() -> R) -> R {
    tracing::subscriber::with_default(subscriber(Sink::Fixed(host)), f)
}

fn subscriber(sink: Sink) -> impl tracing::Subscriber + Send + Sync + 'static {
    tracing_subscriber::fmt()
        .with_writer(sink)
        .with_max_level(tracing::Level::TRACE)
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_ansi(false)
        .finish()
}

/// Where formatted events go.
enum Sink {
    /// The host in [`CURRENT`], if any; events are dropped between calls.
    Current,
    /// One host, whatever is current.
    Fixed(Arc<dyn Host>),
}

impl Sink {
    fn log(&self, level: Level, line: &str) {
        match self {
            Self::Current => {
                let current = CURRENT.read().unwrap_or_else(PoisonError::into_inner);
                if let Some(host) = current.as_ref() {
                    host.log(level, line);
                }
            }
            Self::Fixed(host) => host.log(level, line),
        }
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            sink: self,
            level: Level::Info,
            text: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        EventWriter {
            sink: self,
            level: Level::from_tracing(meta.level()),
            text: Vec::new(),
        }
    }
}

/// Collects one formatted event and sends it, line by line, when `fmt` drops it.
struct EventWriter<'a> {
    sink: &'a Sink,
    level: Level,
    text: Vec<u8>,
}

impl io::Write for EventWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter<'_> {
    fn drop(&mut self) {
        for line in String::from_utf8_lossy(&self.text).lines() {
            self.sink.log(self.level, line);
        }
    }
}
