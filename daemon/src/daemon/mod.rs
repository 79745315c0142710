//! `pacerd`: load the config, open the history, find the plugins, then loop: sleep until the
//! next thing is due, fire, admit, and answer the control socket, until a signal stops it.

mod args;
mod chain;
mod config_watch;
mod engine;
mod metrics;
mod notify;
mod reboot;
mod recovery;
mod retention;
mod runner;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::{self, Environment};
use crate::control;
use crate::plugins::{Registry, ScanOptions};
use crate::store::Store;
use crate::store::sqlite::SqliteStore;
use crate::time::{Clock, SystemClock, to_ms};
use crate::worker::Launcher;

pub use args::Args;
use engine::Engine;
use runner::{RunEnv, RunEvent};

/// The wall clock is re-read at least this often, so a clock step is noticed within a minute
/// even while nothing is due (tokio's timers are monotonic and would not notice).
const MAX_SLEEP_MS: i64 = 60_000;

/// What `pacerd` is started with.
#[derive(Debug, Clone)]
pub struct Options {
    /// The config file.
    pub config: PathBuf,
}

/// Runs the daemon until SIGTERM or SIGINT; returns once every run has ended and been recorded.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(options, Arc::new(SystemClock)))
}

async fn serve(options: &Options, clock: Arc<dyn Clock>) -> anyhow::Result<()> {
    let config = config::load(&options.config, Environment::current())
        .map_err(|errors| anyhow!("{errors}"))
        .context("the config is invalid; pacerd did not start")?;
    let config = Arc::new(config);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.daemon.database)?);
    let orphans = store
        .abandon_orphans(
            to_ms(clock.now()),
            "pacerd stopped while this run was going (found at the next start)".to_owned(),
        )
        .await?;
    if !orphans.is_empty() {
        let killed = recovery::kill_leftovers(&orphans);
        tracing::warn!(
            runs = orphans.len(),
            processes_killed = killed,
            "runs left by a previous pacerd are recorded as abandoned"
        );
    }
    let launcher = Launcher::current("pacerd");
    let registry = Registry::discover(
        &config.daemon.plugin_dirs,
        &launcher,
        ScanOptions::for_current_user(),
    )
    .await;
    let (listener, access) = control::server::bind(&config.daemon.socket).with_context(|| {
        format!(
            "cannot listen on the control socket {}",
            config.daemon.socket.display()
        )
    })?;
    let states = store.job_states().await?;
    let last_status = store.last_statuses().await?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let env = Arc::new(RunEnv {
        store: Arc::clone(&store),
        launcher,
        output_limit: config.daemon.output_limit,
        events: events_tx,
        clock: Arc::clone(&clock),
    });
    let metrics = Arc::new(metrics::Metrics::new(
        config.pools.keys(),
        config.daemon.metrics_listen.is_some(),
    ));
    if metrics.exported() {
        let names = config.jobs.iter().map(|job| job.name.clone()).collect();
        metrics.seed_last_success(&store.last_successes(names).await?);
        let paused = states
            .iter()
            .filter(|(_, state)| state.paused)
            .map(|(name, _)| name.clone())
            .collect();
        metrics.schedules(&config.jobs, &paused, clock.now());
    }
    let http = crate::web::Listeners::bind(&config.daemon).await?;
    let scrapes: Arc<dyn crate::web::MetricsSource> = Arc::clone(&metrics) as _;
    let (plugin_changes, mut plugin_events) = mpsc::unbounded_channel();
    let (rescans, mut rescanned) = mpsc::unbounded_channel();
    let mut engine = Engine::new(
        Arc::clone(&config),
        registry,
        &states,
        last_status,
        env,
        engine::Channels {
            plugin_changes,
            rescans,
        },
        metrics,
    );
    let runtime_dir = config.daemon.socket.parent().unwrap_or(Path::new("/"));
    engine.fire_at_boot(reboot::take_due(runtime_dir, &config.jobs));
    crate::sys::return_free_memory();
    let (control_tx, mut control_rx) = mpsc::channel(64);
    let http_server = tokio::spawn(http.serve(Arc::clone(&config), control_tx.clone(), scrapes));
    let server = tokio::spawn(control::server::serve(listener, control_tx, access));
    let (config_changes, mut config_events) = mpsc::unbounded_channel();
    let config_watcher = config_watch::ConfigWatcher::new(&options.config, config_changes);
    let pruner = tokio::spawn(retention::prune_forever(
        Arc::clone(&store),
        config.daemon.history_retention,
        Arc::clone(&clock),
    ));
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tracing::info!(
        jobs = config.jobs.len(),
        config = %options.config.display(),
        socket = %config.daemon.socket.display(),
        "pacerd is ready"
    );
    notify::ready(&format!("{} jobs", config.jobs.len()));
    let watchdog = notify::watchdog_interval();
    let mut next_alive = tokio::time::Instant::now();

    loop {
        if let Some(interval) = watchdog
            && tokio::time::Instant::now() >= next_alive
        {
            notify::alive();
            next_alive = tokio::time::Instant::now() + interval;
        }
        let now = engine.now();
        let sleep_ms = engine
            .wake_at(now)
            .map_or(MAX_SLEEP_MS, |at| (at - now).clamp(0, MAX_SLEEP_MS));
        let mut wake = tokio::time::Instant::now()
            + Duration::from_millis(u64::try_from(sleep_ms).unwrap_or(0));
        if watchdog.is_some() {
            wake = wake.min(next_alive);
        }
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            Some(event) = events.recv() => {
                let now = engine.now();
                engine.on_event(event, now);
            }
            Some(()) = plugin_events.recv() => {
                let now = engine.now();
                engine.plugins_changed(now);
            }
            Some(registry) = rescanned.recv() => engine.install_registry(registry),
            Some(incoming) = control_rx.recv() => {
                engine.handle(incoming.request, &incoming.reply);
            }
            Some(()) = config_events.recv() => {
                config_watcher.rewatch();
                let now = engine.now();
                engine.config_changed(now);
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                let now = engine.now();
                // The outcome is logged by `reload`; an invalid config leaves the old one.
                let _ = engine.reload(now);
            }
        }
        let now = engine.now();
        engine.tick(now);
        engine.reap_records();
    }

    tracing::info!(in_flight = engine.in_flight(), "stopping");
    notify::stopping();
    server.abort();
    pruner.abort();
    http_server.abort();
    engine.stop_admitting();
    let grace = tokio::time::sleep(engine.config().daemon.shutdown_grace);
    tokio::pin!(grace);
    let mut cancelled = false;
    while engine.in_flight() > 0 {
        tokio::select! {
            Some(event) = events.recv() => {
                let now = engine.now();
                drain_event(&mut engine, event, now);
            }
            () = &mut grace, if !cancelled => {
                engine.cancel_all("pacerd stopped and shutdown_grace elapsed");
                cancelled = true;
            }
            _ = terminate.recv(), if !cancelled => {
                engine.cancel_all("pacerd was stopped at once (a second signal)");
                cancelled = true;
            }
            _ = interrupt.recv(), if !cancelled => {
                engine.cancel_all("pacerd was stopped at once (a second signal)");
                cancelled = true;
            }
        }
    }
    engine.flush_records().await;
    if let Err(e) = store.close().await {
        tracing::error!("cannot close the history cleanly: {e}");
    }
    let _ = std::fs::remove_file(&config.daemon.socket);
    tracing::info!("pacerd stopped");
    Ok(())
}

/// While stopping, runs still report; nothing new is admitted.
fn drain_event(engine: &mut Engine, event: RunEvent, now: i64) {
    engine.on_event(event, now);
    engine.stop_admitting();
}
