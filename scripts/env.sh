# shellcheck shell=bash
# Sourced by every script in scripts/ (and, through them, by the Makefile): where things live,
# which ports the project-local services use, and the few helpers the scripts share.
#
# Every value can be overridden from the environment. Nothing here starts, installs or creates
# anything: sourcing this file is free of side effects, so `make` can print URLs cheaply.

VOXPERF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
export VOXPERF_ROOT

# Non-default loopback ports, so a system PostgreSQL (5432) or Redis (6379) never gets our data
# and our tests never talk to them by accident.
export VOXPERF_PGPORT="${VOXPERF_PGPORT:-28815}"
export VOXPERF_REDIS_PORT="${VOXPERF_REDIS_PORT:-26379}"
export VOXPERF_LISTEN="${VOXPERF_LISTEN:-127.0.0.1:8080}"
# The demo application (voxlink-demo) that `make run` puts behind voxperfd's gateway.
export VOXLINK_LISTEN="${VOXLINK_LISTEN:-127.0.0.1:3000}"

# The PostgreSQL 15 installation everything builds against and runs: Debian's postgresql-15.
export PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
export PGBIN="${PGBIN:-$(dirname "$PG_CONFIG")}"
# pgrx's build script reruns bindgen (and everything downstream recompiles) whenever this
# variable changes between two builds. Setting it for every pgrx build (install, test, clippy)
# keeps one set of artifacts instead of rebuilding pgrx-pg-sys each time we switch commands.
export PGRX_PG_CONFIG_PATH="${PGRX_PG_CONFIG_PATH:-$PG_CONFIG}"

# Libraries the project cluster preloads. Overridable to run the cluster without the extension
# (VOXPERF_PRELOAD='') or next to pg_stat_statements for comparisons ('voxperf,pg_stat_statements').
export VOXPERF_PRELOAD="${VOXPERF_PRELOAD-voxperf}"
# Seconds pg_ctl waits for start/stop (crash recovery after `restart immediate` included).
export VOXPERF_PG_TIMEOUT="${VOXPERF_PG_TIMEOUT:-120}"

# Everything the services write lives under target/, next to the build output.
export VOXPERF_TARGET="${VOXPERF_TARGET:-$VOXPERF_ROOT/target}"
export VOXPERF_REDIS_DIR="$VOXPERF_TARGET/redis"
export VOXPERF_REDIS_LOG="$VOXPERF_TARGET/redis.log"

# What the daemon and the tests connect to. The end-to-end tests also find the scripts here (to
# run `$VOXPERF_SCRIPTS/pg.sh restart immediate` and the like).
export VOXPERF_SCRIPTS="$VOXPERF_ROOT/scripts"
export DATABASE_URL="postgres://postgres@127.0.0.1:$VOXPERF_PGPORT/voxperf"
export REDIS_URL="redis://127.0.0.1:$VOXPERF_REDIS_PORT/"
# The seed's own variable names for Redis, set as well: a daemon reading REDIS_PORT rather than
# REDIS_URL must not fall back to 6379 (a system Redis) without anyone noticing.
export REDIS_HOST=127.0.0.1
export REDIS_PORT="$VOXPERF_REDIS_PORT"

# cargo may be installed for this user only; `sudo make ...` drops it from PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

voxperf_is_root() { [ "$(id -u)" -eq 0 ]; }

# The OS user PostgreSQL runs as. initdb and postgres refuse to run as root, so as root we use
# `postgres` (created by Debian's postgresql-common; see voxperf_ensure_pg_user otherwise).
# Inside the cluster the superuser is always called `postgres` (initdb -U postgres).
if voxperf_is_root; then
    export VOXPERF_PG_USER="${VOXPERF_PG_USER:-postgres}"
else
    export VOXPERF_PG_USER="${VOXPERF_PG_USER:-$(id -un)}"
fi

# Where the cluster's files go. Normally target/pgdata and target/pg.log.
#
# As root, PostgreSQL runs as $VOXPERF_PG_USER, which must be able to reach its data directory
# and log file. A checkout under /root (mode 700) is not reachable, so in that case the data
# directory and the log live in /tmp/voxperf-<hash of the project path>/ instead, and
# target/pgdata and target/pg.log are symlinks to them (created by `pg.sh init`). /tmp may be
# emptied at boot: the next `pg.sh start` then initialises a fresh cluster.
#
# Sets VOXPERF_PGDATA (the real data directory, which pg_ctl is given), VOXPERF_PG_LOG and
# VOXPERF_PG_STATE (a directory next to the data directory for the scripts' own bookkeeping).
voxperf_locate_pgdata() {
    VOXPERF_PG_EXTERNAL=""
    if voxperf_is_root && [ "$VOXPERF_PG_USER" != root ] \
        && ! runuser -u "$VOXPERF_PG_USER" -- test -x "$VOXPERF_ROOT" 2>/dev/null; then
        VOXPERF_PG_EXTERNAL="/tmp/voxperf-$(printf '%s' "$VOXPERF_ROOT" | sha256sum | cut -c1-10)"
        VOXPERF_PG_STATE="$VOXPERF_PG_EXTERNAL"
    else
        VOXPERF_PG_STATE="$VOXPERF_TARGET"
    fi
    VOXPERF_PGDATA="$VOXPERF_PG_STATE/pgdata"
    VOXPERF_PG_LOG="$VOXPERF_PG_STATE/pg.log"
    export VOXPERF_PGDATA VOXPERF_PG_LOG VOXPERF_PG_STATE VOXPERF_PG_EXTERNAL
}
voxperf_locate_pgdata

# One-line banner before each step, so a long log shows where it is.
voxperf_banner() {
    if [ -t 1 ]; then
        printf '\n\033[1m==> %s\033[0m\n' "$*"
    else
        printf '\n==> %s\n' "$*"
    fi
}

voxperf_die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Runs a command as root: directly when we are root, else through sudo.
voxperf_as_root() {
    if voxperf_is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        voxperf_die "'$*' needs root and sudo is not installed; run it as root or install sudo"
    fi
}

# Runs a command as the PostgreSQL OS user, from / so that a cwd it cannot enter is no problem.
voxperf_as_pg() {
    if voxperf_is_root && [ "$VOXPERF_PG_USER" != root ]; then
        (cd / && runuser -u "$VOXPERF_PG_USER" -- "$@")
    else
        "$@"
    fi
}

# As root, make sure $VOXPERF_PG_USER exists (Debian's postgresql-common normally created it).
voxperf_ensure_pg_user() {
    voxperf_is_root || return 0
    id -u "$VOXPERF_PG_USER" >/dev/null 2>&1 && return 0
    echo "creating OS user $VOXPERF_PG_USER to run PostgreSQL"
    useradd --system --user-group --create-home --shell /bin/bash "$VOXPERF_PG_USER"
    voxperf_locate_pgdata
}
