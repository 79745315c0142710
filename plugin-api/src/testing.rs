//! Runs a plugin in-process, without `pacerd` and without the C ABI, for unit tests.
//!
//! The plugin goes through the same steps as under `pacerd`: params are parsed from JSON,
//! `validate` runs before `run`, and panics become failures with the panic message.
//!
//! ```
//! use pacer_plugin_api::testing::TestHost;
//! use pacer_plugin_api::{Context, Error, Level, Plugin};
//! use serde_json::json;
//!
//! #[derive(Default)]
//! struct Greet;
//!
//! #[derive(serde::Deserialize)]
//! struct Params {
//!     name: String,
//! }
//!
//! impl Plugin for Greet {
//!     const NAME: &'static str = "greet";
//!     const VERSION: &'static str = "1.0.0";
//!     type Params = Params;
//!
//!     fn run(&self, ctx: &Context, params: Params) -> Result<(), Error> {
//!         tracing::info!("hello, {}", params.name);
//!         ctx.set_message("greeted");
//!         Ok(())
//!     }
//! }
//!
//! let outcome = TestHost::new().params(json!({"name": "world"})).run::<Greet>();
//! assert!(outcome.ok);
//! assert_eq!(outcome.message.as_deref(), Some("greeted"));
//! assert_eq!(outcome.logs, [(Level::Info, "hello, world".to_owned())]);
//!
//! let outcome = TestHost::new().params(json!({})).validate::<Greet>();
//! assert!(!outcome.ok);
//! assert_eq!(
//!     outcome.message.as_deref(),
//!     Some("invalid params: missing field `name`")
//! );
//! ```

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::call::{self, Stage};
use crate::context::Host;
use crate::{Context, Level, Plugin, log};

/// A stand-in for `pacerd` that calls one plugin and records what it did.
///
/// Build it with the params and host state the test needs, then call
/// [`run`](TestHost::run) or [`validate`](TestHost::validate), as often as needed.
#[derive(Debug, Clone)]
pub struct TestHost {
    params: Vec<u8>,
    cancel_after: Option<Duration>,
    deadline: Option<SystemTime>,
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHost {
    /// A host passing empty params (`{}`), never cancelling, with no deadline.
    pub fn new() -> Self {
        Self {
            params: b"{}".to_vec(),
            cancel_after: None,
            deadline: None,
        }
    }

    /// Passes `params`, serialized as JSON, usually built with `serde_json::json!`.
    ///
    /// # Panics
    ///
    /// If `params` cannot be serialized as JSON (a map with non-string keys, say).
    pub fn params(mut self, params: impl Serialize) -> Self {
        self.params = serde_json::to_vec(&params).expect("test params must serialize as JSON");
        self
    }

    /// Passes this text as the params, exactly as given, even if it is not valid JSON.
    ///
    /// ```
    /// # use pacer_plugin_api::{Context, Error, Plugin};
    /// # #[derive(Default)]
    /// # struct Noop;
    /// # impl Plugin for Noop {
    /// #     const NAME: &'static str = "noop";
    /// #     const VERSION: &'static str = "1.0.0";
    /// #     type Params = std::collections::BTreeMap<String, u32>;
    /// #     fn run(&self, _: &Context, _: Self::Params) -> Result<(), Error> { Ok(()) }
    /// # }
    /// use pacer_plugin_api::testing::TestHost;
    ///
    /// let outcome = TestHost::new().params_json(r#"{"retries": -1}"#).validate::<Noop>();
    /// assert!(outcome.message.unwrap().starts_with("invalid params: invalid value: integer `-1`"));
    /// ```
    pub fn params_json(mut self, json: &str) -> Self {
        self.params = json.as_bytes().to_vec();
        self
    }

    /// Reports the run as cancelled from its start.
    pub fn cancelled(self) -> Self {
        self.cancel_after(Duration::ZERO)
    }

    /// Reports the run as cancelled once `after` has passed since the call started.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use pacer_plugin_api::testing::TestHost;
    /// use pacer_plugin_api::{Context, Error, Plugin};
    ///
    /// #[derive(Default)]
    /// struct Wait;
    ///
    /// impl Plugin for Wait {
    ///     const NAME: &'static str = "wait";
    ///     const VERSION: &'static str = "1.0.0";
    ///     type Params = serde::de::IgnoredAny;
    ///
    ///     fn run(&self, ctx: &Context, _params: Self::Params) -> Result<(), Error> {
    ///         ctx.sleep(Duration::from_secs(3600))?;
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let outcome = TestHost::new().cancel_after(Duration::from_millis(50)).run::<Wait>();
    /// assert!(!outcome.ok);
    /// assert_eq!(outcome.message.as_deref(), Some("cancelled"));
    /// ```
    pub fn cancel_after(mut self, after: Duration) -> Self {
        self.cancel_after = Some(after);
        self
    }

    /// Reports `at` as the instant the host would kill the run.
    pub fn deadline(mut self, at: SystemTime) -> Self {
        self.deadline = Some(at);
        self
    }

    /// Calls the plugin's `validate` as `pacer check` does.
    pub fn validate<P: Plugin>(&self) -> Outcome {
        self.call::<P>(Stage::Validate)
    }

    /// Runs the plugin once as a scheduled run does (`validate`, then `run`).
    pub fn run<P: Plugin>(&self) -> Outcome {
        self.call::<P>(Stage::Run)
    }

    fn call<P: Plugin>(&self, stage: Stage) -> Outcome {
        let recorder = Arc::new(Recorder {
            cancel_at: self
                .cancel_after
                .map(|after| Instant::now().checked_add(after).unwrap_or_else(far_future)),
            deadline: self.deadline,
            record: Mutex::default(),
        });
        let host: Arc<dyn Host> = recorder.clone();
        let ok = log::scoped(Arc::clone(&host), || {
            call::call::<P>(&Context::new(host), &self.params, stage)
        });
        let record = std::mem::take(&mut *recorder.lock());
        Outcome {
            ok,
            message: record.message,
            logs: record.logs,
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// What a plugin did in one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether it succeeded (the C ABI's return value 0).
    pub ok: bool,
    /// The last message it set, or its failure's message.
    pub message: Option<String>,
    /// Its log lines in order: [`Context::log`] calls and `tracing` events emitted on the
    /// calling thread. (Under `pacerd`, events from every thread of the plugin are logged.)
    pub logs: Vec<(Level, String)>,
}

#[derive(Debug, Default)]
struct Record {
    message: Option<String>,
    logs: Vec<(Level, String)>,
}

struct Recorder {
    cancel_at: Option<Instant>,
    deadline: Option<SystemTime>,
    record: Mutex<Record>,
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Host for Recorder {
    fn log(&self, level: Level, line: &str) {
        self.lock().logs.push((level, line.to_owned()));
    }

    fn set_message(&self, message: &str) {
        self.lock().message = Some(message.to_owned());
    }

    fn is_cancelled(&self) -> bool {
        self.cancel_at.is_some_and(|at| Instant::now() >= at)
    }

    fn deadline(&self) -> Option<SystemTime> {
        self.deadline
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;
    use crate::Error;

    #[derive(Debug, Deserialize)]
    #[serde(tag = "do", rename_all = "snake_case")]
    enum Params {
        Succeed,
        Fail,
        Panic,
        PanicWithValue,
        Log,
        SleepUntilCancelled,
        ReportDeadline,
    }

    #[derive(Default)]
    struct Probe;

    impl Plugin for Probe {
        const NAME: &'static str = "probe";
        const VERSION: &'static str = "0.0.1";
        type Params = Params;

        fn run(&self, ctx: &Context, params: Params) -> Result<(), Error> {
            match params {
                Params::Succeed => ctx.set_message("all good"),
                Params::Fail => {
                    std::fs::metadata("/nonexistent/pacer-file")?;
                }
                Params::Panic => panic!("index {} out of range", 7),
                Params::PanicWithValue => std::panic::panic_any(17_u32),
                Params::Log => {
                    ctx.log(Level::Warn, "one\ntwo");
                    tracing::error!(code = 3, "bad");
                    tracing::debug!("detail");
                }
                Params::SleepUntilCancelled => {
                    let started = Instant::now();
                    let result = ctx.sleep(Duration::from_secs(60));
                    tracing::info!(cancelled = result.is_err(), "slept");
                    assert!(started.elapsed() < Duration::from_secs(5));
                    result?;
                }
                Params::ReportDeadline => {
                    let left = ctx.remaining().map(|d| d.as_secs());
                    ctx.set_message(&format!("{left:?}"));
                }
            }
            Ok(())
        }
    }

    fn run(params: serde_json::Value) -> Outcome {
        TestHost::new().params(params).run::<Probe>()
    }

    #[test]
    fn success() {
        let outcome = run(json!({"do": "succeed"}));
        assert_eq!(
            outcome,
            Outcome {
                ok: true,
                message: Some("all good".to_owned()),
                logs: Vec::new(),
            }
        );
    }

    #[test]
    fn error_becomes_the_message() {
        let outcome = run(json!({"do": "fail"}));
        assert!(!outcome.ok);
        assert_eq!(
            outcome.message.as_deref(),
            Some("No such file or directory (os error 2)")
        );
    }

    #[test]
    fn panics_are_caught() {
        let outcome = run(json!({"do": "panic"}));
        assert!(!outcome.ok);
        assert_eq!(
            outcome.message.as_deref(),
            Some("panicked: index 7 out of range")
        );

        let outcome = run(json!({"do": "panic_with_value"}));
        assert_eq!(
            outcome.message.as_deref(),
            Some("panicked (non-string payload)")
        );
    }

    #[test]
    fn bad_params_name_the_serde_error() {
        let outcome = run(json!({"do": "dance"}));
        assert!(!outcome.ok);
        let message = outcome.message.unwrap();
        assert!(
            message.starts_with("invalid params: unknown variant `dance`, expected one of"),
            "{message}"
        );

        let outcome = TestHost::new().params_json("{").validate::<Probe>();
        assert!(!outcome.ok);
        assert_eq!(
            outcome.message.as_deref(),
            Some("invalid params: EOF while parsing an object")
        );

        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code, reason = "only parsed")]
        struct Strict {
            path: String,
            upstream: Option<serde_json::Value>,
        }
        #[derive(Default)]
        struct StrictPlugin;
        impl Plugin for StrictPlugin {
            const NAME: &'static str = "strict";
            const VERSION: &'static str = "0.0.1";
            type Params = Strict;
            fn run(&self, _: &Context, _: Strict) -> Result<(), Error> {
                Ok(())
            }
        }
        let outcome = TestHost::new()
            .params(json!({"path": "/tmp", "pathh": 1}))
            .validate::<StrictPlugin>();
        assert_eq!(
            outcome.message.as_deref(),
            Some("invalid params: unknown field `pathh`, expected `path`"),
            "no JSON position, and not the host's own `upstream`"
        );
    }

    #[test]
    fn logs_and_tracing_events_are_captured_with_levels() {
        let outcome = run(json!({"do": "log"}));
        assert!(outcome.ok);
        assert_eq!(
            outcome.logs,
            [
                (Level::Warn, "one".to_owned()),
                (Level::Warn, "two".to_owned()),
                (Level::Error, "bad code=3".to_owned()),
                (Level::Debug, "detail".to_owned()),
            ]
        );
    }

    #[test]
    fn cancellation_ends_a_sleep_early() {
        let outcome = TestHost::new()
            .params(json!({"do": "sleep_until_cancelled"}))
            .cancel_after(Duration::from_millis(30))
            .run::<Probe>();
        assert!(!outcome.ok);
        assert_eq!(outcome.message.as_deref(), Some("cancelled"));
        assert_eq!(
            outcome.logs,
            [(Level::Info, "slept cancelled=true".to_owned())]
        );
    }

    #[test]
    fn a_cancelled_run_does_not_sleep_at_all() {
        let outcome = TestHost::new()
            .params(json!({"do": "sleep_until_cancelled"}))
            .cancelled()
            .run::<Probe>();
        assert_eq!(outcome.message.as_deref(), Some("cancelled"));
    }

    #[test]
    fn deadline_and_remaining_time() {
        let params = json!({"do": "report_deadline"});
        let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
        let outcome = TestHost::new()
            .params(&params)
            .deadline(in_an_hour)
            .run::<Probe>();
        assert!(matches!(
            outcome.message.as_deref(),
            Some("Some(3599)" | "Some(3600)")
        ));

        let passed = SystemTime::now() - Duration::from_secs(5);
        let outcome = TestHost::new()
            .params(&params)
            .deadline(passed)
            .run::<Probe>();
        assert_eq!(outcome.message.as_deref(), Some("Some(0)"));

        let outcome = TestHost::new().params(&params).run::<Probe>();
        assert_eq!(outcome.message.as_deref(), Some("None"));
    }
}
