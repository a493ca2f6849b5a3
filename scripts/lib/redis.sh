# Shared by the scripts that join wsloop processes through Redis (source it
# after servers.sh): a real redis-server on a free port of 127.0.0.1,
# persistence off, stopped by stop_redis (call it from the script's EXIT trap).
#
#   start_redis DIR       starts it (its log in DIR/redis.log); sets REDIS_PID, REDIS_PORT, REDIS_URL
#   redis_numsub CHANNEL  subscribers of CHANNEL, as Redis counts them
#   redis_cpu_ticks       Redis's user+system CPU time so far, in clock ticks (/proc)
#   stop_redis            stops it (SIGTERM, then SIGKILL)

# free_port: a port of 127.0.0.1 that was free a moment ago.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_redis() {
  local dir=$1
  command -v redis-server >/dev/null || { echo "needs redis-server (Debian: apt-get install redis-server)" >&2; return 1; }
  command -v redis-cli >/dev/null || { echo "needs redis-cli (Debian: apt-get install redis-tools)" >&2; return 1; }
  local attempt
  for attempt in 1 2 3 4 5; do
    REDIS_PORT=$(free_port)
    # Persistence off: nothing written, nothing loaded.
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
      --daemonize no --loglevel warning --logfile "" >"$dir/redis.log" 2>&1 &
    REDIS_PID=$!
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    for _ in $(seq 100); do
      [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null || true)" = PONG ] && return 0
      kill -0 "$REDIS_PID" 2>/dev/null || break
      sleep 0.05
    done
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
    echo "redis-server did not start on port $REDIS_PORT (attempt $attempt); its log:" >&2
    cat "$dir/redis.log" >&2
  done
  return 1
}

redis_numsub() {
  redis-cli -p "$REDIS_PORT" pubsub numsub "$1" 2>/dev/null | awk 'NR == 2 { n = $1 } END { print n + 0 }'
}

redis_cpu_ticks() { cpu_ticks "$REDIS_PID"; }

stop_redis() {
  [ -n "${REDIS_PID:-}" ] || return 0
  kill -TERM "$REDIS_PID" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$REDIS_PID" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$REDIS_PID" 2>/dev/null || true
  wait "$REDIS_PID" 2>/dev/null || true
  REDIS_PID=""
}
