#!/usr/bin/env bash
# `make demo`: (re)loads the VoxLink demo schema and data into the voxperf database and runs the
# demo workload once. Reloading drops the demo tables first, so the demo starts from a known
# state; voxperf's statistics are kept. Needs the cluster (`make up`).
#
# VOXPERF_DEMO_SCALE (default 1: 2,000 users, 20,000 numbers, 200,000 usage records).
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "$0")/env.sh"

scale="${VOXPERF_DEMO_SCALE:-1}"
psql_run() {
    PGOPTIONS="-c client_min_messages=warning" \
        "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" "$@"
}

"$VOXPERF_SCRIPTS/pg.sh" status >/dev/null || voxperf_die "PostgreSQL is not running; run 'make up' first"
voxperf_banner "demo: VoxLink schema and data (scale $scale)"
psql_run -f "$VOXPERF_ROOT/sql/schema.sql"
psql_run -v scale="$scale" -f "$VOXPERF_ROOT/sql/data.sql"
voxperf_banner "demo: VoxLink workload"
start=$SECONDS
psql_run -f "$VOXPERF_ROOT/sql/workload.sql"
echo "workload took $((SECONDS - start))s"
