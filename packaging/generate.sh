#!/bin/sh
# Regenerates what packaging/ holds generated: the shell completions and man pages from the
# command-line definitions, and the SDK crate's manifest as pacer-dev ships it. Run it after
# changing a command, an option or plugin-api/Cargo.toml; a test fails while they differ.
set -eu
cd "$(dirname "$0")/.."
cargo build --quiet -p pacer --bin pacer
pacer=target/debug/pacer
"$pacer" completions bash > packaging/completions/pacer.bash
"$pacer" completions zsh > packaging/completions/_pacer
"$pacer" completions fish > packaging/completions/pacer.fish
rm -f packaging/man/*.1 packaging/man/*.8
"$pacer" manual packaging/man

# The SDK crate's manifest as pacer-dev ships it: what `cargo package` writes for a registry,
# with the workspace's settings filled in.
cargo package --quiet -p pacer-plugin-api --no-verify --allow-dirty --exclude-lockfile
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
pkgid=$(cargo pkgid -p pacer-plugin-api)
version=${pkgid##*@}
tar -xzf "$target/package/pacer-plugin-api-$version.crate" -O "pacer-plugin-api-$version/Cargo.toml" \
    > packaging/sdk/Cargo.toml
