#!/usr/bin/env bash
# Reproduces loadgen's headline measurements against a release wsloop.
#
#   scripts/loadgen-measure.sh c10k [CONNECTIONS] [DURATION]
#       idle mode: are all connections held with no drops? The server's
#       VmRSS before and while holding them, and the difference per connection.
#   scripts/loadgen-measure.sh echo [CONNECTIONS] [DURATION]
#       closed-loop echo, 512 B, server pinned to CPU 0 and loadgen to CPU 1:
#       msgs/s and both processes' CPU time per message (server: /proc/PID/stat
#       over the loadgen run; loadgen: its own report, measurement window).
#
# Results (loadgen's summary and JSON, the server log) go to target/measure/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
what=${1:?usage: $0 c10k|echo [CONNECTIONS] [DURATION]}
out=target/measure
mkdir -p "$out"
cargo build --quiet --release --bin wsloop --bin loadgen

# start_server [taskset prefix...]: starts wsloop on a free port; sets $server and $addr.
start_server() {
  "$@" target/release/wsloop --listen 127.0.0.1:0 --max-connections 12000 >"$out/wsloop.log" 2>&1 &
  server=$!
  trap 'kill "$server" 2>/dev/null || true' EXIT
  addr=""
  for _ in $(seq 100); do
    addr=$(grep -o 'listening on [0-9.:]*' "$out/wsloop.log" | awk '{print $3}' || true)
    [ -n "$addr" ] && return
    sleep 0.05
  done
  echo "wsloop did not start:" >&2
  cat "$out/wsloop.log" >&2
  exit 1
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 "," $15}' "/proc/$1/stat"; } # user,system

case "$what" in
c10k)
  connections=${2:-10000}
  duration=${3:-30s}
  start_server
  sleep 0.5
  before=$(rss_kb "$server")
  target/release/loadgen --url "ws://$addr/" --mode idle --connections "$connections" --duration "$duration" \
    --warmup 0 --json "$out/c10k.json" --quiet >"$out/c10k.txt" &
  loadgen=$!
  # Sample the server while every connection is held: halfway through the run.
  seconds=$(python3 -c "import sys; d='$duration'; print(float(d[:-1]) if d.endswith('s') else float(d))")
  sleep "$(python3 -c "print($seconds / 2 + 2)")"
  held=$(rss_kb "$server")
  status=0
  wait "$loadgen" || status=$?
  cat "$out/c10k.txt"
  python3 - "$out/c10k.json" "$before" "$held" "$connections" <<'PY'
import json, sys
report, before, held, n = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
c = report["connections"]
print(f"held {c['peak_open']} of {n}, dropped {c['dropped']}, errors {report['errors']['total']}")
print(f"server VmRSS {before} kB before, {held} kB holding them: {(held - before) * 1024 / n:.0f} bytes per connection")
PY
  exit "$status"
  ;;
echo)
  connections=${2:-500}
  duration=${3:-10s}
  start_server taskset -c 0
  sleep 0.5
  ticks_per_s=$(getconf CLK_TCK)
  cpu_before=$(cpu_ticks "$server")
  status=0
  taskset -c 1 target/release/loadgen --url "ws://$addr/" --mode echo --connections "$connections" --size 512 \
    --duration "$duration" --warmup 0 --json "$out/echo.json" --quiet >"$out/echo.txt" || status=$?
  cpu_after=$(cpu_ticks "$server")
  cat "$out/echo.txt"
  python3 - "$out/echo.json" "$cpu_before" "$cpu_after" "$ticks_per_s" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
(user0, sys0), (user1, sys1) = (map(int, arg.split(",")) for arg in sys.argv[2:4])
hz = int(sys.argv[4])
messages = report["messages"]["received"]
server_user, server_sys = (user1 - user0) / hz, (sys1 - sys0) / hz
server_s = server_user + server_sys
cpu = report["cpu"]
print(f"{report['messages']['per_s']:.0f} msgs/s over {report['window_s']:.1f} s, {messages} messages")
print(f"server  CPU {server_s:.2f} s = {server_s / messages * 1e6:.2f} us per message "
      f"(user {server_user / messages * 1e6:.2f}, system {server_sys / messages * 1e6:.2f}; whole loadgen run, set-up included)")
print(f"loadgen CPU {cpu['window_user_s'] + cpu['window_system_s']:.2f} s = {cpu['per_message_us']:.2f} us per message "
      f"(user {cpu['window_user_s'] / messages * 1e6:.2f}, system {cpu['window_system_s'] / messages * 1e6:.2f})")
PY
  exit "$status"
  ;;
*)
  echo "usage: $0 c10k|echo [CONNECTIONS] [DURATION]" >&2
  exit 2
  ;;
esac
