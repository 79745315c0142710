//! Pacer: a scheduled job runner for Linux servers.
//!
//! This crate is both binaries' library: `pacerd` (the daemon, see [`daemon`]) and `pacer`
//! (the CLI, see [`cli`]). The daemon reads cron-style schedules from a TOML file, runs each fire
//! of a job as a child process that loads the job's plugin, and records every run in SQLite.

pub mod admission;
pub mod cli;
pub mod config;
pub mod control;
mod counter_map;
pub mod daemon;
mod descriptors;
pub mod dir_watch;
pub mod engine;
#[doc(hidden)]
pub mod fuzz;
pub mod logging;
pub mod model;
pub mod plugins;
pub mod privilege;
pub mod schedule;
pub mod scheduler;
pub mod store;
mod sys;
pub mod time;
pub mod units;
mod web;
pub mod worker;
