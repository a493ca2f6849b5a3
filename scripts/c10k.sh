#!/usr/bin/env bash
# c10k: 10,000 idle connections held for a while, then traffic at that scale.
# Prints the server's resident memory per idle connection, its open
# descriptors, and shows that cost does not grow with idle connections: echo
# on 500 active connections alone, then with 9,500 idle ones held beside
# them, and open-loop latency over all 10,000.
#
# Checks the limits first (scripts/limits.sh) and says what to raise.
# Server (SERVER, default wsloop) pinned to CPU 0, loadgen to CPU 1.
#
# Usage: scripts/c10k.sh [CONNECTIONS] [IDLE_SECONDS]   (default 10000 30)
# Environment: SERVER (wsloop), RATE (50k: open-loop rate at full scale),
#   ACTIVE (500 active connections for the echo runs), DURATION (8s per echo
#   run, 10s for the open-loop run), WARMUP (2s).
# Output: the machine, a summary, and target/c10k/summary.json with loadgen's reports.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/lib/servers.sh
connections=${1:-10000}
idle_seconds=${2:-30}
server=${SERVER:-wsloop}
rate=${RATE:-50k}
active=${ACTIVE:-500}
echo_duration=${DURATION:-8s}
rate_duration=${DURATION:-10s}
warmup=${WARMUP:-2s}
out=target/c10k
mkdir -p "$out"
scripts/limits.sh "$connections" || { echo "c10k.sh: raise the limits above first" >&2; exit 1; }
build_servers "$server"
print_machine
trap stop_server EXIT
start_server "$server" "$out/server.log" taskset -c 0
lg() { taskset -c 1 target/release/loadgen --url "ws://$SERVER_ADDR/" --quiet "$@"; }

# One small exchange first, so the baseline includes the loop's own buffers.
lg --mode echo -c 1 --messages 100 --warmup 0 --json "$out/warmup.json" >/dev/null
sleep 0.5
rss_before=$(rss_kib "$SERVER_PID")
fds_before=$(ls "/proc/$SERVER_PID/fd" | wc -l)

echo "c10k.sh: $connections idle connections for ${idle_seconds}s against $server"
lg --mode idle -c "$connections" --duration "${idle_seconds}s" --warmup 0 --json "$out/idle.json" >/dev/null &
idle=$!
for _ in $(seq 150); do  # until they are all open (the ramp), then halfway through the hold
  [ "$(ls "/proc/$SERVER_PID/fd" | wc -l)" -ge "$connections" ] && break
  sleep 0.2
done
sleep "$(python3 -c "print($idle_seconds / 2)")"
rss_held=$(rss_kib "$SERVER_PID")
fds_held=$(ls "/proc/$SERVER_PID/fd" | wc -l)
wait "$idle"
sleep 1

idle_count=$((connections - active))
echo "c10k.sh: echo on $active active connections, alone"
lg --mode echo -c "$active" --duration "$echo_duration" --warmup "$warmup" --json "$out/echo-alone.json" >/dev/null
echo "c10k.sh: echo on $active active connections beside $idle_count idle ones"
# Not through lg(): $! must be loadgen itself (taskset execs it) for the SIGINT below.
taskset -c 1 target/release/loadgen --url "ws://$SERVER_ADDR/" --quiet --mode idle -c "$idle_count" --duration 60s \
  --warmup 0 --json "$out/idle-beside.json" >/dev/null 2>"$out/idle-beside.err" &
beside=$!
for _ in $(seq 100); do  # until the idle ones are all open
  [ "$(ls "/proc/$SERVER_PID/fd" | wc -l)" -ge "$idle_count" ] && break
  sleep 0.2
done
lg --mode echo -c "$active" --duration "$echo_duration" --warmup "$warmup" --json "$out/echo-beside.json" >/dev/null
kill -INT "$beside" 2>/dev/null || true
# Interrupted as asked: exit 3 (0 if it had ended on its own); anything else is a fault.
status=0
wait "$beside" || status=$?
[ "$status" -eq 0 ] || [ "$status" -eq 3 ] || { echo "c10k.sh: the idle connections beside failed (loadgen exit $status)" >&2; exit 1; }
sleep 1
echo "c10k.sh: echo on all $connections connections"
lg --mode echo -c "$connections" --duration "$echo_duration" --warmup "$warmup" --json "$out/echo.json" >/dev/null
echo "c10k.sh: open loop, $rate msgs/s over $connections connections"
lg --mode rate -c "$connections" --rate "$rate" --duration "$rate_duration" --warmup "$warmup" --json "$out/rate.json" >/dev/null

python3 - "$out" "$server" "$connections" "$rss_before" "$rss_held" "$fds_before" "$fds_held" <<'PY'
import json, sys
out, server, n, rss0, rss1, fds0, fds1 = sys.argv[1:]
n, rss0, rss1, fds0, fds1 = int(n), int(rss0), int(rss1), int(fds0), int(fds1)
idle, echo, rate, alone, beside = (json.load(open(f"{out}/{name}.json"))
                                   for name in ("idle", "echo", "rate", "echo-alone", "echo-beside"))
per_connection = (rss1 - rss0) * 1024 / n
c = idle["connections"]
print(f"\nc10k: {server}, {n} connections")
print(f"  idle: held {c['peak_open']} of {n}, dropped {c['dropped']}, errors {idle['errors']['total']}; "
      f"handshake p50 {idle['handshake']['latency_us']['p50']/1000:.1f} ms, max {idle['handshake']['latency_us']['max']/1000:.1f} ms")
print(f"  server RSS {rss0} KiB -> {rss1} KiB: {per_connection:.0f} bytes per idle connection; open fds {fds0} -> {fds1}")
a, b = alone["messages"]["per_s"], beside["messages"]["per_s"]
print(f"  echo on {alone['settings']['connections']} active: {a:,.0f} msgs/s alone, {b:,.0f} msgs/s beside "
      f"{n - alone['settings']['connections']} idle ({b / a:.2f}x); p50 {alone['latency_us']['p50']:.0f} us -> "
      f"{beside['latency_us']['p50']:.0f} us, errors {alone['errors']['total'] + beside['errors']['total']}")
el, rl, ru = echo["latency_us"], rate["latency_us"], rate["latency_uncorrected_us"]
print(f"  echo at {n}: {echo['messages']['per_s']:,.0f} msgs/s, p50 {el['p50']:.0f} us, p99 {el['p99']:.0f} us, errors {echo['errors']['total']}")
print(f"  rate {rate['settings']['rate_per_s']:,.0f}/s at {n}: p50 {rl['p50']:.0f} us, p90 {rl['p90']:.0f} us, p99 {rl['p99']:.0f} us, "
      f"p99.9 {rl['p99_9']:.0f} us, max {rl['max']:.0f} us (uncorrected p99 {ru['p99']:.0f} us), errors {rate['errors']['total']}")
json.dump({"server": server, "connections": n, "rss_kib_before": rss0, "rss_kib_held": rss1,
           "bytes_per_idle_connection": per_connection, "fds_before": fds0, "fds_held": fds1,
           "idle": idle, "echo": echo, "rate": rate, "echo_alone": alone, "echo_beside_idle": beside}, open(f"{out}/summary.json", "w"), indent=1)
PY
