//! The read-only web view (`web_listen`) and the Prometheus endpoint (`metrics_listen`),
//! served by one HTTP stack (hyper). Pages are rendered on the server as HTML with inline SVG
//! charts; a small built-in script refreshes them while they are shown. Nothing here changes
//! the daemon's state: the history (SQLite, or a cluster's PostgreSQL) is only read, and the
//! daemon is asked only what `pacer jobs`, `status` and `why` ask.

mod assets;
mod fmt;
mod history;
mod page;
mod pages;
mod query;
mod server;
mod site;
mod svg;
mod words;

pub(crate) use server::{Listeners, MetricsSource};
