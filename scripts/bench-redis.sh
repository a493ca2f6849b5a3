#!/usr/bin/env bash
# What Redis adds to delivery latency: one wsloop process against two joined
# through a real redis-server, the same loadgen broadcast run on each.
#
#   in-process: one wsloop --mode broadcast; one room of SUBSCRIBERS, one
#               publisher at RATE messages/s (SUBSCRIBERS x RATE deliveries/s,
#               default 100 x 100 = 10,000/s);
#   via Redis:  two wsloop --mode broadcast --redis (one port each); the same
#               run over both URLs: connection i on process i mod 2, so the
#               publisher (connection 0) and half the room on the first, the
#               other half on the second, reached through Redis.
#
# loadgen reports latency per target (from each message's intended send
# time to its arrival), so the second run gives in-process and cross-process
# delivery side by side under the same load, and the first gives in-process
# delivery with no Redis anywhere. Rounds alternate the two setups (RUNS,
# default 3); medians reported, and the difference: via Redis (second
# process) minus in-process (the single process), at p50 and p99. Target
# (issue 11): under 1 ms at p50 and under 5 ms at p99.
#
# Not pinned: three servers, Redis and loadgen share the machine's cores, as
# they would on one host. Every run also checks each delivery (exactly once,
# in order, per publisher); a room member is held on each process before the
# runs (loadgen --mode idle -c 1), so that the room is subscribed in Redis
# before the first message (wsloop subscribes on the first local join,
# asynchronously).
#
# Usage: scripts/bench-redis.sh
# Environment: SUBSCRIBERS (100), RATE (100 messages/s), SIZE (512), DURATION (10s), WARMUP (1s), RUNS (3).
# Output: the machine, one table, target/bench-redis/results.json. About 80 s by default.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/lib/servers.sh
source scripts/lib/redis.sh
subscribers=${SUBSCRIBERS:-100}
rate=${RATE:-100}
size=${SIZE:-512}
duration=${DURATION:-10s}
warmup=${WARMUP:-1s}
runs=${RUNS:-3}
out=target/bench-redis
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.log "$out"/*.txt
build_servers wsloop
print_machine

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  stop_redis
}
trap cleanup EXIT

start_redis "$out"
echo "bench-redis.sh: redis-server $(redis-server --version | awk '{print $3}') on port $REDIS_PORT (persistence off)"
wsloop_cmd=(target/release/wsloop --listen 127.0.0.1:0 --mode broadcast --max-connections 20000 --stats-interval 0)
start_process "$out/single.log" "${wsloop_cmd[@]}"
pids+=("$SERVER_PID"); single=$SERVER_ADDR
start_process "$out/a.log" "${wsloop_cmd[@]}" --redis "$REDIS_URL"
pids+=("$SERVER_PID"); a=$SERVER_ADDR
start_process "$out/b.log" "${wsloop_cmd[@]}" --redis "$REDIS_URL"
pids+=("$SERVER_PID"); b=$SERVER_ADDR
SERVER_PID=""

# A member held in the room on every process for the whole script.
for addr in "$single" "$a" "$b"; do
  target/release/loadgen "ws://$addr/feed" --mode idle -c 1 --duration 1h --warmup 0 --quiet >/dev/null 2>&1 &
  pids+=("$!")
done
for _ in $(seq 200); do
  [ "$(redis_numsub wsloop:/feed)" -ge 2 ] && break
  sleep 0.05
done
[ "$(redis_numsub wsloop:/feed)" -ge 2 ] || { echo "bench-redis.sh: the room was not subscribed on both processes" >&2; exit 1; }

failed=()
lg() { # TAG URL...: one broadcast run
  local tag=$1 status=0
  shift
  target/release/loadgen "$@" --mode broadcast -c "$subscribers" --rate "$rate" --size "$size" \
    --duration "$duration" --warmup "$warmup" --quiet --json "$out/$tag.json" >"$out/$tag.txt" || status=$?
  [ "$status" -eq 0 ] || { failed+=("$tag (loadgen exit $status)"); cat "$out/$tag.txt" >&2; }
  python3 - "$out/$tag.json" "$tag" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
parts = "  ".join(f"target {i} p50 {t['latency_us']['p50']:,.0f} us p99 {t['latency_us']['p99']:,.0f} us"
                  for i, t in enumerate(r["targets"]))
print(f"  {sys.argv[2]:14} {r['broadcast']['deliveries_per_s']:>9,.0f} deliveries/s  {parts}  errors {r['errors']['total']}")
PY
}

redis_ticks0=$(redis_cpu_ticks)
for run in $(seq "$runs"); do
  lg "in-process-$run" "ws://$single/feed"
  lg "via-redis-$run" "ws://$a/feed" "ws://$b/feed"
done
redis_ticks1=$(redis_cpu_ticks)

python3 - "$out" "$runs" "$subscribers" "$rate" "$size" "$((redis_ticks1 - redis_ticks0))" "$(getconf CLK_TCK)" <<'PY'
import datetime, json, os, platform, statistics, sys
out, runs, subscribers, rate, size, redis_ticks, hz = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:8])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
one = [json.load(open(f"{out}/in-process-{i}.json")) for i in range(1, runs + 1)]
two = [json.load(open(f"{out}/via-redis-{i}.json")) for i in range(1, runs + 1)]
med = lambda xs: statistics.median(xs)
rows = {
    "one process (no Redis)": [r["targets"][0]["latency_us"] for r in one],
    "two processes: publisher's process (in-process)": [r["targets"][0]["latency_us"] for r in two],
    "two processes: the other process (via Redis)": [r["targets"][1]["latency_us"] for r in two],
}
print(f"\nDelivery latency, one room of {subscribers}, 1 publisher at {rate} msgs/s ({subscribers * rate:,} deliveries/s), "
      f"{size} B; medians of {runs} alternating rounds ({datetime.date.today()}, {os.cpu_count()} x {cpu})\n")
print("| setup | deliveries measured | p50 us | p90 us | p99 us | p99.9 us | max us |")
print("|---|---|---|---|---|---|---|")
summary = {}
for name, lats in rows.items():
    m = {p: med([l[p] for l in lats]) for p in ("p50", "p90", "p99", "p99_9", "max")}
    m["count"] = sum(l["count"] for l in lats)
    summary[name] = m
    print(f"| {name} | {m['count']:,} | {m['p50']:,.0f} | {m['p90']:,.0f} | {m['p99']:,.0f} | {m['p99_9']:,.0f} | {m['max']:,.0f} |")
base, local, remote = rows.values()
diff = {p: med([r[p] - b[p] for r, b in zip(remote, base)]) for p in ("p50", "p99")}
diff_same = {p: med([r[p] - l[p] for r, l in zip(remote, local)]) for p in ("p50", "p99")}
errors = sum(r["errors"]["total"] for r in one + two)
window = sum(r["window_s"] for r in one + two)
print(f"\nRedis adds (via Redis minus one process, median of the per-round differences): p50 {diff['p50']:+,.0f} us, "
      f"p99 {diff['p99']:+,.0f} us; within the two-process run (other process minus the publisher's): "
      f"p50 {diff_same['p50']:+,.0f} us, p99 {diff_same['p99']:+,.0f} us")
print(f"target: under 1,000 us at p50 and under 5,000 us at p99: "
      f"{'met' if diff['p50'] < 1000 and diff['p99'] < 5000 else 'NOT met'}")
print(f"redis-server CPU over all runs: {redis_ticks / hz:.2f} s ({redis_ticks / hz / window * 100:.1f}% of one core "
      f"over the measured windows); delivery errors: {errors}")
json.dump({"date": str(datetime.date.today()), "machine": f"{os.cpu_count()} x {cpu}", "kernel": platform.release(),
           "subscribers": subscribers, "rate": rate, "size": size, "summary": summary,
           "redis_adds_us": diff, "redis_adds_within_run_us": diff_same, "redis_cpu_s": redis_ticks / hz,
           "errors": errors, "runs": {"in_process": one, "via_redis": two}}, open(f"{out}/results.json", "w"), indent=1)
PY
if [ ${#failed[@]} -gt 0 ]; then
  printf 'bench-redis.sh: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
