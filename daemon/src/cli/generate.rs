//! Shell completions and man pages, generated from the same definitions as the parsers, so they
//! cannot drift from the commands. `packaging/generate.sh` writes them into `packaging/`.

use std::io::Write;
use std::process::ExitCode;

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

/// The man pages `pacer manual` renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Page {
    /// pacer(1).
    Pacer,
    /// pacerd(8).
    Pacerd,
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

/// Prints a man page in roff.
pub fn manual(page: Page) -> anyhow::Result<ExitCode> {
    let (command, section) = match page {
        Page::Pacer => (super::Args::command(), "1"),
        Page::Pacerd => (crate::daemon::Args::command(), "8"),
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(command)
        .section(section)
        .manual("Pacer")
        .render(&mut out)?;
    std::io::stdout().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}
