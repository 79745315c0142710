//! The life of a fire: accepted and recorded `queued`, through admission (or the timeline, or
//! its job's backlog of missed fires) to its run's start and end, or declined with a reason.

use std::sync::Arc;

use super::chain::{Upstream, chained_params};
use super::fire::{Fire, State, Then};
use super::{After, Effect, Engine, Observation, Start};
use crate::admission::{Candidate, FireKey, SkipKind, Submitted};
use crate::config::Job;
use crate::control::{Response, RunUpdate};
use crate::model::{RunSpan, Status, Trigger};
use crate::scheduler::Timer;
use crate::store::{QueuedFire, RunId, Write};
use crate::time::rfc3339_ms;

impl Engine {
    /// Accepts a new fire: through admission's policies at once (declined: a `skipped`
    /// record), or on to the timeline or a backlog (`then`); either way a `queued` record.
    /// A paused job's own fires (not a manual run, not a retry) leave no record.
    pub(super) fn accept(&mut self, mut fire: Fire, then: Then, now: i64) -> Option<FireKey> {
        let paused_applies = matches!(
            fire.trigger,
            Trigger::Schedule | Trigger::CatchUp | Trigger::Chained
        );
        if paused_applies && self.paused.contains(&fire.job.name) {
            self.pass_paused(&fire);
            if fire.at_boot {
                self.out.push(Effect::MarkBooted(fire.job.name.clone()));
            }
            return None;
        }
        if self.cluster.is_some() {
            return self.propose(fire, &then);
        }
        let key = self.next_key;
        self.next_key += 1;
        fire.state = State::New;
        self.fires.insert(key, fire);
        if then == Then::Admission {
            if !self.submit(key, now, now) {
                return Some(key);
            }
        } else {
            self.defer(key);
        }
        let reason = self.deferred_reason(key, &then);
        let record = self.fires[&key].record();
        if let Some(fire) = self.fires.get_mut(&key) {
            fire.state = State::Recording(then);
        }
        self.write_then(
            Write::Queued {
                fire: record,
                reason,
            },
            After::Queued(key),
        );
        Some(key)
    }

    /// Submits fire `key`, waiting since `since`, to admission; false if it was declined (its
    /// ending is recorded).
    fn submit(&mut self, key: FireKey, since: i64, now: i64) -> bool {
        let Some(fire) = self.fires.get(&key) else {
            return false;
        };
        let plugin = match self.registry.get(&fire.job.plugin) {
            Some(plugin) => Arc::clone(&plugin.path),
            None => {
                let reason = self.plugin_problem(&fire.job).unwrap_or_default();
                self.decline(key, Status::Skipped, reason, Some(SkipKind::PluginMissing));
                return false;
            }
        };
        let candidate = Candidate {
            key,
            job: Arc::clone(&fire.job),
            trigger: fire.trigger,
            scheduled_at: fire.scheduled_at,
            run_id: fire.run_id,
            waiting_since: since,
        };
        let submitted = self.admission.submit(candidate, now);
        let accepted = !submitted.refuses(key);
        if accepted && let Some(fire) = self.fires.get_mut(&key) {
            fire.plugin = Some(plugin);
            if fire.state != State::New {
                fire.state = State::Admitting;
            }
        }
        self.carry_out(submitted);
        accepted
    }

    /// Records what admission declined and stops what it replaced.
    fn carry_out(&mut self, submitted: Submitted) {
        for refusal in submitted.refused {
            self.decline(
                refusal.key,
                Status::Skipped,
                refusal.reason,
                Some(refusal.kind),
            );
        }
        for stop in submitted.stop {
            self.out.push(Effect::Stop {
                key: stop.key,
                reason: stop.reason,
            });
        }
    }

    /// Ends a fire that will not start (`skipped` by a policy, or `cancelled`): a new
    /// `skipped` row if nothing was written yet, else its `queued` row is resolved (once it
    /// exists). Admission must no longer hold it.
    pub(super) fn decline(
        &mut self,
        key: FireKey,
        status: Status,
        reason: String,
        kind: Option<SkipKind>,
    ) {
        let Some(fire) = self.fires.get_mut(&key) else {
            return;
        };
        tracing::info!(job = %fire.job.name, trigger = %fire.trigger, "fire {status}: {reason}");
        let job = fire.job.name.clone();
        let run_id = fire.run_id;
        let was = std::mem::replace(&mut fire.state, State::Ending(status, reason.clone()));
        match (was, run_id) {
            (State::Recording(_), _) => {
                fire.state = State::Recording(Then::End(status, reason, kind));
            }
            (_, None) => {
                let record = fire.record();
                self.write_then(
                    Write::Skipped {
                        fire: record,
                        reason,
                    },
                    After::Ended(key),
                );
            }
            (was, Some(id)) => {
                if let State::Timed(timer) = was {
                    self.scheduler.cancel_timer(timer);
                }
                if matches!(was, State::Timed(_) | State::Backlog) {
                    let pool = self.fires[&key].job.pool.clone();
                    self.undefer(&pool);
                }
                self.write_then(Write::Resolve { id, status, reason }, After::Ended(key));
            }
        }
        if let Some(kind) = kind {
            self.observe(Observation::Skipped {
                job: job.clone(),
                kind,
            });
        }
        if status == Status::Skipped {
            self.last_status.insert(job, status);
        }
    }

    /// Counts fire `key` as waiting outside admission, in its pool.
    pub(super) fn defer(&mut self, key: FireKey) {
        if let Some(fire) = self.fires.get(&key) {
            *self.deferred.entry(fire.job.pool.clone()).or_default() += 1;
        }
    }

    /// A fire of `pool` no longer waits outside admission.
    pub(super) fn undefer(&mut self, pool: &str) {
        if let Some(count) = self.deferred.get_mut(pool) {
            *count = count.saturating_sub(1);
        }
    }

    /// What a fire that goes to the timeline or a backlog waits for; a fire in admission waits
    /// for whatever holds it once its record is written (see [`Engine::written`]).
    fn deferred_reason(&self, key: FireKey, then: &Then) -> Option<String> {
        let fire = &self.fires[&key];
        match then {
            Then::Timeline if fire.trigger == Trigger::Retry => Some(format!(
                "attempt {} waits for its back-off: it may start at {}",
                fire.attempt,
                rfc3339_ms(fire.scheduled_at)
            )),
            Then::Timeline => Some(format!(
                "waits for its jitter: it may start at {}",
                rfc3339_ms(fire.scheduled_at)
            )),
            Then::Backlog => Some(format!(
                "a missed fire of `{}` (catch_up = \"all\"): runs after the earlier ones",
                fire.job.name
            )),
            Then::Admission | Then::End(..) | Then::Cluster => None,
        }
    }

    /// Takes in committed writes: fires whose record now exists go on; fires that ended are
    /// forgotten; clients hear what they were waiting for.
    ///
    /// Admission runs once every write is taken in, not before: the fires recorded together
    /// (a burst of co-due fires, in any pools) compete by priority for the free slots, and a
    /// fire is told it waits only if it still does then.
    pub(super) fn written(&mut self, results: Vec<(u64, Result<Option<RunId>, String>)>, now: i64) {
        let recorded: Vec<FireKey> = results
            .into_iter()
            .filter_map(|(ticket, result)| self.take_written(ticket, result))
            .collect();
        self.admit(now);
        self.tell_waiting(recorded);
    }

    /// Takes in one committed write; the fire it recorded, if that fire went on to admission.
    fn take_written(
        &mut self,
        ticket: u64,
        result: Result<Option<RunId>, String>,
    ) -> Option<FireKey> {
        match self.after.remove(&ticket)? {
            After::Queued(key) => match result {
                Ok(Some(id)) => self.recorded(key, id).then_some(key),
                Ok(None) | Err(_) => {
                    let error = result.err().unwrap_or_default();
                    self.unrecorded(key, &error);
                    None
                }
            },
            After::Ended(key) => {
                self.ended(key, &result);
                None
            }
            After::Paused {
                to,
                job,
                paused,
                changed,
                message,
            } => {
                let response = match result {
                    Ok(_) => Response::Done { message },
                    Err(error) => {
                        let undone = changed
                            && if paused {
                                self.paused.remove(&job.name)
                            } else {
                                self.paused.insert(job.name.clone())
                            };
                        if undone {
                            self.observe(Observation::Paused {
                                job: Arc::clone(&job),
                                paused: !paused,
                            });
                        }
                        Response::Error {
                            message: format!(
                                "`{}` is not {}: the history could not record it ({error}); \
                                 try again once it can",
                                job.name,
                                if paused { "paused" } else { "resumed" }
                            ),
                        }
                    }
                };
                self.reply(to, response, true);
                None
            }
        }
    }

    /// Fires recorded just now that admission still holds: their record and their client
    /// learn what holds them.
    fn tell_waiting(&mut self, recorded: Vec<FireKey>) {
        for key in recorded {
            let Some(fire) = self.fires.get(&key) else {
                continue;
            };
            if fire.state != State::Admitting {
                continue;
            }
            let Some(reason) = self.admission.why_waiting(key) else {
                continue;
            };
            let id = fire.run_id.expect("recorded");
            tracing::debug!(job = %fire.job.name, run_id = id, "fire queued: {reason}");
            let waiter = fire.waiter;
            self.write(Write::Waiting {
                id,
                reason: reason.clone(),
            });
            if let Some(waiter) = waiter {
                self.reply(
                    waiter.to,
                    Response::Run(RunUpdate::Queued { id, reason }),
                    !waiter.wait,
                );
            }
        }
    }

    /// Fire `key`'s `queued` record exists as run `id`; whether it went on to admission.
    fn recorded(&mut self, key: FireKey, id: RunId) -> bool {
        let Some(fire) = self.fires.get_mut(&key) else {
            return false;
        };
        fire.run_id = Some(id);
        self.by_run.insert(id, key);
        let State::Recording(then) = std::mem::replace(&mut fire.state, State::Admitting) else {
            return false;
        };
        if fire.at_boot {
            let job = fire.job.name.clone();
            self.out.push(Effect::MarkBooted(job));
        }
        match then {
            Then::Admission => {
                self.admission.recorded(key, id);
                true
            }
            Then::Timeline => {
                let at = fire.scheduled_at;
                let timer = self.scheduler.set_timer(at, Timer::Fire(key));
                fire.state = State::Timed(timer);
                self.tell_deferred(key);
                false
            }
            Then::Backlog => {
                fire.state = State::Backlog;
                let job = fire.job.name.clone();
                self.backlog.entry(job.clone()).or_default().push_back(key);
                if !self.catching_up.contains(&job) {
                    self.backlog_turn.insert(job);
                }
                self.tell_deferred(key);
                false
            }
            Then::Cluster => false,
            Then::End(status, reason, _) => {
                fire.state = State::Ending(status, reason.clone());
                self.write_then(Write::Resolve { id, status, reason }, After::Ended(key));
                false
            }
        }
    }

    /// Tells the client of a fire that waits outside admission what it waits for.
    fn tell_deferred(&mut self, key: FireKey) {
        let fire = &self.fires[&key];
        let (Some(waiter), Some(id)) = (fire.waiter, fire.run_id) else {
            return;
        };
        let then = match fire.state {
            State::Timed(_) => Then::Timeline,
            _ => Then::Backlog,
        };
        let reason = self.deferred_reason(key, &then).unwrap_or_default();
        self.reply(
            waiter.to,
            Response::Run(RunUpdate::Queued { id, reason }),
            !waiter.wait,
        );
    }

    /// A fire's `queued` record could not be written, for good: the fire is dropped, loudly.
    fn unrecorded(&mut self, key: FireKey, error: &str) {
        let Some(fire) = self.fires.remove(&key) else {
            return;
        };
        tracing::error!(job = %fire.job.name, "a fire could not be recorded, so it does not run: {error}");
        match fire.state {
            State::Recording(Then::Admission) => {
                self.admission.withdraw(key);
            }
            State::Recording(Then::Timeline | Then::Backlog) => self.undefer(&fire.job.pool),
            _ => {}
        }
        if let Some(waiter) = fire.waiter {
            self.reply(
                waiter.to,
                Response::Error {
                    message: format!("the run could not be recorded, so it does not run: {error}"),
                },
                true,
            );
        }
    }

    /// A fire's final record (declined or cancelled before it started) was written.
    fn ended(&mut self, key: FireKey, result: &Result<Option<RunId>, String>) {
        let Some(fire) = self.fires.remove(&key) else {
            return;
        };
        if let Some(id) = fire.run_id {
            self.by_run.remove(&id);
        }
        if fire.trigger == Trigger::CatchUp && self.catching_up.remove(&fire.job.name) {
            self.backlog_turn.insert(fire.job.name.clone());
        }
        let id = match result {
            Ok(Some(id)) => Some(*id),
            Ok(None) => fire.run_id,
            Err(error) => {
                tracing::error!(job = %fire.job.name, "cannot record a fire's end: {error}");
                fire.run_id
            }
        };
        if let (Some(to), Some(id)) = (fire.canceller, id) {
            let response = match result {
                Ok(_) => Response::Done {
                    message: format!("run {id} was cancelled before it started"),
                },
                Err(error) => Response::Error {
                    message: format!("run {id} could not be cancelled: {error}"),
                },
            };
            self.reply(to, response, true);
        }
        let (Some(waiter), State::Ending(status, reason)) = (fire.waiter, fire.state) else {
            return;
        };
        let update = match (status, id) {
            (Status::Cancelled, Some(id)) => RunUpdate::Finished {
                id,
                status,
                error: Some(reason),
            },
            _ => RunUpdate::Skipped { id, reason },
        };
        self.reply(waiter.to, Response::Run(update), true);
    }

    /// Starts what admission allows.
    pub(super) fn admit(&mut self, now: i64) {
        // A run starts only once its `running` record is written: one admitted while the
        // history cannot be written would wait for it with its process spawned, then start as
        // late as the history came back (a stop may have begun meanwhile), under a record
        // saying it started when it was admitted.
        if self.stopping || self.history_error.is_some() {
            return;
        }
        self.next_catch_ups(now);
        if self.cluster.is_some() {
            self.cluster_admit(now);
            return;
        }
        let admitted = self.admission.admit(now);
        if admitted.is_empty() {
            return;
        }
        for admitted in admitted {
            let key = admitted.key;
            let Some(fire) = self.fires.get_mut(&key) else {
                self.admission.finished(key);
                continue;
            };
            let found = fire.plugin.take().or_else(|| {
                self.registry
                    .get(&fire.job.plugin)
                    .map(|plugin| Arc::clone(&plugin.path))
            });
            let Some(plugin) = found else {
                // The plugin went away while the fire waited.
                let job = Arc::clone(&fire.job);
                self.admission.finished(key);
                let reason = self.plugin_problem(&job).unwrap_or_default();
                self.decline(key, Status::Skipped, reason, Some(SkipKind::PluginMissing));
                continue;
            };
            fire.state = State::Running;
            tracing::debug!(
                job = %fire.job.name,
                run_id = fire.run_id,
                queue_ms = admitted.queue_ms,
                "fire admitted"
            );
            let start = Start {
                key,
                run_id: fire.run_id.expect("admission starts only recorded fires"),
                job: Arc::clone(&fire.job),
                trigger: fire.trigger,
                attempt: fire.attempt,
                scheduled_at: fire.scheduled_at,
                params: Arc::clone(&fire.params),
                queue_ms: admitted.queue_ms,
                plugin,
                output_limit: self.config.daemon.output_limit,
            };
            let job = Arc::clone(&fire.job);
            self.observe(Observation::Admitted {
                job,
                wait_ms: admitted.queue_ms,
            });
            self.out.push(Effect::Start(start));
        }
        let status = self.status_now();
        self.observe(Observation::Load(status));
    }

    /// The run of `key` was spawned and is recorded `running`.
    pub(super) fn started(&mut self, key: FireKey, started_at: i64) {
        let Some(fire) = self.fires.get(&key) else {
            return;
        };
        let lateness_ms = started_at - fire.scheduled_at;
        let waiter = fire.waiter;
        let update = RunUpdate::Started {
            id: fire.run_id.expect("started fires are recorded"),
            attempt: fire.attempt,
        };
        self.observe(Observation::Started { lateness_ms });
        if let Some(waiter) = waiter {
            self.reply(waiter.to, Response::Run(update), !waiter.wait);
        }
    }

    /// The run of `key` has no process left; its end is being recorded. Its slot goes to the
    /// next fire now, so that fire's start is written together with this run's end, and
    /// anything that waits for the end itself (its client, a retry, chained fires) waits for
    /// [`Engine::finished`]. A node of a cluster frees its slot when the end is recorded.
    pub(super) fn exited(&mut self, key: FireKey) {
        if self.cluster.is_some() {
            return;
        }
        let Some(fire) = self.fires.get_mut(&key) else {
            return;
        };
        if fire.state == State::Running {
            fire.state = State::Exited;
            self.admission.finished(key);
        }
    }

    /// The run of `key` was stopped before its start was recorded, and that record was taken
    /// back: its slot is free. At a stop its fire stays `queued` in the history, so the next
    /// start takes it back; a cancel or a replace ends it `cancelled`.
    pub(super) fn withdrawn(&mut self, key: FireKey, reason: &str) {
        if !self.stopping {
            self.withdrawn_for_good(key, reason);
            return;
        }
        let Some(fire) = self.fires.remove(&key) else {
            return;
        };
        if self.cluster.is_some() {
            self.cluster_finished();
        } else if fire.state != State::Exited {
            self.admission.finished(key);
        }
        let id = fire.run_id.expect("started fires are recorded");
        self.by_run.remove(&id);
        tracing::info!(job = %fire.job.name, run_id = id, "{reason}; the run stays queued for the next start");
        if let Some(waiter) = fire.waiter {
            let message = format!(
                "run {id} did not start: {reason}; it stays queued and runs when pacerd starts \
                 again"
            );
            self.reply(waiter.to, Response::Error { message }, true);
        }
    }

    /// A cancel or a replace (not a stop) took back the start of `key`: the run never started,
    /// and was not to run, so its `queued` record ends `cancelled` rather than wait for the
    /// next start.
    fn withdrawn_for_good(&mut self, key: FireKey, reason: &str) {
        let Some(fire) = self.fires.get_mut(&key) else {
            return;
        };
        let exited = fire.state == State::Exited;
        let id = fire.run_id.expect("started fires are recorded");
        fire.state = State::Ending(Status::Cancelled, reason.to_owned());
        if self.cluster.is_some() {
            self.cluster_finished();
        } else if !exited {
            self.admission.finished(key);
        }
        self.write_then(
            Write::Resolve {
                id,
                status: Status::Cancelled,
                reason: reason.to_owned(),
            },
            After::Ended(key),
        );
    }

    /// The run of `key` ended and is recorded: its slot is free (if [`Engine::exited`] did not
    /// free it), and a retry or chained fires may follow.
    pub(super) fn finished(
        &mut self,
        key: FireKey,
        status: Status,
        error: Option<&str>,
        span: Option<RunSpan>,
        now: i64,
    ) {
        let exited = self
            .fires
            .get(&key)
            .is_some_and(|fire| fire.state == State::Exited);
        if self.cluster.is_some() {
            self.cluster_finished();
        } else if !exited {
            self.admission.finished(key);
        }
        let Some(fire) = self.fires.remove(&key) else {
            return;
        };
        let id = fire.run_id.expect("started fires are recorded");
        self.by_run.remove(&id);
        let job = Arc::clone(&fire.job);
        self.observe(Observation::Finished {
            job: Arc::clone(&job),
            status,
            span,
        });
        match self.last_status.get_mut(&job.name) {
            Some(last) => *last = status,
            None => {
                self.last_status.insert(job.name.clone(), status);
            }
        }
        if fire.trigger == Trigger::CatchUp && self.catching_up.remove(&job.name) {
            self.backlog_turn.insert(job.name.clone());
        }
        let retry = status.is_failure() && fire.attempt <= job.retries && !self.stopping;
        if let Some(waiter) = fire.waiter {
            // Without a span the end was not stored: the client learns that, not an outcome
            // the history does not hold.
            let response = match span {
                Some(_) => Response::Run(RunUpdate::Finished {
                    id,
                    status,
                    error: error.map(str::to_owned),
                }),
                None => Response::Error {
                    message: format!(
                        "run {id} ended, but the history could not record its end (pacerd's \
                         log says why; pacer show {id} tells what the history holds)"
                    ),
                },
            };
            self.reply(waiter.to, response, !(retry && waiter.wait));
        }
        if retry {
            self.accept(fire.retry(now), Then::Timeline, now);
            return;
        }
        let upstream = Upstream {
            job: &job.name,
            id: Some(id),
            status,
            error,
        };
        self.chain(&job, &upstream, now);
    }

    /// Fires the jobs the finished run's job names for its outcome (after its last retry).
    fn chain(&mut self, job: &Job, upstream: &Upstream<'_>, now: i64) {
        if self.stopping {
            return;
        }
        let targets = match upstream.status {
            Status::Succeeded => &job.on_success,
            status if status.is_failure() => &job.on_failure,
            _ => return,
        };
        for name in targets.clone() {
            let Some(target) = self.config.job(&name).map(Arc::clone) else {
                tracing::warn!(job = %job.name, "chained job `{name}` is no longer in the config");
                continue;
            };
            let mut fire = Fire::of(&target, Trigger::Chained, now, now);
            fire.params = Arc::new(chained_params(
                &target.params,
                upstream,
                target.plugin == "exec",
            ));
            fire.own_params = true;
            fire.upstream = upstream.id;
            self.accept(fire, Then::Admission, now);
        }
    }

    /// A recorded fire waiting outside admission may go now (a retry's or an `@reboot`
    /// jitter's instant came, or a missed fire's turn): to admission.
    pub(super) fn offer(&mut self, key: FireKey, now: i64) {
        let Some(fire) = self.fires.get_mut(&key) else {
            return;
        };
        if !matches!(fire.state, State::Timed(_) | State::Backlog) {
            return;
        }
        if self.cluster.is_some() {
            self.propose_backlog(key);
            return;
        }
        if fire.state == State::Backlog {
            self.catching_up.insert(fire.job.name.clone());
        }
        fire.state = State::Admitting;
        let pool = fire.job.pool.clone();
        self.undefer(&pool);
        self.submit(key, now, now);
    }

    /// Takes the fires found `queued` at start back, in their order: each to the timeline
    /// (its instant is still ahead), its job's backlog (a missed fire waiting its turn) or
    /// admission, under the same policies as when they were accepted. A fire whose job left
    /// the config ends `skipped`.
    pub(super) fn requeue(&mut self, queued: Vec<QueuedFire>, now: i64) {
        for queued in queued {
            let Some(job) = self.config.job(&queued.job).map(Arc::clone) else {
                self.write(Write::Resolve {
                    id: queued.id,
                    status: Status::Skipped,
                    reason: format!(
                        "its job `{}` is no longer in the config, so it never started",
                        queued.job
                    ),
                });
                self.observe(Observation::Skipped {
                    job: queued.job,
                    kind: SkipKind::JobRemoved,
                });
                continue;
            };
            let key = self.next_key;
            self.next_key += 1;
            let own_params = queued.params.is_some();
            let mut fire = Fire::of(
                &job,
                queued.trigger,
                queued.scheduled_at,
                queued.accepted_at,
            );
            fire.attempt = queued.attempt;
            fire.advances_schedule = false;
            if let Some(params) = queued.params {
                fire.params = Arc::new(params);
            }
            fire.own_params = own_params;
            fire.run_id = Some(queued.id);
            self.by_run.insert(queued.id, key);
            let timed = queued.scheduled_at > now;
            let backlog = queued.trigger == Trigger::CatchUp;
            fire.state = if timed {
                State::Timed(
                    self.scheduler
                        .set_timer(queued.scheduled_at, Timer::Fire(key)),
                )
            } else if backlog {
                State::Backlog
            } else {
                State::Admitting
            };
            self.fires.insert(key, fire);
            if timed {
                self.defer(key);
            } else if backlog {
                self.defer(key);
                self.backlog
                    .entry(job.name.clone())
                    .or_default()
                    .push_back(key);
                self.backlog_turn.insert(job.name.clone());
            } else {
                // Its wait for a slot began before the restart, and its queue time says so.
                let since = queued.accepted_at.max(queued.scheduled_at);
                self.submit(key, since, now);
            }
        }
    }

    /// Asks every run in flight to stop.
    pub(super) fn stop_all(&mut self, reason: &str) {
        let running: Vec<FireKey> = self
            .fires
            .iter()
            .filter(|(_, fire)| fire.state == State::Running)
            .map(|(key, _)| *key)
            .collect();
        for key in running {
            self.out.push(Effect::Stop {
                key,
                reason: reason.to_owned(),
            });
        }
    }
}
