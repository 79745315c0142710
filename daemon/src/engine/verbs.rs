//! The control socket's verbs, one handler each, mirroring `crate::cli`.

use std::sync::Arc;

use super::fire::{Fire, State, Then, Waiter};
use super::{After, Engine, Observation, ReplyTo, unknown_job};
use crate::admission::AdmissionStatus;
use crate::control::{self, JobInfo, Request, Response, StatusInfo, Waiting, WhyInfo};
use crate::model::{Status, Trigger};
use crate::store::{RunId, Write};
use crate::time::rfc3339_ms;

impl Engine {
    /// Carries out a control request; the answers go to `to`.
    pub(super) fn control(&mut self, request: Request, to: ReplyTo, now: i64) {
        let answer = match request {
            Request::Status => Response::Status(self.status(now)),
            Request::Jobs => Response::Jobs { jobs: self.jobs() },
            Request::Plugins => Response::Plugins {
                plugins: self.registry.all().to_vec(),
            },
            Request::Run { job, params, wait } => match self.run(&job, params, wait, to, now) {
                Ok(()) => return,
                Err(message) => Response::Error { message },
            },
            Request::Cancel { id } if self.cluster.is_some() => {
                self.cluster_cancel(id, to);
                return;
            }
            Request::Cancel { id } => match self.cancel(id, to) {
                Ok(None) => return,
                Ok(Some(message)) => Response::Done { message },
                Err(message) => Response::Error { message },
            },
            Request::Pause { job } => match self.set_paused(&job, true, to) {
                Ok(()) => return,
                Err(message) => Response::Error { message },
            },
            Request::Resume { job } => match self.set_paused(&job, false, to) {
                Ok(()) => return,
                Err(message) => Response::Error { message },
            },
            Request::Reload => {
                self.request_reload(Some(to));
                return;
            }
            Request::Why { job } => match self.why(&job, now) {
                Ok(info) => Response::Why(info),
                Err(message) => Response::Error { message },
            },
        };
        self.reply(to, answer, true);
    }

    /// `pacer run`: a manual fire of `name`, through the same policies as any fire. Its client
    /// hears of it once its record exists (queued, running, or skipped and why).
    fn run(
        &mut self,
        name: &str,
        params: Option<serde_json::Value>,
        wait: bool,
        to: ReplyTo,
        now: i64,
    ) -> Result<(), String> {
        if self.stopping {
            return Err("pacerd is stopping; run it again once it is back".to_owned());
        }
        let job = Arc::clone(
            self.config
                .job(name)
                .ok_or_else(|| unknown_job(&self.config, name))?,
        );
        let mut fire = Fire::of(&job, Trigger::Manual, now, now);
        if params.is_some() {
            fire.params = Arc::new(merge_params(&job.params, params)?);
            fire.own_params = true;
        }
        fire.waiter = Some(Waiter { to, wait });
        self.accept(fire, Then::Admission, now);
        Ok(())
    }

    /// `pacer cancel ID`: a waiting fire ends `cancelled` (answered once that is recorded); a
    /// running one is asked to stop.
    fn cancel(&mut self, id: RunId, to: ReplyTo) -> Result<Option<String>, String> {
        let reason = "cancelled by pacer cancel".to_owned();
        let Some((&key, fire)) = self
            .by_run
            .get(&id)
            .and_then(|key| Some((key, self.fires.get(key)?)))
        else {
            return Err(format!(
                "run {id} is neither running nor queued (pacer show {id} tells what became of it)"
            ));
        };
        match fire.state {
            State::Running => {
                self.out.push(super::Effect::Stop { key, reason });
                Ok(Some(format!(
                    "run {id} is being stopped (SIGTERM to its process group, SIGKILL 1 s later)"
                )))
            }
            State::Admitting | State::Timed(_) | State::Backlog => {
                if fire.state == State::Admitting {
                    self.admission.withdraw(key);
                }
                if let Some(jobs) = self.backlog.get_mut(&fire.job.name) {
                    jobs.retain(|queued| *queued != key);
                }
                if let Some(fire) = self.fires.get_mut(&key) {
                    fire.canceller = Some(to);
                }
                self.decline(key, Status::Cancelled, reason, None);
                Ok(None)
            }
            State::New | State::Recording(_) | State::Exited | State::Ending(..) => Err(format!(
                "run {id} is already ending (pacer show {id} tells what became of it)"
            )),
        }
    }

    /// `pacer pause` / `resume`: answered once it is recorded (it survives restarts).
    fn set_paused(&mut self, name: &str, paused: bool, to: ReplyTo) -> Result<(), String> {
        let job = Arc::clone(
            self.config
                .job(name)
                .ok_or_else(|| unknown_job(&self.config, name))?,
        );
        let changed = if paused {
            self.paused.insert(name.to_owned())
        } else {
            self.paused.remove(name)
        };
        self.observe(Observation::Paused {
            job: Arc::clone(&job),
            paused,
        });
        let message = match (paused, changed) {
            (true, true) => format!(
                "paused `{name}`: its fires leave no record until `pacer resume {name}` (this survives restarts)"
            ),
            (true, false) => format!("`{name}` was already paused"),
            (false, true) => format!("resumed `{name}`"),
            (false, false) => format!("`{name}` was not paused"),
        };
        tracing::info!("{message}");
        self.write_then(
            Write::Paused {
                job: name.to_owned(),
                paused,
            },
            After::Paused {
                to,
                job,
                paused,
                changed,
                message,
            },
        );
        Ok(())
    }

    /// What the daemon knows of a job that the history does not hold: its next fire, the fires
    /// of it that wait and why, and its fires while paused.
    fn why(&self, name: &str, now: i64) -> Result<WhyInfo, String> {
        self.config
            .job(name)
            .ok_or_else(|| unknown_job(&self.config, name))?;
        let mut waiting: Vec<Waiting> = self
            .admission
            .waiting(name)
            .into_iter()
            .map(|waiting| Waiting {
                run_id: self.fires.get(&waiting.key).and_then(|fire| fire.run_id),
                scheduled_at: waiting.scheduled_at,
                since: waiting.since,
                reason: waiting.reason,
            })
            .collect();
        waiting.extend(
            self.fires
                .values()
                .filter(|fire| fire.job.name == name)
                .filter_map(|fire| {
                    let reason = match fire.state {
                        State::Timed(_) if fire.trigger == Trigger::Retry => format!(
                            "attempt {} waits for its back-off until {}",
                            fire.attempt,
                            rfc3339_ms(fire.scheduled_at)
                        ),
                        State::Timed(_) => {
                            format!(
                                "waits for its jitter until {}",
                                rfc3339_ms(fire.scheduled_at)
                            )
                        }
                        State::Backlog => {
                            "a missed fire waiting for the earlier ones (catch_up = \"all\")"
                                .to_owned()
                        }
                        _ => return None,
                    };
                    Some(Waiting {
                        run_id: fire.run_id,
                        scheduled_at: fire.scheduled_at,
                        since: fire.accepted_at,
                        reason,
                    })
                }),
        );
        let _ = now;
        Ok(WhyInfo {
            next_fire: self.scheduler.next_fire(name),
            paused: self.paused.contains(name),
            paused_fires: self
                .paused_fires
                .get(name)
                .map(|fires| fires.iter().copied().collect())
                .unwrap_or_default(),
            waiting,
        })
    }

    /// Runs in flight and fires waiting: admission's, plus the recorded fires waiting outside
    /// it (retries in back-off, missed fires waiting their turn).
    pub(super) fn status_now(&self) -> AdmissionStatus {
        let mut status = self.admission.status();
        for (pool, count) in &self.deferred {
            status.total.queued += count;
            status.pools.entry(pool.clone()).or_default().queued += count;
        }
        status
    }

    fn status(&self, now: i64) -> StatusInfo {
        let mut status = self.status_now();
        if let Some(cluster) = &self.cluster {
            // The queue is the cluster's (pacer nodes and the database tell it); in flight
            // are this node's runs, which the cluster admitted, so they are counted here.
            status.total.in_flight = cluster.running();
            for load in status.pools.values_mut() {
                load.in_flight = 0;
            }
            for fire in self.fires.values().filter(|f| f.state == State::Running) {
                status
                    .pools
                    .entry(fire.job.pool.clone())
                    .or_default()
                    .in_flight += 1;
            }
        }
        StatusInfo {
            running: true,
            pid: self.pid,
            uptime_s: u64::try_from((now - self.up_since) / 1_000).unwrap_or(0),
            in_flight: status.total.in_flight,
            queued: status.total.queued,
            pools: status
                .pools
                .into_iter()
                .map(|(name, load)| {
                    (
                        name,
                        control::Load {
                            in_flight: load.in_flight,
                            queued: load.queued,
                        },
                    )
                })
                .collect(),
            waiting_on: status.waiting_on,
            stopping: self.stopping,
            history_error: self.history_error.clone().or_else(|| {
                self.cluster
                    .as_ref()
                    .and_then(|c| c.unreachable().map(str::to_owned))
            }),
            node: self.cluster.as_ref().map(|c| c.identity().node.clone()),
            database: self.cluster.as_ref().map(|c| c.identity().database.clone()),
        }
    }

    fn jobs(&self) -> Vec<JobInfo> {
        self.config
            .jobs
            .iter()
            .map(|job| {
                JobInfo::new(
                    job,
                    self.paused.contains(&job.name),
                    self.scheduler.next_fire(&job.name),
                    self.last_status.get(&job.name).copied(),
                    self.plugin_problem(job)
                        .or_else(|| self.cluster.as_ref().and_then(|c| c.drift(&job.name))),
                )
            })
            .collect()
    }
}

/// The job's params with `extra`'s top-level keys put over them.
fn merge_params(
    base: &serde_json::Value,
    extra: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let mut merged = base.clone();
    match extra {
        None => {}
        Some(serde_json::Value::Object(extra)) => {
            if let serde_json::Value::Object(target) = &mut merged {
                target.extend(extra);
            }
        }
        Some(other) => {
            return Err(format!(
                "params (`pacer run --params`, or `params` in the request) must be a JSON \
                 object such as '{{\"key\": \"value\"}}', not {other}"
            ));
        }
    }
    Ok(merged)
}
