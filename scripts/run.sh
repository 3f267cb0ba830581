#!/usr/bin/env bash
# `make run`: `make up`, the demo data and workload, then voxperfd in the foreground (Ctrl-C
# stops it; PostgreSQL and Redis keep running until `make down`).
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "$0")/env.sh"

"$VOXPERF_SCRIPTS/up.sh"
"$VOXPERF_SCRIPTS/demo.sh"
voxperf_banner "voxperfd: build (release)"
cd "$VOXPERF_ROOT"
cargo build --release -p voxperfd

voxperf_banner "voxperfd: running on $VOXPERF_LISTEN (Ctrl-C to stop)"
cat <<INFO

  Dashboard:  http://$VOXPERF_LISTEN/
  API:        http://$VOXPERF_LISTEN/api/   (e.g. curl http://$VOXPERF_LISTEN/api/db/index-suggestions)
  psql:       psql $DATABASE_URL   (or: make psql)
  Redis:      $REDIS_URL
  Logs:       $VOXPERF_PG_LOG, $VOXPERF_REDIS_LOG

INFO
exec cargo run --release -p voxperfd
