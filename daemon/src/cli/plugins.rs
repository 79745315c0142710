//! `pacer plugins`: every library found in the plugin directories.

use std::process::ExitCode;

use anyhow::bail;

use super::table::Table;
use super::{Context, print_json, runtime};
use crate::control::client::{ClientError, ask};
use crate::control::{Request, Response};
use crate::plugins::{PluginState, Registry, ScanOptions};
use crate::worker::Launcher;

pub fn run(context: &Context) -> anyhow::Result<ExitCode> {
    let settings = context.settings()?;
    let plugins = match ask(&settings.socket, &Request::Plugins) {
        Ok(Response::Plugins { plugins }) => plugins,
        Ok(Response::Error { message }) => bail!("{message}"),
        Ok(other) => bail!("unexpected answer from pacerd: {other:?}"),
        Err(ClientError::NotRunning(_)) => runtime()?
            .block_on(Registry::discover(
                &settings.plugin_dirs,
                &Launcher::current("pacer"),
                ScanOptions::for_current_user(),
            ))
            .all()
            .to_vec(),
        Err(e) => return Err(e.into()),
    };
    if context.json {
        print_json(&plugins)?;
        return Ok(ExitCode::SUCCESS);
    }
    if plugins.is_empty() {
        let dirs: Vec<String> = settings
            .plugin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        println!("no plugin libraries (*.so) in {}", dirs.join(", "));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(vec!["NAME", "VERSION", "ABI", "STATE", "PATH", "ERROR"]);
    for plugin in &plugins {
        table.row(vec![
            plugin.name.clone().unwrap_or_else(|| "?".to_owned()),
            plugin.version.clone().unwrap_or_else(|| "-".to_owned()),
            plugin
                .abi_version
                .map_or_else(|| "-".to_owned(), |v| v.to_string()),
            match plugin.state {
                PluginState::Ok => "ok".to_owned(),
                PluginState::Refused => "refused".to_owned(),
            },
            plugin.path.display().to_string(),
            plugin.error.clone().unwrap_or_default(),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}
