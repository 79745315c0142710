#!/bin/sh
# Installs Pacer from a source checkout: the binaries, the bundled plugins, the systemd unit,
# the sysusers entry, a default config (kept if one exists), completions, man pages and the
# documentation the config points at.
#
#   packaging/install.sh [--prefix /usr/local] [--destdir DIR] [--no-build]
#
# --prefix   where binaries and plugins go (default /usr/local; plugins in PREFIX/lib/pacer/plugins,
#            which pacerd searches by default for /usr and /usr/local)
# --destdir  stage the files under DIR instead of the live system (for packaging); then nothing
#            is started or reloaded
# --no-build use what `cargo build --release` already built (or PACER_BUILD_DIR)
set -eu

prefix=/usr/local
destdir=
build=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=$2; shift 2 ;;
        --destdir) destdir=$2; shift 2 ;;
        --no-build) build=no; shift ;;
        -h|--help) sed -n '2,13s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
# Whatever the caller's umask, what is installed is readable by all and writable by root only.
umask 022
if [ "$build" = yes ]; then
    cargo build --release
fi
# Where cargo put the build: PACER_BUILD_DIR, else CARGO_TARGET_DIR, else what cargo says (a
# config may move it from target/), else target/.
target=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')}
if [ -z "$target" ]; then
    target=target
    echo "install.sh: cargo did not say where it builds; using ./target (set PACER_BUILD_DIR if it is elsewhere)" >&2
fi
built=${PACER_BUILD_DIR:-$target/release}
for file in pacerd pacer libpacer_plugin_exec.so; do
    if [ ! -e "$built/$file" ]; then
        echo "install.sh: $built/$file is missing; build with cargo build --release" >&2
        exit 1
    fi
done

root=$destdir
install -Dm0755 "$built/pacerd" "$root$prefix/bin/pacerd"
install -Dm0755 "$built/pacer" "$root$prefix/bin/pacer"
# A temporary name, then a rename: a running pacerd never loads a half-written library.
for plugin in exec files http mail report; do
    dir="$root$prefix/lib/pacer/plugins"
    install -Dm0644 "$built/libpacer_plugin_$plugin.so" "$dir/.libpacer_plugin_$plugin.so.tmp"
    mv -f "$dir/.libpacer_plugin_$plugin.so.tmp" "$dir/libpacer_plugin_$plugin.so"
done

install -d -m0755 "$root/etc/systemd/system"
sed "s#/usr/bin/pacer#$prefix/bin/pacer#g" packaging/systemd/pacer.service \
    > "$root/etc/systemd/system/pacer.service"
chmod 0644 "$root/etc/systemd/system/pacer.service"
install -Dm0644 packaging/sysusers.d/pacer.conf "$root/etc/sysusers.d/pacer.conf"
if [ -e "$root/etc/pacer/pacer.toml" ]; then
    echo "kept the existing $root/etc/pacer/pacer.toml"
else
    # It names the documentation where this install puts it.
    install -d -m0755 "$root/etc/pacer"
    sed "s#/usr/share/doc/pacer#$prefix/share/doc/pacer#" packaging/pacer.toml \
        > "$root/etc/pacer/pacer.toml"
    chmod 0644 "$root/etc/pacer/pacer.toml"
fi
install -d -m0755 "$root/etc/pacer/jobs.d"

install -Dm0644 packaging/completions/pacer.bash "$root$prefix/share/bash-completion/completions/pacer"
install -Dm0644 packaging/completions/_pacer "$root$prefix/share/zsh/site-functions/_pacer"
install -Dm0644 packaging/completions/pacer.fish "$root$prefix/share/fish/vendor_completions.d/pacer.fish"
for page in packaging/man/*.1; do
    install -Dm0644 "$page" "$root$prefix/share/man/man1/$(basename "$page")"
done
install -Dm0644 packaging/man/pacerd.8 "$root$prefix/share/man/man8/pacerd.8"
docs="$root$prefix/share/doc/pacer"
install -Dm0644 README.md "$docs/README.md"
for page in docs/*.md; do
    install -Dm0644 "$page" "$docs/$(basename "$page")"
done
install -Dm0644 examples/production.toml "$docs/examples/production.toml"
install -Dm0644 packaging/prometheus/pacer-alerts.yml "$docs/examples/pacer-alerts.yml"

if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
    systemd-sysusers /etc/sysusers.d/pacer.conf
    systemctl daemon-reload
    # An upgrade: a running service restarts on the new binaries (its runs get shutdown_grace).
    systemctl try-restart pacer.service
    echo "installed; start it with: systemctl enable --now pacer"
else
    echo "installed under ${destdir:-/}"
fi
