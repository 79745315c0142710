//! The daemon's log: to stderr, at the level `PACER_LOG` names (default `info`).

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// The environment variable that sets the log filter, such as `debug` or `pacer=debug`.
pub const LOG_ENV: &str = "PACER_LOG";

/// Installs the daemon's log output.
pub fn init() {
    let filter = std::env::var(LOG_ENV)
        .ok()
        .and_then(|text| text.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(filter)
        .init();
}
