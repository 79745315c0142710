//! Changes from outside the schedule: a new config (the reload diff), plugin directories that
//! changed (rescans), and `@reboot` jobs.

use std::sync::Arc;

use super::fire::{Fire, Then};
use super::{Effect, Engine, Observation, ReplyTo, SETTLE_MS};
use crate::admission::Limits;
use crate::config::{Config, Job};
use crate::control::Response;
use crate::model::Trigger;
use crate::plugins::{PluginChange, Registry};
use crate::scheduler::Timer;
use crate::store::Write;

impl Engine {
    /// The config file changed: reload once it has been quiet for a moment.
    pub(super) fn config_changed(&mut self, now: i64) {
        if let Some(timer) = self.reload.take() {
            self.scheduler.cancel_timer(timer);
        }
        self.reload = Some(self.scheduler.set_timer(now + SETTLE_MS, Timer::Reload));
    }

    /// Reads the config again; `to` hears the outcome.
    pub(super) fn request_reload(&mut self, to: Option<ReplyTo>) {
        let under_way = !self.reloading.is_empty() || self.loading;
        self.reloading.extend(to);
        if !under_way {
            self.loading = true;
            self.out.push(Effect::LoadConfig);
        }
    }

    /// Applies a config read for a reload: running runs and waiting fires are untouched, an
    /// unchanged job keeps its next fire, a job whose timing changed computes its next fire
    /// from now. An invalid config changes nothing.
    pub(super) fn apply_config(&mut self, result: Result<Box<Config>, String>, now: i64) {
        self.loading = false;
        let outcome = match result {
            Ok(config) => Ok(self.apply_diff(*config, now)),
            Err(errors) => {
                let message =
                    format!("the new config is invalid; the old one stays in force:\n{errors}");
                tracing::error!("{message}");
                Err(message)
            }
        };
        if outcome.is_ok() && self.cluster.is_some() {
            self.out.push(Effect::Publish(Arc::clone(&self.config)));
        }
        self.out.push(Effect::Ready {
            jobs: self.config.jobs.len(),
            reload_applied: outcome.is_ok(),
        });
        for to in std::mem::take(&mut self.reloading) {
            let response = match &outcome {
                Ok(message) => Response::Done {
                    message: message.clone(),
                },
                Err(message) => Response::Error {
                    message: message.clone(),
                },
            };
            self.reply(to, response, true);
        }
    }

    fn apply_diff(&mut self, new: Config, now: i64) -> String {
        let old = Arc::clone(&self.config);
        let (mut added, mut changed, mut unchanged, mut removed) = (0, 0, 0, 0);
        for job in &new.jobs {
            let Some(before) = old.job(&job.name) else {
                added += 1;
                self.schedule_from_now(job, now);
                continue;
            };
            if before.digest() == job.digest() {
                unchanged += 1;
            } else {
                changed += 1;
            }
            if before.timing() == job.timing() {
                self.scheduler.update(Arc::clone(job));
            } else {
                self.schedule_from_now(job, now);
            }
        }
        for job in &old.jobs {
            if new.job(&job.name).is_none() {
                removed += 1;
                self.scheduler.remove(&job.name);
                self.observe(Observation::JobRemoved(job.name.clone()));
            }
        }
        self.scheduler.set_max_catch_up(new.daemon.max_catch_up);
        self.admission.reconfigure(&Limits::of(&new), now);
        let mut notes = Vec::new();
        for (key, differs) in [
            ("database", new.daemon.database != old.daemon.database),
            ("socket", new.daemon.socket != old.daemon.socket),
            (
                "metrics_listen",
                new.daemon.metrics_listen != old.daemon.metrics_listen,
            ),
            (
                "history_retention",
                new.daemon.history_retention != old.daemon.history_retention,
            ),
        ] {
            if differs {
                notes.push(format!("`{key}` changes apply at the next start"));
            }
        }
        self.config = Arc::new(new);
        self.observe(Observation::Jobs {
            config: Arc::clone(&self.config),
            paused: self.paused.clone(),
        });
        // A reload re-reads everything, the plugins too (cheap: unchanged libraries are not
        // loaded again), so it is the way to make anything the watch missed count.
        self.out
            .push(Effect::WatchPlugins(self.config.daemon.plugin_dirs.clone()));
        self.start_rescan();
        self.check_boot();
        let mut message = format!(
            "reloaded {}: {added} job(s) added, {changed} changed, {removed} removed, {unchanged} unchanged",
            self.config.path.display()
        );
        for note in notes {
            message.push_str("; ");
            message.push_str(&note);
        }
        tracing::info!("{message}");
        message
    }

    /// Schedules `job` (anew) from `now`, and writes that instant down: its fires count from
    /// then, so a crash before its first recorded fire still finds the ones it missed.
    fn schedule_from_now(&mut self, job: &Arc<Job>, now: i64) {
        self.scheduler.remove(&job.name);
        if !job.enabled {
            return;
        }
        self.scheduler.add(Arc::clone(job), None, now);
        self.write(Write::LastFire {
            job: job.name.clone(),
            at: now,
            timing: Some(job.timing()),
        });
    }

    /// Something changed in a plugin directory: rescan once it has been quiet for a moment.
    pub(super) fn plugins_changed(&mut self, now: i64) {
        if let Some(timer) = self.rescan.take() {
            self.scheduler.cancel_timer(timer);
        }
        self.rescan = Some(self.scheduler.set_timer(now + SETTLE_MS, Timer::Rescan));
    }

    /// Rescans the plugin directories, or rescans again once the one under way is done.
    pub(super) fn start_rescan(&mut self) {
        self.rescan = None;
        if self.rescanning {
            self.rescan_again = true;
            return;
        }
        self.rescanning = true;
        self.out.push(Effect::Rescan(
            self.registry.clone(),
            self.config.daemon.plugin_dirs.clone(),
        ));
    }

    /// Puts a finished rescan in force: new runs use what it found.
    pub(super) fn rescanned(&mut self, registry: Registry) {
        self.rescanning = false;
        for change in registry.changes_since(&self.registry) {
            log_change(&change);
        }
        self.observe(Observation::PluginsRefused(registry.refused_count()));
        self.registry = registry;
        for fire in self.fires.values_mut() {
            fire.plugin = None;
        }
        self.out
            .push(Effect::WatchPlugins(self.config.daemon.plugin_dirs.clone()));
        if std::mem::take(&mut self.rescan_again) {
            self.start_rescan();
        }
    }

    /// Asks which `@reboot` jobs of the config in force have not fired in this boot.
    pub(super) fn check_boot(&mut self) {
        let jobs: Vec<Arc<Job>> = self
            .config
            .jobs
            .iter()
            .filter(|job| job.enabled && job.is_reboot())
            .cloned()
            .collect();
        if !jobs.is_empty() {
            self.out.push(Effect::CheckBoot(jobs));
        }
    }

    /// Fires the `@reboot` jobs due in this boot (at once, or after their jitter).
    pub(super) fn boot(&mut self, jobs: Vec<Arc<Job>>, now: i64) {
        for job in jobs {
            let offset = super::fire::millis(job.jitter_offset);
            let mut fire = Fire::of(&job, Trigger::Schedule, now + offset, now);
            fire.advances_schedule = false;
            fire.at_boot = true;
            let then = if offset == 0 {
                Then::Admission
            } else {
                Then::Timeline
            };
            self.accept(fire, then, now);
        }
    }
}

/// Logs a change among the plugins, once, when it happens.
pub(super) fn log_change(change: &PluginChange) {
    if change.refused {
        tracing::warn!("{}", change.message);
    } else {
        tracing::info!("{}", change.message);
    }
}
