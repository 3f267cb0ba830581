#!/usr/bin/env bash
# The project-local Redis: 127.0.0.1:$VOXPERF_REDIS_PORT, working directory target/redis, log
# target/redis.log, no persistence (a cache starts empty by design), daemonized with a pidfile.
#
#   redis.sh start | stop | status | cli [args]
#
# start and stop are idempotent. The system's redis-server service (6379) is not touched.
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "$0")/env.sh"

PIDFILE="$VOXPERF_REDIS_DIR/redis.pid"
CLI=(redis-cli -h 127.0.0.1 -p "$VOXPERF_REDIS_PORT")

pid() { cat "$PIDFILE" 2>/dev/null || true; }

# The pid in our pidfile is a live redis-server (after a reboot the number may be anyone's).
is_running() {
    local p
    p="$(pid)"
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null && grep -q redis-server "/proc/$p/cmdline" 2>/dev/null
}

responds() { [ "$("${CLI[@]}" ping 2>/dev/null)" = PONG ]; }

cmd_start() {
    command -v redis-server >/dev/null 2>&1 || voxperf_die "redis-server not found; run scripts/deps.sh"
    if is_running && responds; then
        echo "Redis already running"
    else
        if responds; then
            voxperf_die "something else answers on 127.0.0.1:$VOXPERF_REDIS_PORT (not our pidfile $PIDFILE);" \
                "stop it or set VOXPERF_REDIS_PORT"
        fi
        mkdir -p "$VOXPERF_REDIS_DIR"
        rm -f "$PIDFILE"
        redis-server --bind 127.0.0.1 --port "$VOXPERF_REDIS_PORT" \
            --daemonize yes --pidfile "$PIDFILE" \
            --dir "$VOXPERF_REDIS_DIR" --logfile "$VOXPERF_REDIS_LOG" \
            --save '' --appendonly no
        local deadline=$((SECONDS + 20))
        until responds; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                tail -n 20 "$VOXPERF_REDIS_LOG" >&2 || true
                voxperf_die "Redis did not start on port $VOXPERF_REDIS_PORT"
            fi
            sleep 0.1
        done
    fi
    echo "Redis ready: $REDIS_URL (log: $VOXPERF_REDIS_LOG)"
}

cmd_stop() {
    if ! is_running; then
        rm -f "$PIDFILE"
        echo "Redis not running"
        return 0
    fi
    local p
    p="$(pid)"
    "${CLI[@]}" shutdown nosave >/dev/null 2>&1 || kill "$p" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$p" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill -9 "$p" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$PIDFILE"
    echo "Redis stopped"
}

cmd_status() {
    if is_running && responds; then
        echo "Redis running (pid $(pid)): $REDIS_URL"
    else
        echo "Redis not running"
        return 3
    fi
}

cmd="${1:-}"
shift || true
case "$cmd" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    cli) exec "${CLI[@]}" "$@" ;;
    *)
        echo "usage: $0 start|stop|status|cli [args]" >&2
        exit 2
        ;;
esac
