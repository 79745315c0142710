//! Shell completions and man pages, generated from the same definitions as the parsers, so they
//! cannot drift from the commands. `packaging/generate.sh` writes them into `packaging/`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use clap::{CommandFactory, ValueEnum};
use clap_complete::Shell;

/// The shells `pacer completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    /// Bash (`/usr/share/bash-completion/completions/pacer`).
    Bash,
    /// Zsh (`/usr/share/zsh/vendor-completions/_pacer`).
    Zsh,
    /// Fish (`/usr/share/fish/vendor_completions.d/pacer.fish`).
    Fish,
}

/// Prints the completion script for `shell`.
pub fn completions(shell: CompletionShell) -> anyhow::Result<ExitCode> {
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut command = super::Args::command();
    clap_complete::generate(shell, &mut command, "pacer", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Writes every man page into `dir`: pacer(1), a pacer-VERB(1) for each verb (which pacer(1)
/// refers to), and pacerd(8).
pub fn manual(dir: &Path) -> anyhow::Result<ExitCode> {
    // `pacer help VERB` is `pacer VERB --help`, whose page is pacer-VERB(1): no page of its own.
    let mut pacer = super::Args::command().disable_help_subcommand(true);
    // Built, the command lists exactly the verbs pacer(1) names.
    pacer.build();
    for verb in pacer.get_subcommands().filter(|verb| !verb.is_hide_set()) {
        let name = format!("pacer-{}", verb.get_name());
        let page = verb
            .clone()
            .name(name.clone())
            .bin_name(format!("pacer {}", verb.get_name()));
        write_page(dir, page, &name, "1")?;
    }
    write_page(dir, pacer, "pacer", "1")?;
    write_page(dir, crate::daemon::Args::command(), "pacerd", "8")?;
    Ok(ExitCode::SUCCESS)
}

fn write_page(dir: &Path, command: clap::Command, name: &str, section: &str) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command)
        .section(section)
        .manual("Pacer")
        .render(&mut out)?;
    let path = dir.join(format!("{name}.{section}"));
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))
}
