#!/usr/bin/env bash
# `make run`: `make up`, the demo data and workload, then the VoxLink demo application
# (voxlink-demo, in the background) and voxperfd in the foreground as its gateway (Ctrl-C stops
# both; PostgreSQL and Redis keep running until `make down`).
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "$0")/env.sh"

"$VOXPERF_SCRIPTS/up.sh"
"$VOXPERF_SCRIPTS/demo.sh"
voxperf_banner "voxperfd and the demo application: build (release)"
cd "$VOXPERF_ROOT"
cargo build --release -p voxperfd -p voxlink-demo

# Writes to the demo tables invalidate what the gateway cached from them (NOTIFY per statement).
"$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -c \
    "SELECT voxperf.watch_table(t) FROM unnest(ARRAY['\"VirtualNumber\"', '\"UsageRecord\"', '\"User\"']::regclass[]) t" \
    >/dev/null

demo_log="$VOXPERF_TARGET/demo-app.log"
VOXLINK_LISTEN="$VOXLINK_LISTEN" "$VOXPERF_TARGET/release/voxlink-demo" >"$demo_log" 2>&1 &
demo_pid=$!
trap 'kill "$demo_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    curl -fsS "http://$VOXLINK_LISTEN/healthz" >/dev/null 2>&1 && break
    kill -0 "$demo_pid" 2>/dev/null || { cat "$demo_log" >&2; voxperf_die "voxlink-demo did not start"; }
    sleep 0.1
done

export VOXPERF_UPSTREAM="${VOXPERF_UPSTREAM:-http://$VOXLINK_LISTEN}"
export VOXPERF_ROUTES="${VOXPERF_ROUTES:-$VOXPERF_ROOT/docs/routes.example.toml}"
voxperf_banner "voxperfd: running on $VOXPERF_LISTEN in front of $VOXPERF_UPSTREAM (Ctrl-C to stop)"
cat <<INFO

  Dashboard:  http://$VOXPERF_LISTEN/
  API:        http://$VOXPERF_LISTEN/api/openapi.json   (e.g. curl http://$VOXPERF_LISTEN/api/db/index-suggestions)
  Gateway:    http://$VOXPERF_LISTEN/api/numbers/search?country=US   (the demo application through voxperfd;
              routes: $VOXPERF_ROUTES)
  Demo app:   http://$VOXLINK_LISTEN/   (directly; log $demo_log)
  psql:       psql $DATABASE_URL   (or: make psql)
  Redis:      $REDIS_URL
  Logs:       $VOXPERF_PG_LOG, $VOXPERF_REDIS_LOG

INFO
"$VOXPERF_TARGET/release/voxperfd"
