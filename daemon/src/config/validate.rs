//! Raw config → typed [`Config`] parts, collecting every error with its `file:line:column`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use toml::Spanned;

use super::cluster::cluster_settings;
use super::error::{ConfigError, ConfigErrors, Lines};
use super::raw::{self, CatchUp, Overlap, Recover, Scalar};
use super::{
    ClusterSettings, DaemonSettings, Environment, Job, Pool, PressureLimits, Zone, defaults,
    offset_for, resolve,
};
use crate::schedule::ScheduleCache;
use crate::units::{self, DURATION_HINT};

/// One file being validated: its name for messages, its lines for positions, and the
/// directory its relative paths are resolved against.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Shared with every job the file defines.
    pub file: &'a Arc<Path>,
    pub lines: &'a Lines<'a>,
    /// Shared with every job the file defines.
    pub dir: &'a Arc<Path>,
}

impl Source<'_> {
    pub(super) fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            position: Some(self.lines.position(span.start)),
            message: message.into(),
        }
    }

    /// `file:line:column` of `span`, for messages that point at a second place.
    fn location(&self, span: Range<usize>) -> String {
        let (line, column) = self.lines.position(span.start);
        format!("{}:{line}:{column}", self.file.display())
    }
}

/// Collects errors for one load.
#[derive(Debug, Default)]
pub(super) struct Errors(Vec<ConfigError>);

impl Errors {
    pub(super) fn push(&mut self, error: ConfigError) {
        self.0.push(error);
    }

    /// How many were found so far.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Keeps the value of `result`, or records its error against `span` of `source`.
    pub(super) fn check<T>(
        &mut self,
        source: &Source<'_>,
        span: Range<usize>,
        result: Result<T, String>,
    ) -> Option<T> {
        result
            .map_err(|message| self.push(source.error(span, message)))
            .ok()
    }

    fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.0))
        }
    }
}

type Validated = (
    DaemonSettings,
    Option<ClusterSettings>,
    BTreeMap<String, Pool>,
    Vec<Arc<Job>>,
);

/// Validates the main file and its drop-ins together (job names are unique across all of them).
pub fn validate_files(
    main: &Source<'_>,
    file: raw::File,
    drop_ins: Vec<(Source<'_>, raw::DropIn)>,
    env: Environment,
) -> Result<Validated, ConfigErrors> {
    let mut errors = Errors::default();
    let daemon = daemon_settings(main, file.daemon, &mut errors);
    let pools = pools(main, file.pools, &mut errors);
    let cluster = cluster_settings(main, file.cluster, Some(&pools), &mut errors);
    let mut jobs: Vec<(Source<'_>, Spanned<raw::Job>)> =
        file.jobs.read.into_iter().map(|job| (*main, job)).collect();
    let mut unreadable: Vec<(Source<'_>, Spanned<String>)> = file
        .jobs
        .unreadable
        .into_iter()
        .map(|name| (*main, name))
        .collect();
    for (source, drop_in) in drop_ins {
        jobs.extend(drop_in.jobs.read.into_iter().map(|job| (source, job)));
        unreadable.extend(
            drop_in
                .jobs
                .unreadable
                .into_iter()
                .map(|name| (source, name)),
        );
    }
    let validated = validate_jobs(jobs, unreadable, &daemon, &pools, env, &mut errors);
    errors.finish((daemon, cluster, pools, validated))
}

/// Validates `[cluster]` alone, for the CLI (pools are not checked: they are the daemon's).
pub fn validate_cluster_only(
    source: &Source<'_>,
    cluster: Option<Spanned<raw::Cluster>>,
) -> Result<Option<ClusterSettings>, ConfigErrors> {
    let mut errors = Errors::default();
    let settings = cluster_settings(source, cluster, None, &mut errors);
    errors.finish(settings)
}

/// Validates `[daemon]` alone, for the CLI.
pub fn validate_daemon_only(
    source: &Source<'_>,
    daemon: Option<Spanned<raw::Daemon>>,
) -> Result<DaemonSettings, ConfigErrors> {
    let mut errors = Errors::default();
    let settings = daemon_settings(source, daemon, &mut errors);
    errors.finish(settings)
}

fn daemon_settings(
    source: &Source<'_>,
    daemon: Option<Spanned<raw::Daemon>>,
    errors: &mut Errors,
) -> DaemonSettings {
    let raw = daemon.map(Spanned::into_inner);
    let raw = raw.as_ref();
    let path = |value: Option<&Spanned<String>>, default: &str| {
        value.map_or_else(|| default.into(), |v| resolve(source.dir, v.get_ref()))
    };
    let plugin_dirs = match raw.and_then(|d| d.plugin_dirs.as_ref()) {
        Some(dirs) => dirs
            .get_ref()
            .iter()
            .map(|dir| resolve(source.dir, dir.get_ref()))
            .collect(),
        None => defaults::PLUGIN_DIRS.iter().map(Into::into).collect(),
    };
    let timezone = match raw.and_then(|d| d.timezone.as_ref()) {
        Some(name) => errors
            .check(source, name.span(), zone(name.get_ref()))
            .unwrap_or_else(utc),
        None => utc(),
    };
    let count =
        |value: Option<&Spanned<i64>>, key: &str, min: i64, default: u32, errors: &mut Errors| {
            value.map_or(default, |v| {
                errors
                    .check(source, v.span(), bounded(*v.get_ref(), key, min))
                    .unwrap_or(default)
            })
        };
    let max_concurrency = count(
        raw.and_then(|d| d.max_concurrency.as_ref()),
        "max_concurrency",
        1,
        defaults::MAX_CONCURRENCY,
        errors,
    );
    let max_queue = count(
        raw.and_then(|d| d.max_queue.as_ref()),
        "max_queue",
        0,
        defaults::MAX_QUEUE,
        errors,
    );
    let max_catch_up =
        raw.and_then(|d| d.max_catch_up.as_ref())
            .map_or(defaults::MAX_CATCH_UP, |v| {
                errors
                    .check(source, v.span(), catch_up_cap(*v.get_ref()))
                    .unwrap_or(defaults::MAX_CATCH_UP)
            });
    let output_limit =
        raw.and_then(|d| d.output_limit.as_ref())
            .map_or(defaults::OUTPUT_LIMIT, |v| {
                errors
                    .check(source, v.span(), size(v.get_ref(), "output_limit", 0))
                    .unwrap_or(defaults::OUTPUT_LIMIT)
            });
    let pressure_value = |value: Option<&Spanned<f64>>, key: &str, errors: &mut Errors| {
        value.and_then(|v| errors.check(source, v.span(), pressure(*v.get_ref(), key)))
    };
    let pressure = PressureLimits {
        cpu: pressure_value(
            raw.and_then(|d| d.max_cpu_pressure.as_ref()),
            "max_cpu_pressure",
            errors,
        ),
        memory: pressure_value(
            raw.and_then(|d| d.max_memory_pressure.as_ref()),
            "max_memory_pressure",
            errors,
        ),
        io: pressure_value(
            raw.and_then(|d| d.max_io_pressure.as_ref()),
            "max_io_pressure",
            errors,
        ),
        dir: path(
            raw.and_then(|d| d.pressure_dir.as_ref()),
            defaults::PRESSURE_DIR,
        ),
    };
    let duration_or =
        |value: Option<&Spanned<String>>, key: &str, default: Duration, errors: &mut Errors| {
            value.map_or(default, |v| {
                errors
                    .check(source, v.span(), duration(v.get_ref(), key, false))
                    .unwrap_or(default)
            })
        };
    let history_retention = duration_or(
        raw.and_then(|d| d.history_retention.as_ref()),
        "history_retention",
        defaults::HISTORY_RETENTION,
        errors,
    );
    let shutdown_grace = duration_or(
        raw.and_then(|d| d.shutdown_grace.as_ref()),
        "shutdown_grace",
        defaults::SHUTDOWN_GRACE,
        errors,
    );
    let listen =
        |value: Option<&Spanned<String>>, key: &str, example: &str, errors: &mut Errors| {
            value.and_then(|v| {
                errors.check(
                    source,
                    v.span(),
                    v.get_ref().parse::<SocketAddr>().map_err(|_| {
                        format!(
                            "{key} `{}` is not an address and port such as {example}",
                            v.get_ref()
                        )
                    }),
                )
            })
        };
    let metrics_listen = listen(
        raw.and_then(|d| d.metrics_listen.as_ref()),
        "metrics_listen",
        "127.0.0.1:9464",
        errors,
    );
    let web_listen = listen(
        raw.and_then(|d| d.web_listen.as_ref()),
        "web_listen",
        "127.0.0.1:9181",
        errors,
    );
    DaemonSettings {
        plugin_dirs,
        database: path(raw.and_then(|d| d.database.as_ref()), defaults::DATABASE),
        socket: path(raw.and_then(|d| d.socket.as_ref()), defaults::SOCKET),
        timezone,
        max_concurrency,
        max_queue,
        max_catch_up,
        output_limit,
        pressure,
        history_retention,
        shutdown_grace,
        metrics_listen,
        web_listen,
        web_show_output: raw
            .and_then(|d| d.web_show_output.as_ref())
            .is_some_and(|v| *v.get_ref()),
    }
}

fn pools(
    source: &Source<'_>,
    raw: BTreeMap<Spanned<String>, Spanned<raw::Pool>>,
    errors: &mut Errors,
) -> BTreeMap<String, Pool> {
    let mut pools = BTreeMap::new();
    pools.insert(
        defaults::POOL.to_owned(),
        Pool {
            max_concurrency: None,
            max_starts_per_second: None,
        },
    );
    for (name, pool) in raw {
        errors.check(source, name.span(), identifier(name.get_ref(), "pool name"));
        let pool = pool.into_inner();
        let max_concurrency = pool.max_concurrency.and_then(|v| {
            errors.check(
                source,
                v.span(),
                bounded(*v.get_ref(), "max_concurrency", 1),
            )
        });
        let max_starts_per_second = pool.max_starts_per_second.and_then(|v| {
            let rate = *v.get_ref();
            errors.check(
                source,
                v.span(),
                if rate > 0.0 && rate.is_finite() {
                    Ok(rate)
                } else {
                    Err(format!("max_starts_per_second must be above 0, not {rate}"))
                },
            )
        });
        pools.insert(
            name.into_inner(),
            Pool {
                max_concurrency,
                max_starts_per_second,
            },
        );
    }
    pools
}

/// Validates `jobs`; `unreadable` names jobs whose entries could not be read (already
/// reported), which chains may still name.
fn validate_jobs(
    jobs: Vec<(Source<'_>, Spanned<raw::Job>)>,
    unreadable: Vec<(Source<'_>, Spanned<String>)>,
    daemon: &DaemonSettings,
    pools: &BTreeMap<String, Pool>,
    env: Environment,
    errors: &mut Errors,
) -> Vec<Arc<Job>> {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut chains = Vec::new();
    let mut validated = Vec::new();
    let mut schedules = ScheduleCache::default();
    for (source, job) in jobs {
        let name = &job.get_ref().name;
        let location = source.location(name.span());
        if let Some(first) = seen.get(name.get_ref()) {
            errors.push(source.error(
                name.span(),
                format!(
                    "duplicate job name `{}`: first defined at {first}; job names must be unique",
                    name.get_ref()
                ),
            ));
            // Its other errors are reported too, so one pass finds them all.
            let _ = validate_job(&source, job, daemon, pools, env, errors, &mut schedules);
            continue;
        }
        seen.insert(name.get_ref().clone(), location);
        let links: Links = job
            .get_ref()
            .on_success
            .iter()
            .flatten()
            .map(|target| (target.clone(), "on_success"))
            .chain(
                job.get_ref()
                    .on_failure
                    .iter()
                    .flatten()
                    .map(|target| (target.clone(), "on_failure")),
            )
            .collect();
        chains.push((source, name.get_ref().clone(), links));
        if let Some(job) = validate_job(&source, job, daemon, pools, env, errors, &mut schedules) {
            validated.push(Arc::new(job));
        }
    }
    for (source, name) in unreadable {
        let location = source.location(name.span());
        seen.entry(name.into_inner()).or_insert(location);
    }
    check_chains(&chains, &seen, errors);
    validated
}

fn validate_job(
    source: &Source<'_>,
    job: Spanned<raw::Job>,
    daemon: &DaemonSettings,
    pools: &BTreeMap<String, Pool>,
    env: Environment,
    errors: &mut Errors,
    schedules: &mut ScheduleCache,
) -> Option<Job> {
    let before = errors.0.len();
    let entry_span = job.span();
    let job = job.into_inner();
    let name = job.name.get_ref().clone();
    errors.check(source, job.name.span(), identifier(&name, "job name"));
    errors.check(source, job.plugin.span(), plugin_name(job.plugin.get_ref()));
    let timezone = match &job.timezone {
        Some(tz) => errors.check(source, tz.span(), zone(tz.get_ref())),
        None => Some(daemon.timezone.clone()),
    };
    let schedule = match (&job.schedule, &timezone) {
        (Some(text), Some(zone)) => errors
            .check(
                source,
                text.span(),
                schedules
                    .parse(text.get_ref(), &zone.tz)
                    .map_err(|e| e.to_string()),
            )
            .map(Some),
        (Some(text), None) => {
            // The zone is wrong, but the schedule's own mistakes are reported now too (read in
            // the daemon's zone), not one fix later.
            let _ = errors.check(
                source,
                text.span(),
                schedules
                    .parse(text.get_ref(), &daemon.timezone.tz)
                    .map_err(|e| e.to_string()),
            );
            None
        }
        (None, _) => Some(None),
    };
    let pool = match &job.pool {
        Some(pool) if !pools.contains_key(pool.get_ref()) => {
            errors.push(source.error(
                pool.span(),
                format!(
                    "unknown pool `{}`: define [pools.{}] or use one of: {}",
                    pool.get_ref(),
                    pool.get_ref(),
                    pools.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
            None
        }
        Some(pool) => Some(pool.get_ref().clone()),
        None => Some(defaults::POOL.to_owned()),
    };
    let optional_duration = |value: &Option<Spanned<String>>, key: &str, errors: &mut Errors| {
        value.as_ref().and_then(|v| {
            errors.check(
                source,
                v.span(),
                duration(v.get_ref(), key, key != "jitter"),
            )
        })
    };
    let timeout = optional_duration(&job.timeout, "timeout", errors);
    let retry_backoff = optional_duration(&job.retry_backoff, "retry_backoff", errors)
        .unwrap_or(defaults::RETRY_BACKOFF);
    let retry_backoff_max = optional_duration(&job.retry_backoff_max, "retry_backoff_max", errors)
        .unwrap_or(defaults::RETRY_BACKOFF_MAX);
    let jitter = optional_duration(&job.jitter, "jitter", errors).filter(|j| !j.is_zero());
    let retries = job
        .retries
        .as_ref()
        .and_then(|v| errors.check(source, v.span(), bounded(*v.get_ref(), "retries", 0)))
        .unwrap_or(0);
    let priority = job.priority.as_ref().and_then(|v| {
        errors.check(
            source,
            v.span(),
            i32::try_from(*v.get_ref())
                .map_err(|_| format!("priority must fit in 32 bits, not {}", v.get_ref())),
        )
    });
    let memory_limit = job.memory_limit.as_ref().and_then(|v| {
        errors.check(
            source,
            v.span(),
            size(v.get_ref(), "memory_limit", MIN_MEMORY_LIMIT),
        )
    });
    let user = job
        .user
        .as_ref()
        .and_then(|v| errors.check(source, v.span(), run_as_user(v.get_ref(), env)));
    let overlap = job.overlap.as_ref().and_then(|v| {
        errors.check(
            source,
            v.span(),
            choice(v.get_ref(), "overlap", &Overlap::CHOICES),
        )
    });
    let recover = job.recover.as_ref().and_then(|v| {
        errors.check(
            source,
            v.span(),
            choice(v.get_ref(), "recover", &Recover::CHOICES),
        )
    });
    let catch_up = job.catch_up.as_ref().and_then(|v| {
        errors.check(
            source,
            v.span(),
            choice(v.get_ref(), "catch_up", &CatchUp::CHOICES),
        )
    });
    let params = match &job.params {
        Some(table) => table_to_json(table.get_ref()),
        None => serde_json::Value::Object(serde_json::Map::new()),
    };
    let params_at = source.lines.position(
        job.params
            .as_ref()
            .map_or(entry_span.start, |table| table.span().start),
    );
    let plugin_at = source.lines.position(job.plugin.span().start);
    if errors.0.len() > before {
        return None;
    }
    Some(Job {
        jitter_offset: offset_for(&name, jitter),
        name,
        schedule_text: job.schedule.map(Spanned::into_inner),
        schedule: schedule?,
        timezone: timezone?,
        plugin: job.plugin.into_inner(),
        pool: pool?,
        overlap: overlap.unwrap_or_default(),
        timeout,
        retries,
        retry_backoff,
        retry_backoff_max,
        jitter,
        catch_up: catch_up.unwrap_or_default(),
        priority: priority.unwrap_or(0),
        enabled: job.enabled.unwrap_or(true),
        memory_limit,
        user,
        on_failure: job
            .on_failure
            .into_iter()
            .flatten()
            .map(Spanned::into_inner)
            .collect(),
        on_success: job
            .on_success
            .into_iter()
            .flatten()
            .map(Spanned::into_inner)
            .collect(),
        recover: recover.unwrap_or_default(),
        params: Arc::new(params),
        source: Arc::clone(source.file),
        line: source.lines.position(entry_span.start).0,
        plugin_at,
        params_at,
        workdir: Arc::clone(source.dir),
    })
}

/// A smaller address-space cap makes the worker fail before the plugin loads.
const MIN_MEMORY_LIMIT: u64 = 32 << 20;

/// A job's chain links as written: the target's name (with its span) and the key it is under.
type Links = Vec<(Spanned<String>, &'static str)>;

/// Every `on_success`/`on_failure` target exists, and no chain leads back to where it started.
fn check_chains(
    chains: &[(Source<'_>, String, Links)],
    known: &HashMap<String, String>,
    errors: &mut Errors,
) {
    let graph: HashMap<&str, Vec<&str>> = chains
        .iter()
        .map(|(_, name, links)| {
            (
                name.as_str(),
                links.iter().map(|(t, _)| t.get_ref().as_str()).collect(),
            )
        })
        .collect();
    for (source, name, links) in chains {
        for (target, key) in links {
            if !known.contains_key(target.get_ref()) {
                errors.push(source.error(
                    target.span(),
                    format!(
                        "{key} names `{}`, which is not a job; define it or remove the name",
                        target.get_ref()
                    ),
                ));
            } else if reaches(&graph, target.get_ref(), name) {
                errors.push(source.error(
                    target.span(),
                    format!(
                        "{key} of `{name}` names `{}`, which leads back to `{name}`: chains must not form a cycle",
                        target.get_ref()
                    ),
                ));
            }
        }
    }
}

/// Whether following links from `from` reaches `to`.
fn reaches(graph: &HashMap<&str, Vec<&str>>, from: &str, to: &str) -> bool {
    let mut stack = vec![from];
    let mut visited = std::collections::HashSet::new();
    while let Some(node) = stack.pop() {
        if node == to {
            return true;
        }
        if visited.insert(node) {
            stack.extend(graph.get(node).into_iter().flatten().copied());
        }
    }
    false
}

fn utc() -> Zone {
    Zone {
        name: defaults::TIMEZONE.to_owned(),
        tz: TimeZone::UTC,
    }
}

fn zone(name: &str) -> Result<Zone, String> {
    TimeZone::get(name)
        .map(|tz| Zone {
            name: name.to_owned(),
            tz,
        })
        .map_err(|_| {
            format!(
                "unknown time zone `{name}`: expected an IANA name such as `Europe/Berlin` \
                 or `UTC` from the system's tz database (/usr/share/zoneinfo)"
            )
        })
}

pub(super) fn bounded(value: i64, key: &str, min: i64) -> Result<u32, String> {
    if value < min {
        return Err(format!("{key} must be at least {min}, not {value}"));
    }
    u32::try_from(value).map_err(|_| format!("{key} is too large: {value}"))
}

/// `max_catch_up`: at most as many fires as a long outage lists one by one, so `all` can
/// always find the newest ones.
fn catch_up_cap(value: i64) -> Result<u32, String> {
    let cap = bounded(value, "max_catch_up", 0)?;
    if cap > defaults::MAX_LISTED_MISSED {
        return Err(format!(
            "max_catch_up must be at most {}, not {value}",
            defaults::MAX_LISTED_MISSED
        ));
    }
    Ok(cap)
}

fn size(value: &Scalar, key: &str, min: u64) -> Result<u64, String> {
    let bytes = match value {
        Scalar::Integer(n) => {
            u64::try_from(*n).map_err(|_| format!("{key} must not be negative, not {n}"))?
        }
        Scalar::Text(text) => units::parse_size(text).map_err(|e| format!("{key}: {e}"))?,
    };
    if bytes < min {
        return Err(format!(
            "{key} must be at least {}M, not {bytes} bytes",
            min >> 20
        ));
    }
    Ok(bytes)
}

pub(super) fn duration(text: &str, key: &str, positive: bool) -> Result<Duration, String> {
    let value = units::parse_duration(text)
        .map_err(|_| format!("{key}: `{text}` is not {DURATION_HINT}"))?;
    if positive && value.is_zero() {
        return Err(format!("{key} must be longer than 0, such as 30s"));
    }
    Ok(value)
}

fn choice<T: Copy>(value: &str, key: &str, choices: &[(&str, T)]) -> Result<T, String> {
    choices
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, choice)| *choice)
        .ok_or_else(|| {
            let names: Vec<String> = choices
                .iter()
                .map(|(name, _)| format!("`{name}`"))
                .collect();
            format!("{key} `{value}` is not one of {}", names.join(", "))
        })
}

fn pressure(value: f64, key: &str) -> Result<f64, String> {
    if value > 0.0 && value <= 100.0 {
        Ok(value)
    } else {
        Err(format!(
            "{key} is a percentage above 0 and at most 100, not {value}"
        ))
    }
}

/// The longest job or pool name: enough to say what a job does, short enough for a table
/// column and a log line.
const MAX_NAME_LEN: usize = 128;

pub(super) fn identifier(name: &str, what: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_LEN {
        let start: String = name.chars().take(20).collect();
        return Err(format!(
            "{what} `{start}…` is {} characters long; at most {MAX_NAME_LEN} are allowed",
            name.chars().count()
        ));
    }
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        Ok(())
    } else {
        Err(format!(
            "{what} `{name}` may only hold letters, digits, `_`, `.` and `-`"
        ))
    }
}

/// The contract's rule for the name a plugin declares.
pub fn plugin_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
    {
        Ok(())
    } else {
        Err(format!(
            "plugin name `{name}` may only hold lowercase letters, digits, `_` and `-`"
        ))
    }
}

fn run_as_user(name: &str, env: Environment) -> Result<String, String> {
    if !env.can_switch_users {
        return Err(format!(
            "user = \"{name}\" needs pacerd to run as root, or with CAP_SETUID and CAP_SETGID as \
             the packaged service does (it switches user before loading the plugin); run pacerd \
             so, or remove `user`"
        ));
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) if user.uid.is_root() && !env.can_run_as_root => Err(format!(
            "user = \"{name}\" runs the job as root, which needs pacerd to run as root or to \
             hold CAP_DAC_OVERRIDE, CAP_CHOWN and CAP_FOWNER: without them a run as root could \
             not read, change or chown other users' files. Set `user` to the user that owns the \
             job's files (such as \"www-data\"), or grant pacerd those capabilities with a \
             drop-in (systemctl edit pacer; see \"Jobs as root\" in \
             /usr/share/doc/pacer/operations.md)"
        )),
        Ok(Some(_)) => Ok(name.to_owned()),
        Ok(None) => Err(format!(
            "no user `{name}` on this system; create it or fix the name"
        )),
        Err(e) => Err(format!("cannot look up user `{name}`: {e}")),
    }
}

/// TOML params as the JSON the plugin receives; datetimes become RFC 3339 strings.
fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        toml::Value::String(s) => Json::String(s.clone()),
        toml::Value::Integer(i) => Json::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        toml::Value::Boolean(b) => Json::Bool(*b),
        toml::Value::Datetime(dt) => Json::String(dt.to_string()),
        toml::Value::Array(items) => Json::Array(items.iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => table_to_json(table),
    }
}

fn table_to_json(table: &toml::Table) -> serde_json::Value {
    serde_json::Value::Object(
        table
            .iter()
            .map(|(k, v)| (k.clone(), toml_to_json(v)))
            .collect(),
    )
}
