//! The daemon's log: to the journal with structured fields (`JOB`, `RUN_ID`, `STATUS`, ...)
//! when systemd connected stderr to it, else plain lines on stderr; never both, so nothing is
//! logged twice. `PACER_LOG` sets the level (`info` by default; `debug`, `pacer=debug`, ...).

use std::os::unix::fs::MetadataExt;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// The environment variable that sets the log filter.
pub const LOG_ENV: &str = "PACER_LOG";

/// Installs the daemon's log output.
pub fn init() {
    let filter = std::env::var(LOG_ENV)
        .ok()
        .and_then(|text| text.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let registry = tracing_subscriber::registry().with(filter);
    if stderr_is_the_journal() {
        match tracing_journald::layer() {
            Ok(journal) => {
                registry
                    .with(
                        journal
                            .with_field_prefix(None)
                            .with_syslog_identifier("pacerd".to_owned()),
                    )
                    .init();
                return;
            }
            Err(e) => eprintln!("pacerd: cannot log to the journal, logging to stderr: {e}"),
        }
    }
    registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .init();
}

/// systemd sets `JOURNAL_STREAM` to the device and inode of the stream it connected to stderr;
/// only when they match is stderr really the journal (a child of the service may have had its
/// stderr redirected and inherited the variable).
fn stderr_is_the_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = stream.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    device.parse() == Ok(meta.dev()) && inode.parse() == Ok(meta.ino())
}
