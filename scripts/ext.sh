#!/usr/bin/env bash
# Builds the extension (crate pg_ext/, package voxperf) and installs it into the system
# PostgreSQL 15 ($PG_CONFIG: voxperf.so to the pkglibdir, control and SQL files to
# sharedir/extension) with `cargo pgrx install`.
#
#   ext.sh install [debug|release]     (default: debug)
#   ext.sh detach                      give processes that map voxperf.so their own copy (below)
#
# The installed files are global to the machine: `cargo pgrx test` installs a test build into the
# same place, which is why `make test` runs this after the pgrx tests.
#
# A running project cluster keeps executing the library it loaded at start (it is preloaded in
# the postmaster and every backend inherits it), so when the installed voxperf.so changed this
# restarts the cluster; `pg.sh start` then recreates the extension's SQL objects if they changed.
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "$0")/env.sh"

LIBDIR="$("$PG_CONFIG" --pkglibdir)"
SO="$LIBDIR/voxperf.so"

so_sha() { sha256sum "$SO" 2>/dev/null | cut -d' ' -f1 || true; }

# cargo pgrx (install, and the test harness) overwrites voxperf.so in place, under the feet of
# every server that has it mapped: their backends crash on the next page they fault in. Replacing
# the file by a copy first gives running processes their own, now unlinked, inode; the overwrite
# then goes to a file nobody maps.
cmd_detach() {
    [ -f "$SO" ] || return 0
    if voxperf_is_root; then
        cp -p "$SO" "$SO.voxperf-tmp"
        mv -f "$SO.voxperf-tmp" "$SO"
    else
        sudo cp -p "$SO" "$SO.voxperf-tmp"
        sudo mv -f "$SO.voxperf-tmp" "$SO"
    fi
}

cmd_install() {
    local profile="${1:-debug}" args=(--pg-config "$PG_CONFIG")
    case "$profile" in
        debug) ;;
        release) args+=(--release) ;;
        *) voxperf_die "unknown profile '$profile' (debug or release)" ;;
    esac
    cargo pgrx --version >/dev/null 2>&1 || voxperf_die "cargo-pgrx not found; run scripts/deps.sh"
    if ! voxperf_is_root; then
        args+=(--sudo)
    fi
    cmd_detach
    local before
    before="$(so_sha)"
    (cd "$VOXPERF_ROOT/pg_ext" && cargo pgrx install "${args[@]}")
    if [ "$before" != "$(so_sha)" ] && "$VOXPERF_ROOT/scripts/pg.sh" status >/dev/null 2>&1; then
        echo "voxperf.so changed: restarting the project cluster to load it"
        "$VOXPERF_ROOT/scripts/pg.sh" restart fast
    fi
}

cmd="${1:-}"
shift || true
case "$cmd" in
    install) cmd_install "$@" ;;
    detach) cmd_detach ;;
    *)
        echo "usage: $0 install [debug|release] | detach" >&2
        exit 2
        ;;
esac
