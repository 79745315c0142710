//! Carries out what the engine decides: writes to the history, runs started and stopped,
//! answers to clients, metrics, config and plugin reads. Each effect's outcome comes back to
//! the engine as an input on one channel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::backend::Backend;
use super::cluster;
use super::metrics::Metrics;
use super::notify;
use super::reboot;
use super::runner::{self, RunEnv};
use crate::admission::FireKey;
use crate::config::{self, Environment, Job};
use crate::control::Response;
use crate::control::server::Incoming;
use crate::engine::{Effect, Input, ReplyTo, Ticket};
use crate::plugins::{PluginWatcher, Registry, ScanOptions};
use crate::store::Write;
use crate::store::postgres::Proposal;

/// The lock file is touched (the daemon's sign of life) at most this often.
const ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The edge's state: where answers and stop requests go.
#[derive(Debug)]
pub struct Edge {
    env: Arc<RunEnv>,
    backend: Backend,
    metrics: Arc<Metrics>,
    watcher: PluginWatcher,
    config_path: PathBuf,
    /// Where the `@reboot` marker lives: the control socket's directory (which a reload does
    /// not move: it applies at the next start).
    runtime_dir: PathBuf,
    inputs: mpsc::UnboundedSender<Input>,
    replies: HashMap<ReplyTo, mpsc::UnboundedSender<Response>>,
    next_reply: ReplyTo,
    stops: HashMap<FireKey, oneshot::Sender<String>>,
    /// Writes in flight, so stopping waits for them.
    writes: JoinSet<()>,
    alive_at: Option<Instant>,
}

impl Edge {
    /// An edge whose outcomes go to `inputs`.
    pub fn new(
        env: Arc<RunEnv>,
        backend: Backend,
        metrics: Arc<Metrics>,
        watcher: PluginWatcher,
        config_path: PathBuf,
        runtime_dir: PathBuf,
        inputs: mpsc::UnboundedSender<Input>,
    ) -> Edge {
        Edge {
            env,
            backend,
            metrics,
            watcher,
            config_path,
            runtime_dir,
            inputs,
            replies: HashMap::new(),
            next_reply: 1,
            stops: HashMap::new(),
            writes: JoinSet::new(),
            alive_at: None,
        }
    }

    /// A control request becomes an input; its answers go back on its connection.
    pub fn control(&mut self, incoming: Incoming) -> Input {
        let to = self.next_reply;
        self.next_reply += 1;
        self.replies.insert(to, incoming.reply);
        Input::Control {
            request: incoming.request,
            reply: to,
        }
    }

    /// Notes the daemon's sign of life, at most once a second.
    pub fn mark_alive(&mut self) {
        if let Backend::Local(store) = &self.backend
            && self.alive_at.is_none_or(|at| at.elapsed() >= ALIVE_EVERY)
        {
            self.alive_at = Some(Instant::now());
            store.mark_alive();
        }
    }

    /// Carries out `effects`; the writes among them, and the records of the runs started or
    /// ended meanwhile, go to the history together (group commit).
    pub fn apply(&mut self, effects: Vec<Effect>) {
        let mut writes: Vec<Write> = Vec::new();
        let mut tickets: Vec<Option<Ticket>> = Vec::new();
        let mut claims: Vec<(Proposal, Ticket)> = Vec::new();
        for effect in effects {
            match effect {
                Effect::Write(write, ticket) => {
                    writes.push(write);
                    tickets.push(ticket);
                }
                Effect::Claim(proposal, ticket) => claims.push((*proposal, ticket)),
                Effect::Admit(room) => {
                    if let Backend::Cluster(node) = &self.backend {
                        cluster::admit(node, room, self.inputs.clone());
                    }
                }
                Effect::Refuse { run_id, reason } => {
                    if let Backend::Cluster(node) = &self.backend {
                        cluster::refuse(node, run_id, reason);
                    }
                }
                Effect::Cancel { id, to } => {
                    if let (Backend::Cluster(node), Some(reply)) =
                        (&self.backend, self.replies.remove(&to))
                    {
                        cluster::cancel(node, id, reply);
                    }
                }
                Effect::Follow { id, to, wait } => {
                    if let (Backend::Cluster(node), Some(reply)) =
                        (&self.backend, self.replies.remove(&to))
                    {
                        cluster::follow(node, id, reply, wait);
                    }
                }
                Effect::Watch { id } => {
                    if let Backend::Cluster(node) = &self.backend {
                        cluster::watch(node, id, self.inputs.clone());
                    }
                }
                Effect::Start(start) => {
                    let (stop, stopped) = oneshot::channel();
                    self.stops.insert(start.key, stop);
                    runner::launch(&self.env, start, stopped);
                }
                Effect::Stop { key, reason } => {
                    if let Some(stop) = self.stops.remove(&key) {
                        let _ = stop.send(reason);
                    }
                }
                Effect::Reply { to, response, last } => {
                    if let Some(reply) = self.replies.get(&to) {
                        let _ = reply.send(response);
                    }
                    if last {
                        self.replies.remove(&to);
                    }
                }
                Effect::Observe(observation) => {
                    self.metrics.observe(observation, self.env.clock.now());
                }
                Effect::LoadConfig => self.load_config(),
                Effect::Rescan(registry, dirs) => self.rescan(registry, dirs),
                Effect::WatchPlugins(dirs) => self.watcher.watch(&dirs),
                Effect::CheckBoot(jobs) => self.check_boot(jobs),
                Effect::Publish(config) => {
                    if let Backend::Cluster(node) = &self.backend {
                        cluster::publish(node, &config);
                    }
                }
                Effect::MarkBooted(job) => reboot::mark(self.runtime_dir(), &job),
                Effect::Ready {
                    jobs,
                    reload_applied,
                } => notify::ready(
                    jobs,
                    Some(if reload_applied {
                        notify::Reload::Applied
                    } else {
                        notify::Reload::Refused
                    }),
                ),
            }
        }
        self.env.store.send();
        if !writes.is_empty() {
            self.write(writes, tickets);
        }
        if let (Backend::Cluster(node), false) = (&self.backend, claims.is_empty()) {
            cluster::claim(node, claims, self.inputs.clone());
        }
        // Runs that ended no longer need a way to be stopped.
        self.stops.retain(|_, stop| !stop.is_closed());
    }

    fn write(&mut self, writes: Vec<Write>, tickets: Vec<Option<Ticket>>) {
        let store = match &self.backend {
            Backend::Local(store) => store,
            Backend::Cluster(node) => {
                let node = Arc::clone(node);
                let inputs = self.inputs.clone();
                self.writes.spawn(async move {
                    let mut outcomes = Vec::new();
                    for (write, ticket) in writes.into_iter().zip(tickets) {
                        let result = cluster::write(&node, write)
                            .await
                            .map(|()| None)
                            .map_err(|e| e.to_string());
                        if let Err(e) = &result {
                            tracing::error!("cannot write to the cluster's database: {e}");
                        }
                        outcomes.extend(ticket.map(|ticket| (ticket, result)));
                    }
                    if !outcomes.is_empty() {
                        let _ = inputs.send(Input::Written(outcomes));
                    }
                });
                return;
            }
        };
        let written = crate::store::Store::write(store, writes);
        let inputs = self.inputs.clone();
        self.writes.spawn(async move {
            let results = match written.await {
                Ok(results) => results
                    .into_iter()
                    .map(|result| result.map_err(|e| e.to_string()))
                    .collect(),
                Err(e) => vec![Err(e.to_string()); tickets.len()],
            };
            let outcomes: Vec<(Ticket, Result<Option<crate::store::RunId>, String>)> = tickets
                .into_iter()
                .zip(results)
                .filter_map(|(ticket, result)| Some((ticket?, result)))
                .collect();
            if !outcomes.is_empty() {
                let _ = inputs.send(Input::Written(outcomes));
            }
        });
        while self.writes.try_join_next().is_some() {}
    }

    fn load_config(&self) {
        notify::reloading();
        let path = self.config_path.clone();
        let inputs = self.inputs.clone();
        tokio::task::spawn_blocking(move || {
            let loaded = config::load(&path, Environment::current())
                .map(Box::new)
                .map_err(|e| e.to_string());
            crate::sys::return_free_memory();
            let _ = inputs.send(Input::ConfigLoaded(loaded));
        });
    }

    fn rescan(&self, registry: Registry, dirs: Vec<PathBuf>) {
        let launcher = self.env.launcher.clone();
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            let rescanned = registry
                .rescan(&dirs, &launcher, ScanOptions::for_current_user())
                .await;
            let _ = inputs.send(Input::Rescanned(rescanned));
        });
    }

    /// Which `@reboot` jobs have not fired in this boot: not marked, and (in case the daemon
    /// died between recording a fire and marking it) no fire recorded since the boot began.
    fn check_boot(&self, jobs: Vec<Arc<Job>>) {
        let unmarked = reboot::unmarked(self.runtime_dir(), jobs);
        if unmarked.is_empty() {
            return;
        }
        let store = match &self.backend {
            Backend::Local(store) => store.clone(),
            // In a cluster a boot's fire is claimed under a key naming the boot, so the
            // database records it once however often this node starts in the boot.
            Backend::Cluster(_) => {
                let _ = self.inputs.send(Input::Boot(unmarked));
                return;
            }
        };
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            let fired = match reboot::boot_started_ms() {
                Some(since) => {
                    let names = unmarked.iter().map(|job| job.name.clone()).collect();
                    crate::store::Store::fired_since(&store, names, since)
                        .await
                        .unwrap_or_default()
                }
                None => Vec::new(),
            };
            let due = unmarked
                .into_iter()
                .filter(|job| !fired.contains(&job.name))
                .collect();
            let _ = inputs.send(Input::Boot(due));
        });
    }

    fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// Waits for the writes sent so far to be committed.
    pub async fn flush(&mut self) {
        while self.writes.join_next().await.is_some() {}
    }
}
