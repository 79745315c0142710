//! Every default the daemon and the CLI use, in one place.

use std::time::Duration;

/// The config file read when neither `--config` nor `PACER_CONFIG` names one.
pub const CONFIG_PATH: &str = "/etc/pacer/pacer.toml";
/// The environment variable that names the config file.
pub const CONFIG_ENV: &str = "PACER_CONFIG";
/// Drop-in directory beside the config file; its `*.toml` files hold jobs only.
pub const DROP_IN_DIR: &str = "jobs.d";
/// Where plugins are looked for, in order.
pub const PLUGIN_DIRS: [&str; 2] = ["/usr/lib/pacer/plugins", "/usr/local/lib/pacer/plugins"];
/// The run history.
pub const DATABASE: &str = "/var/lib/pacer/pacer.db";
/// The control socket the CLI talks to.
pub const SOCKET: &str = "/run/pacer/pacer.sock";
/// Jobs without a `timezone` use this one unless `[daemon] timezone` says otherwise.
pub const TIMEZONE: &str = "UTC";
/// Runs in flight, all jobs together.
pub const MAX_CONCURRENCY: u32 = 8;
/// Fires waiting for a slot before further ones are recorded as skipped.
pub const MAX_QUEUE: u32 = 10_000;
/// Missed fires run per job with `catch_up = "all"`.
pub const MAX_CATCH_UP: u32 = 100;
/// Captured output kept per run: the tail, so the end of a long log (where the error usually
/// is) survives.
pub const OUTPUT_LIMIT: u64 = 1 << 20;
/// Where Linux pressure stall information is read.
pub const PRESSURE_DIR: &str = "/proc/pressure";
/// Runs older than this are pruned.
pub const HISTORY_RETENTION: Duration = Duration::from_secs(30 * 86_400);
/// How long running jobs get to finish when the daemon stops.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// The pool of jobs that name none.
pub const POOL: &str = "default";
/// The first delay before a retry.
pub const RETRY_BACKOFF: Duration = Duration::from_secs(10);
/// The longest delay before a retry.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(3600);
/// Between SIGTERM and SIGKILL when a run is stopped (timeout, cancel, shutdown).
pub const KILL_GRACE: Duration = Duration::from_secs(1);
/// Missed fires of one job listed one by one before the rest of a long outage is folded into
/// one record; also the largest `max_catch_up`, so `catch_up = "all"` always finds as many
/// missed fires as it may run.
pub const MAX_LISTED_MISSED: u32 = 10_000;
/// With `[cluster]`: a node whose heartbeat has not moved for this long is dead.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// The shortest `lease_ttl`: a node kills its runs (with [`KILL_GRACE`]) before its lease
/// runs out, so the lease must leave room for that.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// With `[cluster]`: how often a node beats.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// With `[cluster]`: a node further off the database clock stops proposing fires.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(2);
