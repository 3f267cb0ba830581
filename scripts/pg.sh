#!/usr/bin/env bash
# The project-local PostgreSQL 15 cluster: data in target/pgdata (see env.sh for the root case),
# TCP on 127.0.0.1:$VOXPERF_PGPORT only, no Unix socket, trust authentication, superuser
# `postgres`, voxperf preloaded, database `voxperf` with the extension created.
#
#   pg.sh init                      create the cluster if it does not exist
#   pg.sh start                     init if needed, start (fine if running), create db + extension
#   pg.sh stop [fast|immediate]     stop (fine if stopped)
#   pg.sh restart [fast|immediate]  stop then start; `immediate` is a crash (recovery on start)
#   pg.sh status                    exit 0 when running, 3 when not (pg_ctl's convention)
#   pg.sh psql [args]               psql on the voxperf database
#   pg.sh url                       print DATABASE_URL
#   pg.sh wait                      wait until the server accepts connections
#   pg.sh destroy                   stop and delete the cluster (data, log)
#
# Settings: VOXPERF_PGPORT, VOXPERF_PRELOAD (shared_preload_libraries, default 'voxperf'),
# VOXPERF_PG_TIMEOUT (seconds), VOXPERF_PG_EXTRA_CONF (extra postgresql.conf lines, applied at
# every start, e.g. VOXPERF_PG_EXTRA_CONF=$'voxperf.track = all\nlog_min_duration_statement = 0').
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "$0")/env.sh"

PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1)
ADMIN_URL="postgres://postgres@127.0.0.1:$VOXPERF_PGPORT/postgres"
# The file our settings go to; postgresql.conf includes it last, so it wins over the defaults
# (postgresql.auto.conf, i.e. ALTER SYSTEM, still wins over it).
CONF_FILE=voxperf.conf
EXTENSION_DIR="$("$PG_CONFIG" --sharedir)/extension"
# Which build of the extension's SQL was used to create it in this cluster (see ensure_extension).
extension_sha_file() { echo "$VOXPERF_PG_STATE/voxperf-extension.sha256"; }

pg_ctl() { voxperf_as_pg "$PGBIN/pg_ctl" -D "$VOXPERF_PGDATA" "$@"; }

is_initialised() { [ -f "$VOXPERF_PGDATA/PG_VERSION" ]; }

is_running() { is_initialised && pg_ctl status >/dev/null 2>&1; }

# The running postmaster's port: line 4 of postmaster.pid.
running_port() { sed -n 4p "$VOXPERF_PGDATA/postmaster.pid" 2>/dev/null || true; }

pick_locale() {
    if locale -a 2>/dev/null | grep -qixE 'c\.utf-?8'; then echo C.UTF-8; else echo C; fi
}

# Directories and symlinks for the /tmp case (see voxperf_locate_pgdata in env.sh).
prepare_external_dir() {
    [ -n "$VOXPERF_PG_EXTERNAL" ] || return 0
    local dir="$VOXPERF_PG_EXTERNAL"
    [ -e "$dir" ] || [ -L "$dir" ] || mkdir -m 755 "$dir"
    # A predictable name in /tmp: refuse one that someone else created.
    if [ -L "$dir" ] || [ "$(stat -c %u "$dir")" != 0 ]; then
        voxperf_die "$dir exists but is not a directory owned by root; remove it and run again"
    fi
    if [ -e "$VOXPERF_TARGET/pgdata" ] && [ ! -L "$VOXPERF_TARGET/pgdata" ]; then
        voxperf_die "$VOXPERF_TARGET/pgdata is a directory from an earlier run; remove it (make clean-data)"
    fi
    if [ ! -L "$VOXPERF_TARGET/pgdata" ]; then
        echo "note: $VOXPERF_PG_USER cannot reach $VOXPERF_ROOT, so the cluster lives in $dir" \
            "(target/pgdata and target/pg.log link to it)"
    fi
    ln -sfn "$VOXPERF_PGDATA" "$VOXPERF_TARGET/pgdata"
    ln -sfn "$VOXPERF_PG_LOG" "$VOXPERF_TARGET/pg.log"
}

# The log is opened by pg_ctl as the PostgreSQL user with a 077 umask; creating it first keeps
# it readable for whoever runs the scripts.
prepare_log() {
    mkdir -p "$(dirname "$VOXPERF_PG_LOG")"
    touch "$VOXPERF_PG_LOG"
    chmod 644 "$VOXPERF_PG_LOG"
    if voxperf_is_root; then chown "$VOXPERF_PG_USER" "$VOXPERF_PG_LOG"; fi
}

cmd_init() {
    voxperf_ensure_pg_user
    mkdir -p "$VOXPERF_TARGET"
    prepare_external_dir
    if is_initialised; then
        return 0
    fi
    [ -x "$PGBIN/initdb" ] || voxperf_die "$PGBIN/initdb not found; run scripts/deps.sh"
    if [ -L "$VOXPERF_PGDATA" ] || { [ -d "$VOXPERF_PGDATA" ] && [ -n "$(ls -A "$VOXPERF_PGDATA")" ]; }; then
        voxperf_die "$VOXPERF_PGDATA exists but holds no cluster; remove it (make clean-data)"
    fi
    mkdir -p "$VOXPERF_PGDATA"
    chmod 700 "$VOXPERF_PGDATA"
    if voxperf_is_root; then chown "$VOXPERF_PG_USER:" "$VOXPERF_PGDATA"; fi
    local locale log="$VOXPERF_TARGET/initdb.log"
    locale="$(pick_locale)"
    echo "initdb $VOXPERF_PGDATA (locale $locale, running as $VOXPERF_PG_USER)"
    if ! voxperf_as_pg "$PGBIN/initdb" -D "$VOXPERF_PGDATA" -U postgres --auth=trust -E UTF8 \
        --locale="$locale" >"$log" 2>&1; then
        cat "$log" >&2
        voxperf_die "initdb failed"
    fi
    echo "include_if_exists = '$CONF_FILE'" | voxperf_as_pg tee -a "$VOXPERF_PGDATA/postgresql.conf" >/dev/null
    rm -f "$(extension_sha_file)"
}

# Rewritten at every start so that changed ports or settings apply.
write_conf() {
    {
        echo "# Written by scripts/pg.sh at every start; set VOXPERF_PG_EXTRA_CONF to add lines."
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $VOXPERF_PGPORT"
        echo "unix_socket_directories = ''"
        echo "shared_preload_libraries = '$VOXPERF_PRELOAD'"
        if [ -n "${VOXPERF_PG_EXTRA_CONF:-}" ]; then
            echo "# from VOXPERF_PG_EXTRA_CONF"
            printf '%s\n' "$VOXPERF_PG_EXTRA_CONF"
        fi
    } | voxperf_as_pg tee "$VOXPERF_PGDATA/$CONF_FILE" >/dev/null
}

cmd_wait() {
    local deadline=$((SECONDS + VOXPERF_PG_TIMEOUT))
    until "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$VOXPERF_PGPORT" -U postgres -d postgres; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 30 "$VOXPERF_PG_LOG" >&2 || true
            voxperf_die "PostgreSQL on port $VOXPERF_PGPORT not ready after ${VOXPERF_PG_TIMEOUT}s"
        fi
        sleep 0.2
    done
}

ensure_database() {
    if [ -z "$("${PSQL[@]}" -tA -d "$ADMIN_URL" -c "SELECT 1 FROM pg_database WHERE datname = 'voxperf'")" ]; then
        "${PSQL[@]}" -d "$ADMIN_URL" -c "CREATE DATABASE voxperf"
        echo "created database voxperf"
    fi
}

installed_extension_sha() {
    cat "$EXTENSION_DIR/voxperf.control" "$EXTENSION_DIR"/voxperf--*.sql 2>/dev/null | sha256sum | cut -d' ' -f1
}

# CREATE EXTENSION IF NOT EXISTS voxperf, and when the installed SQL script changed since the
# extension was created in this cluster (a rebuilt extension, same version number), drop and
# create it again so the database has the new functions and views. Objects that depend on the
# extension go with it (DROP ... CASCADE); the demo tables do not.
ensure_extension() {
    if [ ! -f "$EXTENSION_DIR/voxperf.control" ]; then
        echo "warning: the voxperf extension is not installed ($EXTENSION_DIR/voxperf.control);" \
            "run scripts/ext.sh install" >&2
        return 0
    fi
    local sha created
    sha="$(installed_extension_sha)"
    created="$("${PSQL[@]}" -tA -d "$DATABASE_URL" -c "SELECT 1 FROM pg_extension WHERE extname = 'voxperf'")"
    if [ -n "$created" ] && [ "$sha" != "$(cat "$(extension_sha_file)" 2>/dev/null || true)" ]; then
        echo "the installed voxperf SQL changed: dropping and creating the extension again"
        "${PSQL[@]}" -d "$DATABASE_URL" -c "DROP EXTENSION voxperf CASCADE"
    fi
    "${PSQL[@]}" -d "$DATABASE_URL" -c "SET client_min_messages = warning" \
        -c "CREATE EXTENSION IF NOT EXISTS voxperf"
    echo "$sha" >"$(extension_sha_file)"
}

cmd_start() {
    cmd_init
    write_conf
    if is_running; then
        local port
        port="$(running_port)"
        if [ "$port" != "$VOXPERF_PGPORT" ]; then
            echo "PostgreSQL is running on port $port, configured for $VOXPERF_PGPORT: restarting"
            cmd_stop fast
        else
            echo "PostgreSQL already running"
        fi
    fi
    if ! is_running; then
        prepare_log
        if ! pg_ctl -l "$VOXPERF_PG_LOG" -w -t "$VOXPERF_PG_TIMEOUT" start >/dev/null; then
            echo "---- last lines of $VOXPERF_PG_LOG ----" >&2
            tail -n 25 "$VOXPERF_PG_LOG" >&2 || true
            voxperf_die "PostgreSQL did not start"
        fi
    fi
    cmd_wait
    ensure_database
    ensure_extension
    echo "PostgreSQL ready: $DATABASE_URL (log: $VOXPERF_PG_LOG)"
}

cmd_stop() {
    local mode="${1:-fast}"
    if ! is_running; then
        echo "PostgreSQL not running"
        return 0
    fi
    pg_ctl -m "$mode" -w -t "$VOXPERF_PG_TIMEOUT" stop >/dev/null
    echo "PostgreSQL stopped ($mode)"
}

check_mode() {
    case "${1:-fast}" in
        fast | immediate | smart) ;;
        *) voxperf_die "unknown shutdown mode '$1' (fast, immediate or smart)" ;;
    esac
}

cmd_destroy() {
    cmd_stop fast
    rm -rf "$VOXPERF_PGDATA" "$VOXPERF_PG_LOG" "$(extension_sha_file)" "$VOXPERF_TARGET/initdb.log"
    if [ -n "$VOXPERF_PG_EXTERNAL" ]; then
        rm -rf "$VOXPERF_PG_EXTERNAL"
        rm -f "$VOXPERF_TARGET/pgdata" "$VOXPERF_TARGET/pg.log"
    fi
    echo "PostgreSQL cluster deleted ($VOXPERF_PGDATA)"
}

cmd_status() {
    if is_running; then
        echo "PostgreSQL running (pid $(sed -n 1p "$VOXPERF_PGDATA/postmaster.pid"), port $(running_port)): $DATABASE_URL"
    else
        echo "PostgreSQL not running (data: $VOXPERF_PGDATA)"
        return 3
    fi
}

cmd="${1:-}"
shift || true
case "$cmd" in
    init) cmd_init ;;
    start) cmd_start ;;
    stop) check_mode "${1:-}" && cmd_stop "${1:-fast}" ;;
    restart) check_mode "${1:-}" && cmd_stop "${1:-fast}" && cmd_start ;;
    status) cmd_status ;;
    psql) exec "$PGBIN/psql" -d "$DATABASE_URL" "$@" ;;
    url) echo "$DATABASE_URL" ;;
    wait) cmd_wait ;;
    destroy) cmd_destroy ;;
    *)
        echo "usage: $0 init|start|stop [mode]|restart [mode]|status|psql [args]|url|wait|destroy" >&2
        exit 2
        ;;
esac
