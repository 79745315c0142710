#!/bin/sh
# Regenerates the shell completions and man pages in packaging/ from the command-line
# definitions. Run it after changing a command or an option; a test fails while they differ.
set -eu
cd "$(dirname "$0")/.."
cargo build --quiet -p pacer --bin pacer
pacer=target/debug/pacer
"$pacer" completions bash > packaging/completions/pacer.bash
"$pacer" completions zsh > packaging/completions/_pacer
"$pacer" completions fish > packaging/completions/pacer.fish
rm -f packaging/man/*.1 packaging/man/*.8
"$pacer" manual packaging/man
