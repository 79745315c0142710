//! End-to-end tests: the real `pacerd` and `pacer` on configs in temporary directories, with
//! real plugins (Rust ones built by cargo, C ones compiled by gcc from the header alone).
#![allow(
    clippy::unwrap_used,
    reason = "tests and their helpers: a panic is the failure report"
)]

mod abi;
mod admission;
mod api;
mod booted;
mod c_plugins;
mod cli;
mod cluster;
mod cluster_chaos;
mod config_errors;
mod core;
mod damaged_history;
mod durability;
mod examples;
mod isolation;
mod libraries;
mod needs;
mod observability;
mod operations;
mod packaging;
mod plugin_files;
mod plugin_http;
mod plugin_mail;
mod plugin_report;
mod restart;
mod sdk;
mod socket_abuse;
mod store_faults;
mod validation;
mod web;
