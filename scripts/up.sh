#!/usr/bin/env bash
# `make up`: everything the daemon needs, and nothing else. Installs missing dependencies, builds
# and installs the extension, starts the project-local PostgreSQL and Redis (or leaves them
# running), then prints how to connect. Safe to run again at any time.
#
# VOXPERF_EXT_PROFILE=debug|release chooses the extension build (default release).
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "$0")/env.sh"

profile="${VOXPERF_EXT_PROFILE:-release}"

"$VOXPERF_SCRIPTS/deps.sh"
voxperf_banner "extension: build and install ($profile)"
"$VOXPERF_SCRIPTS/ext.sh" install "$profile"
voxperf_banner "PostgreSQL 15 on 127.0.0.1:$VOXPERF_PGPORT"
"$VOXPERF_SCRIPTS/pg.sh" start
voxperf_banner "Redis on 127.0.0.1:$VOXPERF_REDIS_PORT"
"$VOXPERF_SCRIPTS/redis.sh" start

cat <<INFO

  DATABASE_URL=$DATABASE_URL
  REDIS_URL=$REDIS_URL
  psql:  psql $DATABASE_URL   (or: make psql)
  stop:  make down
INFO
