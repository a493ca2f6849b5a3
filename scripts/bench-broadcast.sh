#!/usr/bin/env bash
# Fan-out: wsloop --mode broadcast against the broadcast peers, one room of
# each SUBSCRIBERS size and each SIZE of message, in one script so the ratios
# compare like with like. Server on CPU 0, loadgen on CPU 1.
#
# For each room size and message size, two phases, each in RUNS interleaved
# rounds (every server once per round, so slow drifts of this shared machine
# hit them alike), medians reported:
#   1. closed loop: PUBLISHERS publishers (default 1), each sending its next
#      message when its previous one came back to it, PIPELINE in flight:
#      deliveries per second, every delivery checked (once, in order, intact);
#   2. open loop at one fixed rate for all servers, below every knee:
#      FIXED_DELIVERIES (100,000) deliveries/s, i.e. FIXED_DELIVERIES /
#      SUBSCRIBERS messages published per second (100 msgs/s to a room of
#      1,000), or RATE_FRACTION (0.5) of the slowest server's closed-loop
#      median from phase 1 of this very run if that is lower: delivery
#      latency p50/p99 from each message's intended send time.
# The table's last column is wsloop's closed-loop figure over the best Rust
# peer's (fastwebsockets, tokio-tungstenite; minimal is the ceiling, not a peer).
# With 10,000 subscribers loadgen reads 10,000 sockets per message, and on
# two cores it can be the limit: the table shows both sides' busy figures.
#
# Usage: scripts/bench-broadcast.sh
# Environment: RUNS (3), DURATION (2s), WARMUP (500ms), SUBSCRIBERS ("100 1000 10000"),
#   SIZES ("64 512"), PUBLISHERS (1), PIPELINE (1), FIXED_DELIVERIES (100000), RATE_FRACTION (0.5),
#   SERVERS ("wsloop-broadcast minimal-broadcast fastwebsockets-broadcast tokio-tungstenite-broadcast").
# Output: the machine, one table, target/bench-broadcast/results.json (every
# run's loadgen report). Exits 1 (after the table) if any loadgen run failed.
# The default run takes about 7 minutes here (2 vCPUs), after the builds.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/lib/servers.sh
runs=${RUNS:-3}
duration=${DURATION:-2s}
warmup=${WARMUP:-500ms}
room_sizes=${SUBSCRIBERS:-100 1000 10000}
sizes=${SIZES:-64 512}
publishers=${PUBLISHERS:-1}
pipeline=${PIPELINE:-1}
fraction=${RATE_FRACTION:-0.5}
fixed_deliveries=${FIXED_DELIVERIES:-100000}
servers=${SERVERS:-wsloop-broadcast minimal-broadcast fastwebsockets-broadcast tokio-tungstenite-broadcast}
out=target/bench-broadcast
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.log "$out"/*.err

[ "$(nproc)" -ge 2 ] || { echo "bench-broadcast.sh: needs 2 CPUs (server and loadgen each on its own)" >&2; exit 1; }
started=$(date +%s)
echo "bench-broadcast.sh: building (release)"
build_servers $servers
print_machine
trap stop_server EXIT
seconds() { python3 -c "import sys; from re import match; m = match(r'([0-9.]+)(ms|s)?$', sys.argv[1]); print(float(m[1]) / (1000 if m[2] == 'ms' else 1))" "$1"; }
window=$(seconds "$duration")

# measure TAG SERVER SUBSCRIBERS SIZE RUN PHASE [LOADGEN FLAGS...]: one
# loadgen broadcast run against a fresh server; CPU 0's busy share (the
# server and the softirq work it causes) sampled inside the measurement
# window, found from loadgen's progress lines.
failed=()
measure() {
  local tag=$1 server=$2 subscribers=$3 size=$4 run=$5 phase=$6
  shift 6
  start_server "$server" "$out/$tag.log" taskset -c 0
  taskset -c 1 target/release/loadgen "ws://$SERVER_ADDR/feed" --mode broadcast -c "$subscribers" --size "$size" \
    --publishers "$publishers" --duration "$duration" --warmup "$warmup" --connect-timeout 30s --progress \
    --json "$out/$tag.json" "$@" >/dev/null 2>"$out/$tag.err" &
  local loadgen=$! status=0 core0="" core1="" t0="" t1=""
  for _ in $(seq 600); do # the first progress line of the window (ticks are a second apart)
    grep -qs ' measure ' "$out/$tag.err" && break
    kill -0 "$loadgen" 2>/dev/null || break
    sleep 0.05
  done
  if grep -qs ' measure ' "$out/$tag.err"; then
    core0=$(core_ticks 0); t0=$(date +%s.%N)
    sleep "$(python3 -c "print(max(0.3, $window - 1.3))")"
    core1=$(core_ticks 0); t1=$(date +%s.%N)
  fi
  wait "$loadgen" || status=$?
  stop_server
  [ "$status" -eq 0 ] || failed+=("$tag (loadgen exit $status)")
  [ -f "$out/$tag.json" ] || { cat "$out/$tag.err" >&2; echo "bench-broadcast.sh: $tag wrote no report" >&2; exit 1; }
  python3 - "$out/$tag.json" "$server" "$subscribers" "$size" "$run" "$phase" "$status" "$core0" "$core1" <<'PY'
import json, sys
path, server, subscribers, size, run, phase, status, core0, core1 = sys.argv[1:10]
report = json.load(open(path))
busy = None
if core0 and core1:
    (b0, t0), (b1, t1) = map(int, core0.split()), map(int, core1.split())
    busy = (b1 - b0) / max(1, t1 - t0)
report["bench"] = {"server": server, "subscribers": int(subscribers), "size": int(size), "run": int(run),
                   "phase": phase, "loadgen_exit": int(status), "server_core_busy": busy}
json.dump(report, open(path, "w"))
b = report["broadcast"]
print(f"  {phase:6} {server:28} {subscribers:>6} subs {size:>4} B  run {run}: "
      f"{b['deliveries_per_s']:>11,.0f} deliveries/s  p50 {report['latency_us']['p50']:>8,.0f} us  "
      f"p99 {report['latency_us']['p99']:>8,.0f} us  errors {report['errors']['total']}")
PY
}

for subscribers in $room_sizes; do
  for size in $sizes; do
    for run in $(seq "$runs"); do
      for server in $servers; do
        measure "closed-$server-$subscribers-$size-$run" "$server" "$subscribers" "$size" "$run" closed --pipeline "$pipeline"
      done
    done
    # The fixed rate: a fraction of the slowest server's closed-loop median (messages published per second).
    rate=$(python3 - "$out" "$subscribers" "$size" "$fraction" "$fixed_deliveries" $servers <<'PY'
import glob, json, statistics, sys
out, subscribers, size, fraction, fixed, servers = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), sys.argv[6:]
medians = []
for server in servers:
    runs = [json.load(open(p)) for p in glob.glob(f"{out}/closed-{server}-{subscribers}-{size}-*.json")]
    medians.append(statistics.median(r["broadcast"]["published_per_s"] for r in runs))
print(max(1, int(min(fixed / int(subscribers), min(medians) * fraction))))
PY
)
    echo "  rate for $subscribers subscribers, $size B: $rate msgs/s ($((rate * subscribers)) deliveries/s: $fixed_deliveries/s, or $fraction of the slowest closed-loop median if lower)"
    for run in $(seq "$runs"); do
      for server in $servers; do
        measure "rate-$server-$subscribers-$size-$run" "$server" "$subscribers" "$size" "$run" rate --rate "$rate"
      done
    done
  done
done

python3 - "$out" "$runs" "$(($(date +%s) - started))" $servers <<'PY'
import datetime, glob, json, os, platform, statistics, sys
out, runs, elapsed, order = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
reports = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/*-*-*-*-*.json"))]
cells = {}
for r in reports:
    b = r["bench"]
    cells.setdefault((b["subscribers"], b["size"], b["server"], b["phase"]), []).append(r)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
med = lambda xs: statistics.median(xs) if xs else None
print(f"\nFan-out, 1 room, {reports[0]['settings']['publishers']} publisher(s), binary; server on CPU 0, loadgen on CPU 1; "
      f"median of {runs} interleaved rounds ({datetime.date.today()}, {os.cpu_count()} x {cpu}; {elapsed} s)\n")
print("| subscribers | size | server | deliveries/s (closed loop) | vs wsloop | server core busy | loadgen busy "
      "| fixed rate, deliveries/s | p50 us | p99 us | errors | wsloop / best Rust peer |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
peers = ("fastwebsockets-broadcast", "tokio-tungstenite-broadcast")
summary, notes = [], []
for subscribers, size in sorted({(k[0], k[1]) for k in cells}):
    base = None
    peer_best = max((med([r["broadcast"]["deliveries_per_s"] for r in cells[(subscribers, size, p, "closed")]])
                     for p in peers if (subscribers, size, p, "closed") in cells), default=None)
    for server in [s for s in order if (subscribers, size, s, "closed") in cells]:
        closed = cells[(subscribers, size, server, "closed")]
        rate = cells.get((subscribers, size, server, "rate"), [])
        per_s = med([r["broadcast"]["deliveries_per_s"] for r in closed])
        base = per_s if server.startswith("wsloop") else base
        busy = med([r["bench"]["server_core_busy"] for r in closed if r["bench"]["server_core_busy"] is not None])
        lbusy = med([r["cpu"]["loop_busy"] for r in closed])
        errors = sum(r["errors"]["total"] for r in closed + rate)
        fixed = med([r["broadcast"]["deliveries_per_s"] for r in rate])
        p50 = med([r["latency_us"]["p50"] for r in rate])
        p99 = med([r["latency_us"]["p99"] for r in rate])
        row = {"subscribers": subscribers, "size": size, "server": server, "deliveries_per_s": per_s,
               "vs_wsloop": per_s / base if base else None, "server_core_busy": busy, "loadgen_busy": lbusy,
               "closed_runs": [r["broadcast"]["deliveries_per_s"] for r in closed],
               "fixed_rate_msgs_per_s": rate[0]["settings"]["rate_per_s"] if rate else None,
               "fixed_deliveries_per_s": fixed, "p50_us": p50, "p99_us": p99,
               "p99_runs": [r["latency_us"]["p99"] for r in rate], "errors": errors,
               "wsloop_vs_best_peer": per_s / peer_best if server.startswith("wsloop") and peer_best else None}
        summary.append(row)
        f = lambda x, spec: format(x, spec) if x is not None else "-"
        print(f"| {subscribers:,} | {size} B | {server} | {per_s:,.0f} | {f(row['vs_wsloop'], '.2f')}x | {f(busy, '.0%')} "
              f"| {lbusy:.0%} | {f(fixed, ',.0f')} | {f(p50, ',.0f')} | {f(p99, ',.0f')} | {errors} "
              f"| {f(row['wsloop_vs_best_peer'], '.2f') + 'x' if row['wsloop_vs_best_peer'] else ''} |")
        if lbusy >= 0.9:
            notes.append(f"{server}, {subscribers} subscribers, {size} B: loadgen was saturated ({lbusy:.0%}): "
                         "the closed-loop figure is loadgen's as much as the server's")
for note in notes:
    print(f"note: {note}")
json.dump({"date": str(datetime.date.today()), "machine": f"{os.cpu_count()} x {cpu}", "kernel": platform.release(),
           "elapsed_s": elapsed, "summary": summary, "runs": reports}, open(f"{out}/results.json", "w"), indent=1)
print(f"\nall runs: {out}/results.json")
PY
if [ ${#failed[@]} -gt 0 ]; then
  printf 'bench-broadcast.sh: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
