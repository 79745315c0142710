//! `pacerd`: the edge around the engine. It loads the config, opens the history, finds the
//! plugins, then loops: sleep until the engine's next instant, feed it what happened (the
//! instant came, a write committed, a run started or ended, a control request, a signal), and
//! carry out what it decides, until it is told to stop.

mod args;
mod backend;
mod cluster;
mod config_watch;
mod edge;
mod metrics;
mod notify;
mod reboot;
mod recovery;
mod retention;
mod runner;
mod starting;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::admission::{Limits, LocalAdmission};
use crate::config::{self, Environment};
use crate::control;
use crate::engine::{Engine, Input};
use crate::plugins::{PluginWatcher, Registry, ScanOptions};
use crate::store::Store;
use crate::store::postgres::PgDatabase;
use crate::time::{Clock, SystemClock, to_ms};
use crate::worker::Launcher;

pub use args::Args;
use backend::{Backend, Opened};
use edge::Edge;
use runner::RunEnv;

/// The wall clock is re-read at least this often, so a clock step is noticed within a minute
/// even while nothing is due (tokio's timers are monotonic and would not notice).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Connections the web view may hold to a cluster's database: pages read one query at a time,
/// and a few people looking at once share them.
const WEB_CONNECTIONS: usize = 2;

/// What `pacerd` is started with.
#[derive(Debug, Clone)]
pub struct Options {
    /// The config file.
    pub config: PathBuf,
}

/// Why the daemon is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stop: let running jobs finish within `shutdown_grace`, then stop them.
    Gracefully,
    /// Stop running jobs now (a second signal while stopping).
    Now,
    /// This node of a cluster was fenced: its runs are stopping already; it exits, to rejoin
    /// when started again.
    Fenced,
}

/// Runs the daemon until SIGTERM or SIGINT; returns once every run has ended and been recorded.
pub fn run(options: &Options) -> anyhow::Result<()> {
    crate::sys::allocator_starting();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let (stops, stop) = mpsc::unbounded_channel();
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut hangup = signal(SignalKind::hangup())?;
        let (reloads, reload) = mpsc::unbounded_channel();
        // Signals become requests at the edge: the first SIGTERM or SIGINT stops gracefully,
        // a second one at once; SIGHUP reloads.
        tokio::spawn(async move {
            let mut asked = false;
            loop {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                    _ = hangup.recv() => {
                        let _ = reloads.send(());
                        continue;
                    }
                }
                let how = if asked { Stop::Now } else { Stop::Gracefully };
                asked = true;
                if stops.send(how).is_err() {
                    return;
                }
            }
        });
        serve(&options.config, Arc::new(SystemClock), stop, reload).await
    })
}

/// The daemon on the config at `config_path`, until `stop` says so; `reload` asks for a
/// reload (SIGHUP).
pub async fn serve(
    config_path: &std::path::Path,
    clock: Arc<dyn Clock>,
    mut stop: mpsc::UnboundedReceiver<Stop>,
    mut reload: mpsc::UnboundedReceiver<()>,
) -> anyhow::Result<()> {
    let up_since = to_ms(clock.now());
    match crate::descriptors::raise_limit() {
        Ok(raised) => tracing::debug!(from = raised.from, to = raised.to, "descriptor limit"),
        Err(e) => tracing::warn!("cannot raise the limit on open descriptors: {e}"),
    }
    let config = config::load(config_path, Environment::current())
        .map_err(|errors| anyhow!("{errors}"))
        .context("the config is invalid; pacerd did not start")?;
    let config = Arc::new(config);
    let launcher = Launcher::current("pacerd");
    let registry = Registry::discover(
        &config.daemon.plugin_dirs,
        &launcher,
        ScanOptions::for_current_user(),
    )
    .await;
    let taken = Backend::take(&config)?;
    let (listener, access) = control::server::bind(&config.daemon.socket).with_context(|| {
        format!(
            "cannot listen on the control socket {}",
            config.daemon.socket.display()
        )
    })?;
    let (control_tx, mut control_rx) = mpsc::channel(64);
    let server = tokio::spawn(control::server::serve(
        listener,
        control_tx.clone(),
        access,
        control::server::ClientLimits::reserving_for_runs(config.daemon.max_concurrency),
    ));
    let opening = match &config.cluster {
        None => format!(
            "opening the history {} and recording the runs a crash left before it takes \
             requests; while the history cannot be written (a full disk, a lock) this waits, \
             and pacerd's log says why",
            config.daemon.database.display()
        ),
        Some(_) => "joining the cluster before it takes requests; while the cluster's \
                    database cannot be reached this waits, and pacerd's log says why"
            .to_owned(),
    };
    // `None`: stopped while starting.
    let opened = tokio::select! {
        opened = taken.open(&config, &registry, &clock) => Some(opened),
        never = starting::answer_while_opening(&mut control_rx, &opening) => match never {},
        _ = stop.recv() => None,
    };
    let Some(Ok(opened)) = opened else {
        // A start that ends here leaves no socket behind, as a stop does.
        server.abort();
        let _ = std::fs::remove_file(&config.daemon.socket);
        return match opened {
            Some(Err(e)) => Err(e),
            _ => {
                tracing::info!("stopped while starting: pacerd did not start");
                Ok(())
            }
        };
    };
    let Opened {
        backend,
        resume,
        node,
    } = opened;
    let metrics = Arc::new(metrics::Metrics::new(
        config.pools.keys(),
        config.daemon.metrics_listen.is_some(),
    ));
    if metrics.exported() {
        if let Backend::Local(store) = &backend {
            let names = config.jobs.iter().map(|job| job.name.clone()).collect();
            metrics.seed_last_success(&store.last_successes(names).await?);
        }
        let paused = resume
            .states
            .iter()
            .filter(|(_, state)| state.paused)
            .map(|(name, _)| name.clone())
            .collect();
        metrics.schedules(&config.jobs, &paused, clock.now());
    }
    let http = crate::web::Listeners::bind(&config.daemon).await?;
    let scrapes: Arc<dyn crate::web::MetricsSource> = Arc::clone(&metrics) as _;
    let (inputs_tx, mut inputs) = mpsc::unbounded_channel();
    let renewals = tokio::sync::watch::Sender::new(());
    let env = Arc::new(RunEnv {
        store: backend.records(),
        launcher,
        kill_grace: config::defaults::KILL_GRACE,
        events: inputs_tx.clone(),
        clock: Arc::clone(&clock),
        lease: match &backend {
            Backend::Cluster(node) => Some(runner::RunLease {
                window: cluster::run_lease(&node.settings),
                renewals: renewals.subscribe(),
            }),
            Backend::Local(_) => None,
        },
    });
    let (plugin_changes, mut plugin_events) = mpsc::unbounded_channel();
    let now = to_ms(clock.now());
    let admission = Box::new(LocalAdmission::new(&Limits::of(&config), now));
    let mut engine = Engine::with_cluster(
        Arc::clone(&config),
        registry,
        admission,
        resume,
        std::process::id(),
        now,
        node,
    );
    engine.up_since(up_since);
    let in_flight = Arc::new(AtomicU32::new(0));
    let membership = match &backend {
        Backend::Cluster(node) => Some((
            cluster::spawn_membership(
                Arc::clone(node),
                inputs_tx.clone(),
                renewals,
                Arc::clone(&in_flight),
                config::defaults::KILL_GRACE,
                Arc::clone(&metrics),
            ),
            cluster::spawn_listener(node, inputs_tx.clone()),
        )),
        Backend::Local(_) => None,
    };
    let mut edge = Edge::new(
        env,
        backend.clone(),
        Arc::clone(&metrics),
        PluginWatcher::new(plugin_changes),
        config_path.to_owned(),
        config
            .daemon
            .socket
            .parent()
            .unwrap_or(std::path::Path::new("/"))
            .to_owned(),
        inputs_tx,
    );
    edge.apply(engine.take_effects());
    // What the engine wrote down at start (when new jobs were loaded) is committed before any
    // fire is taken, so a crash right after the start still finds their fires missed.
    edge.flush().await;
    crate::sys::return_free_memory();
    crate::sys::allocator_running();
    // The web view reads a cluster's history through a pool of its own, so that pages never
    // hold the connections the node's claims, admissions and finishes need.
    let web_history = match &backend {
        Backend::Cluster(node) if config.daemon.web_listen.is_some() => Some(
            PgDatabase::connect(&node.settings.database, WEB_CONNECTIONS)
                .context("cannot make the web view's pool of connections to the cluster")?,
        ),
        _ => None,
    };
    let http_server =
        tokio::spawn(http.serve(Arc::clone(&config), control_tx, scrapes, web_history));
    let (config_changes, mut config_events) = mpsc::unbounded_channel();
    let config_watcher = config_watch::ConfigWatcher::new(config_path, config_changes);
    // A cluster's health is its heartbeat's (see `cluster::spawn_membership`).
    let local = matches!(backend, Backend::Local(_));
    let (pruned, mut health) = match &backend {
        Backend::Local(store) => (
            retention::Pruned::Local(Arc::new(store.clone())),
            store.health(),
        ),
        Backend::Cluster(node) => (
            retention::Pruned::Cluster(Box::new(node.db().clone())),
            tokio::sync::watch::channel(None).1,
        ),
    };
    let pruner = tokio::spawn(retention::prune_forever(
        pruned,
        config.daemon.history_retention,
        Arc::clone(&clock),
    ));
    tracing::info!(
        jobs = config.jobs.len(),
        config = %config_path.display(),
        socket = %config.daemon.socket.display(),
        "pacerd is ready"
    );
    notify::ready(config.jobs.len(), None);
    let watchdog = notify::watchdog_interval();
    let mut next_alive = tokio::time::Instant::now();

    let mut fence = None;
    let how = loop {
        if let Some(interval) = watchdog
            && tokio::time::Instant::now() >= next_alive
        {
            notify::alive();
            next_alive = tokio::time::Instant::now() + interval;
        }
        edge.mark_alive();
        in_flight.store(engine.in_flight(), Ordering::Relaxed);
        let now = clock.now();
        let sleep = engine
            .next_wake(to_ms(now))
            .map_or(MAX_SLEEP, |at| crate::time::until(now, at).min(MAX_SLEEP));
        let mut wake = tokio::time::Instant::now() + sleep;
        if watchdog.is_some() {
            wake = wake.min(next_alive);
        }
        let input = tokio::select! {
            () = tokio::time::sleep_until(wake) => Input::Tick,
            Some(input) = inputs.recv() => input,
            Some(incoming) = control_rx.recv() => edge.control(incoming),
            Some(()) = plugin_events.recv() => Input::PluginsChanged,
            Some(()) = config_events.recv() => {
                config_watcher.rewatch();
                Input::ConfigChanged
            }
            Ok(()) = health.changed(), if local => {
                let unwritable = health.borrow_and_update().clone();
                Input::History(unwritable.map(|u| u.to_string()))
            }
            Some(()) = reload.recv() => Input::ReloadSignal,
            how = stop.recv() => break how.unwrap_or(Stop::Gracefully),
        };
        let fence_of = |input: &Input| match input {
            Input::Fenced(why) => Some(why.clone()),
            _ => None,
        };
        let mut fenced = fence_of(&input);
        let mut effects = engine.handle(input, to_ms(clock.now()));
        // What else has come meanwhile (runs that ended together, writes committed together,
        // requests sent together) is taken in the same step, so the records it causes are
        // committed together.
        while fenced.is_none() {
            let input = match inputs.try_recv() {
                Ok(input) => input,
                Err(_) => match control_rx.try_recv() {
                    Ok(incoming) => edge.control(incoming),
                    Err(_) => break,
                },
            };
            fenced = fence_of(&input);
            effects.extend(engine.handle(input, to_ms(clock.now())));
        }
        edge.apply(effects);
        if let Some(why) = fenced {
            fence = Some(why);
            break Stop::Fenced;
        }
    };

    let now = to_ms(clock.now());
    edge.apply(engine.handle(Input::Shutdown, now));
    tracing::info!(in_flight = engine.in_flight(), "stopping");
    if let Some(unwritable) = health.borrow().as_ref() {
        tracing::warn!(
            "{unwritable}; the stop waits until it can be written, so that the end of every run \
             is recorded"
        );
    }
    notify::stopping();
    pruner.abort();
    http_server.abort();
    if let Backend::Cluster(node) = &backend
        && how != Stop::Fenced
        && let Err(e) = node.node.stopping().await
    {
        tracing::warn!("cannot tell the cluster this node is stopping: {e}");
    }
    // The control socket answers while the stop waits (`pacer status` says it is stopping
    // and what for; a new run is refused), and closes once the runs' ends are recorded.
    let mut queues = Queues {
        inputs: &mut inputs,
        control: &mut control_rx,
        stop: &mut stop,
    };
    drain(&mut engine, &mut edge, &mut queues, how, &clock).await;
    server.abort();
    edge.flush().await;
    match &backend {
        Backend::Local(store) => {
            if let Err(e) = store.close().await {
                tracing::error!("cannot close the history cleanly: {e}");
            }
        }
        Backend::Cluster(node) => {
            if let Some((membership, listener)) = &membership {
                membership.abort();
                listener.abort();
            }
            if how != Stop::Fenced
                && let Err(e) = node.node.stopped().await
            {
                tracing::warn!("cannot tell the cluster this node stopped: {e}");
            }
        }
    }
    let _ = std::fs::remove_file(&config.daemon.socket);
    if let Some(why) = fence {
        anyhow::bail!(
            "{why}; this node stopped its runs and itself; start it again to rejoin the \
             cluster (systemd does, with Restart=on-failure)"
        );
    }
    tracing::info!("pacerd stopped");
    Ok(())
}

/// While stopping: runs in flight get `shutdown_grace` (none after a second signal), then are
/// stopped; their ends are still recorded (and their clients told). Fires waiting stay
/// `queued` for the next start.
async fn drain(
    engine: &mut Engine,
    edge: &mut Edge,
    queues: &mut Queues<'_>,
    how: Stop,
    clock: &Arc<dyn Clock>,
) {
    let grace = tokio::time::sleep(engine.config().daemon.shutdown_grace);
    tokio::pin!(grace);
    let mut stopped = false;
    if how == Stop::Now {
        stop_all(
            engine,
            edge,
            clock,
            "pacerd was stopped at once (a second signal)",
        );
        stopped = true;
    }
    while engine.in_flight() > 0 || engine.ends_unrecorded() {
        let input = tokio::select! {
            Some(input) = queues.inputs.recv() => input,
            Some(incoming) = queues.control.recv() => edge.control(incoming),
            () = &mut grace, if !stopped => {
                stopped = true;
                Input::StopAll("pacerd stopped and shutdown_grace elapsed".to_owned())
            }
            Some(_) = queues.stop.recv(), if !stopped => {
                stopped = true;
                Input::StopAll("pacerd was stopped at once (a second signal)".to_owned())
            }
            else => break,
        };
        let now = to_ms(clock.now());
        edge.apply(engine.handle(input, now));
    }
}

/// What the stop's wait listens to.
struct Queues<'a> {
    inputs: &'a mut mpsc::UnboundedReceiver<Input>,
    control: &'a mut mpsc::Receiver<control::server::Incoming>,
    stop: &'a mut mpsc::UnboundedReceiver<Stop>,
}

fn stop_all(engine: &mut Engine, edge: &mut Edge, clock: &Arc<dyn Clock>, reason: &str) {
    let now = to_ms(clock.now());
    edge.apply(engine.handle(Input::StopAll(reason.to_owned()), now));
}
