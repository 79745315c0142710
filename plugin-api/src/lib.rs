//! Write Pacer plugins in safe Rust: implement [`Plugin`], invoke [`export_plugin!`] once.
//!
//! # The model
//!
//! A Pacer plugin is a shared library (`cdylib`) that `pacerd` loads by the name it declares.
//! The daemon never calls plugin code in its own process: each run is a child process of
//! `pacerd` that loads the library, calls the plugin's `run` once and exits. So a plugin may keep
//! state in globals, spawn threads and allocate freely; if it panics, aborts, segfaults, calls
//! [`std::process::exit`], hangs or leaks, that costs one run record, never the daemon or
//! another job. `pacer check` calls the plugin's `validate` (in a child process too) to check
//! each job's params before they are ever run.
//!
//! The library speaks a small C ABI (`include/pacer_plugin.h`, mirrored by [`abi`]). Authors
//! never see it: they implement [`Plugin`] and invoke [`export_plugin!`], and never write
//! `unsafe` or `extern`. The macro also keeps panics from crossing the boundary: a panic becomes
//! a failed run whose message is `panicked: <panic message>`.
//!
//! # A complete plugin
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "pacer-plugin-greet"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! pacer-plugin-api = "0.1"
//! serde = { version = "1", features = ["derive"] }
//! tracing = "0.1"
//! ```
//!
//! `src/lib.rs`:
//!
//! ```no_run
//! use std::path::PathBuf;
//! use std::time::Duration;
//!
//! use pacer_plugin_api::{Context, Error, Plugin, ResultExt, bail, export_plugin};
//! use serde::Deserialize;
//!
//! /// The job's `[jobs.params]` table.
//! #[derive(Debug, Deserialize)]
//! #[serde(deny_unknown_fields)] // so that `pacer check` reports a misspelled key
//! struct Params {
//!     name: String,
//!     #[serde(default = "one")]
//!     times: u32,
//!     /// A file holding the greeting to use instead of "hello".
//!     greeting_file: Option<PathBuf>,
//! }
//!
//! fn one() -> u32 {
//!     1
//! }
//!
//! #[derive(Default)]
//! struct Greet;
//!
//! impl Plugin for Greet {
//!     const NAME: &'static str = "greet";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!     type Params = Params;
//!
//!     fn validate(&self, params: &Params) -> Result<(), Error> {
//!         if params.name.is_empty() {
//!             bail!("`name` must not be empty");
//!         }
//!         Ok(())
//!     }
//!
//!     fn run(&self, ctx: &Context, params: Params) -> Result<(), Error> {
//!         let greeting = match &params.greeting_file {
//!             // A relative path resolves against the directory of the job's config file.
//!             Some(path) => std::fs::read_to_string(path)
//!                 .with_context(|| format!("reading {}", path.display()))?,
//!             None => "hello".to_owned(),
//!         };
//!         for round in 1..=params.times {
//!             tracing::info!(round, "{}, {}", greeting.trim(), params.name);
//!             // Returns early with an error once the run is cancelled or times out.
//!             ctx.sleep(Duration::from_secs(1))?;
//!         }
//!         ctx.set_message(&format!("greeted {} {} times", params.name, params.times));
//!         Ok(())
//!     }
//! }
//!
//! export_plugin!(Greet);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release` and install `target/release/libpacer_plugin_greet.so`
//! into a plugin directory with `install -m 0644`: it writes a temporary file and renames it into
//! place, so runs that are starting never see a half-written library. A job then uses it:
//!
//! ```toml
//! [[jobs]]
//! name = "greeting"
//! schedule = "@hourly"
//! plugin = "greet"
//! [jobs.params]
//! name = "world"
//! times = 3
//! ```
//!
//! # Params
//!
//! A job's `[jobs.params]` table reaches the plugin as JSON and is deserialized into
//! [`Plugin::Params`]; when that fails, the run (or `pacer check`) fails with
//! `invalid params: <reason>`. Denying unknown fields is recommended. A chained run (started by
//! `on_success` or `on_failure`) gets an extra `upstream` object describing the run that caused
//! it: a plugin that denies unknown fields and may be chained declares an `upstream` field.
//!
//! # Errors
//!
//! [`Error`] carries a message for the run record. Any [`std::error::Error`] converts into it
//! with `?`, keeping its chain of causes (`outer: inner: ...`). [`ResultExt::context`] says what
//! was being done (`reading greeting.txt: No such file or directory (os error 2)`),
//! and [`bail!`] returns a formatted error early.
//!
//! # Output and logging
//!
//! What the plugin writes to stdout and stderr is the run's output, and so is every `tracing`
//! event (with its level) emitted while `validate` or `run` executes, from any thread: the macro
//! installs a subscriber that forwards them to the host. [`Context::log`] does the same without
//! `tracing`. That subscriber is the process's global default, so a plugin does not install one
//! of its own (`tracing_subscriber::fmt().init()` would panic).
//!
//! # Cancellation and deadlines
//!
//! When a run is cancelled or reaches its timeout, `pacerd` sends SIGTERM to the run's process
//! group and SIGKILL a second later. A plugin that wants to stop cleanly checks
//! [`Context::is_cancelled`] in its loops, or waits with [`Context::sleep`], which returns early
//! with [`Cancelled`]. [`Context::deadline`] tells when the run will be killed.
//!
//! # Testing
//!
//! [`testing::TestHost`] calls a plugin in-process, without `pacerd` and without the C ABI, and
//! collects its result, message and logs, so plugins are unit-tested like any other code.
//!
//! # Async code
//!
//! With the `async` feature, `block_on` runs a future on a fresh current-thread tokio runtime
//! from inside `run`.

#![deny(missing_docs)]

pub mod abi;
mod call;
mod context;
mod error;
mod ffi;
pub mod fields;
mod log;
mod plugin;
#[cfg(feature = "async")]
mod rt;
pub mod testing;

pub use context::{Cancelled, Context, Level};
pub use error::{Error, ResultExt};
pub use plugin::Plugin;
#[cfg(feature = "async")]
pub use rt::block_on;

/// What [`export_plugin!`] expands to; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::ffi::{Descriptor, nul_terminated, plugin_name};
}
