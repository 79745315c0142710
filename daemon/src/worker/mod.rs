//! Worker processes: every plugin call happens in a child process (`pacerd worker`), so a
//! plugin that crashes, hangs, leaks or floods costs one run record, never the daemon.

pub mod child;
mod guard;
pub mod outcome;
mod output;
pub mod protocol;
mod service_env;
mod supervisor;

pub use output::Tail;
pub use supervisor::{Ended, Launcher, Limits, Reports, Stop, Worker, is_spawned_as, perform};
