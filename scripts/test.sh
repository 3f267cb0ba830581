#!/usr/bin/env bash
# `make test`: every test, from a fresh machine. In order: dependencies, lint, the extension's
# tests inside PostgreSQL (cargo pgrx test), the extension installed for the project cluster,
# PostgreSQL and Redis started, then the daemon's tests and the end-to-end tests against them.
# PostgreSQL and Redis are stopped at the end, also when a step fails (set VOXPERF_KEEP_SERVICES=1
# to leave them running for a look).
#
# The order matters: `cargo pgrx test` installs a test build of voxperf into the system
# PostgreSQL's directories, so the extension is installed again (plain debug build) afterwards.
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "$0")/env.sh"
cd "$VOXPERF_ROOT"

stop_services() {
    local rc=$?
    if [ -n "${VOXPERF_KEEP_SERVICES:-}" ]; then
        echo "VOXPERF_KEEP_SERVICES set: PostgreSQL and Redis left running (make down stops them)"
    else
        voxperf_banner "stop PostgreSQL and Redis"
        "$VOXPERF_SCRIPTS/redis.sh" stop || true
        "$VOXPERF_SCRIPTS/pg.sh" stop || true
    fi
    if [ "$rc" -eq 0 ]; then
        voxperf_banner "make test: all passed"
    else
        voxperf_banner "make test: FAILED (exit $rc)"
    fi
}

# As root, PostgreSQL cannot run as us: pgrx's harness runs it as the postgres user (through
# sudo) in a directory that user can create. Test clusters left by an interrupted run are stopped
# and removed first (the harness removes its own at a normal exit).
pgrx_test_args=()
if voxperf_is_root; then
    pgrx_test_pgdata=/tmp/voxperf-pgrx-test
    pgrx_test_args=(--runas "$VOXPERF_PG_USER" --pgdata "$pgrx_test_pgdata")
else
    pgrx_test_pgdata="$VOXPERF_TARGET/test-pgdata"
fi
remove_stale_pgrx_clusters() {
    local d
    for d in "$pgrx_test_pgdata"/*/; do
        [ -f "$d/postmaster.pid" ] || continue
        echo "stopping a test cluster left running in $d"
        voxperf_as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
    done
    rm -rf "$pgrx_test_pgdata"
}

"$VOXPERF_SCRIPTS/deps.sh"
trap stop_services EXIT
"$VOXPERF_SCRIPTS/lint.sh"

voxperf_banner "extension: cargo pgrx test pg15 ${pgrx_test_args[*]}"
remove_stale_pgrx_clusters
# The harness installs a test build over voxperf.so: keep a running project cluster on its copy.
"$VOXPERF_SCRIPTS/ext.sh" detach
(cd pg_ext && cargo pgrx test pg15 "${pgrx_test_args[@]}")

voxperf_banner "extension: build and install (debug)"
"$VOXPERF_SCRIPTS/ext.sh" install debug

voxperf_banner "start PostgreSQL (127.0.0.1:$VOXPERF_PGPORT) and Redis (127.0.0.1:$VOXPERF_REDIS_PORT)"
"$VOXPERF_SCRIPTS/pg.sh" start
"$VOXPERF_SCRIPTS/redis.sh" start

voxperf_banner "voxperfd, demo application and end-to-end tests (cargo test -p voxperfd -p voxperf-e2e -p voxlink-demo)"
cargo test -p voxperfd -p voxperf-e2e -p voxlink-demo
