#!/usr/bin/env bash
# c100k: CONNECTIONS (100,000) WebSocket connections held HOLD (60) seconds
# on this one machine, then one POST /publish that must reach every one.
#
# No process here may open 20,000 descriptors (the hard limit, not
# raisable), and one source address reaches ~28k ports, so the load is split:
#   - P wsloop --mode broadcast processes (P = connections / PER_PROCESS,
#     at least 2), each with --max-connections under its descriptor limit,
#     all joined by --redis through one real redis-server (free port,
#     persistence off, stopped at the end);
#   - P loadgen --mode idle processes, each with its own --source-ip
#     (127.0.0.2, 127.0.0.3, ...), each over every wsloop URL (connection i
#     to URL i mod P), all subscribed to one room, /feed.
# Once every connection is open and has been held HOLD seconds, one
# `loadgen publish` (POST /publish/feed to the first process) reaches its
# local members directly and the other processes' through Redis; loadgen's
# idle mode counts each stamped delivery and times it from the stamp.
#
# Reports: connections held (peak) and dropped; time from the publish's
# stamp until the LAST subscriber had it (the max delivery latency over all
# loadgen processes); deliveries lost (connections open minus those
# reached: must be 0); wsloop memory per connection (RSS of all wsloop
# processes, held minus before, over the connections); redis-server's CPU
# over the whole run and over the publish. Exits 1 if anything was lost or
# dropped, or a process failed.
#
# Checks the limits first (scripts/limits.sh, for one process's share) and
# says what to raise where.
#
# Usage: scripts/c100k.sh
# Environment: CONNECTIONS (100000), HOLD (60 seconds), PER_PROCESS (17000
#   connections per wsloop and per loadgen process), SIZE (512 B published),
#   CONNECT_RATE (20000/s per loadgen process).
# Quick check: CONNECTIONS=2000 HOLD=2 scripts/c100k.sh (seconds).
# Output: the machine, a summary, target/c100k/summary.json.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/lib/servers.sh
source scripts/lib/redis.sh
connections=${CONNECTIONS:-100000}
hold=${HOLD:-60}
per_process=${PER_PROCESS:-17000}
size=${SIZE:-512}
connect_rate=${CONNECT_RATE:-20000}
out=target/c100k
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.log "$out"/*.err "$out"/*.txt

processes=$(((connections + per_process - 1) / per_process))
[ "$processes" -ge 2 ] || processes=2
share=$(((connections + processes - 1) / processes))
echo "c100k.sh: $connections connections: $processes wsloop processes (joined by Redis) and $processes loadgen processes, up to $share connections each"

# Limits: every process holds its share, loadgen from one source address each.
limits_ok=yes
scripts/limits.sh "$share" 1 || limits_ok=no
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt $((share + 200)) ]; then
  echo "c100k.sh: each process needs $((share + 200)) descriptors, the hard limit is $hard: lower PER_PROCESS" >&2
  limits_ok=no
fi
filemax=$(cat /proc/sys/fs/file-max)
if [ "$filemax" -lt $((2 * connections + 10000)) ]; then
  echo "c100k.sh: fs.file-max $filemax < $((2 * connections + 10000)) (both ends here): sysctl -w fs.file-max=$((4 * connections))" >&2
  limits_ok=no
fi
if [ -r /proc/sys/net/netfilter/nf_conntrack_max ] && [ "$(cat /proc/sys/net/netfilter/nf_conntrack_max)" -lt $((connections + 1000)) ]; then
  echo "c100k.sh: nf_conntrack_max $(cat /proc/sys/net/netfilter/nf_conntrack_max) < $connections if loopback is tracked: sysctl -w net.netfilter.nf_conntrack_max=$((2 * connections))" >&2
fi
read -r _ _ tcp_mem_max </proc/sys/net/ipv4/tcp_mem
echo "  net.ipv4.tcp_mem max $tcp_mem_max pages ($((tcp_mem_max * 4 / 1024)) MiB for all TCP buffers): idle sockets hold almost none"
[ "$limits_ok" = yes ] || { echo "c100k.sh: raise the limits above first" >&2; exit 1; }

build_servers wsloop
print_machine

pids=()
loadgens=()
cleanup() {
  local pid
  for pid in "${loadgens[@]}" "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${loadgens[@]}" "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  stop_redis
}
trap cleanup EXIT

start_redis "$out"
echo "c100k.sh: redis-server $(redis-server --version | awk '{print $3}') on port $REDIS_PORT (persistence off)"
token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
export WSLOOP_PUBLISH_TOKEN=$token
urls=()
servers=()
for i in $(seq "$processes"); do
  start_process "$out/wsloop-$i.log" target/release/wsloop --listen 127.0.0.1:0 --mode broadcast \
    --max-connections "$((share + 100))" --stats-interval 0 --redis "$REDIS_URL"
  pids+=("$SERVER_PID")
  servers+=("$SERVER_PID")
  urls+=("ws://$SERVER_ADDR/feed")
  [ "$i" -eq 1 ] && first=$SERVER_ADDR
done
SERVER_PID=""
unset WSLOOP_PUBLISH_TOKEN
sleep 0.5
rss_sum() { local pid total=0; for pid in "${servers[@]}"; do total=$((total + $(rss_kib "$pid"))); done; echo "$total"; }
fds_sum() { local pid total=0; for pid in "${servers[@]}"; do total=$((total + $(ls "/proc/$pid/fd" | wc -l))); done; echo "$total"; }
rss_before=$(rss_sum)
fds_before=$(fds_sum)
redis0=$(redis_cpu_ticks)
t_start=$(date +%s.%N)

echo "c100k.sh: opening $connections connections"
left=$connections
for i in $(seq "$processes"); do
  n=$share
  [ "$n" -le "$left" ] || n=$left
  left=$((left - n))
  # Not through a function: $! must be loadgen itself, for the SIGINT below.
  target/release/loadgen "${urls[@]}" --mode idle -c "$n" -t 1 --source-ip "127.0.0.$((i + 1))" \
    --connect-rate "$connect_rate" --connect-timeout 60s --duration 1h --warmup 0 --ping-interval 15s \
    --quiet --json "$out/loadgen-$i.json" >"$out/loadgen-$i.txt" 2>"$out/loadgen-$i.err" &
  loadgens+=("$!")
done
want=$((connections + fds_before))
opened=0
for _ in $(seq 1200); do # up to 120 s for the ramp
  opened=$(fds_sum)
  [ "$opened" -ge "$want" ] && break
  for pid in "${loadgens[@]}"; do
    kill -0 "$pid" 2>/dev/null || { cat "$out"/loadgen-*.err >&2; echo "c100k.sh: a loadgen process ended early" >&2; exit 1; }
  done
  sleep 0.1
done
ramp=$(python3 -c "print(f'{$(date +%s.%N) - $t_start:.1f}')")
[ "$opened" -ge "$want" ] || { echo "c100k.sh: only $((opened - fds_before)) of $connections connections open after ${ramp}s" >&2; exit 1; }
echo "c100k.sh: all $connections open after ${ramp}s; holding ${hold}s"
sleep "$(python3 -c "print(max(0.5, $hold / 2))")"
rss_held=$(rss_sum)
fds_held=$(fds_sum)
sleep "$(python3 -c "print(max(0.5, $hold / 2))")"
numsub=$(redis_numsub wsloop:/feed)
fds_after_hold=$(fds_sum)

echo "c100k.sh: one POST /publish/feed to the first process ($numsub processes subscribed in Redis)"
redis1=$(redis_cpu_ticks)
LOADGEN_PUBLISH_TOKEN=$token target/release/loadgen publish "http://$first" --room /feed --size "$size" \
  --json "$out/publish.json" >"$out/publish.txt" || { cat "$out/publish.txt" >&2; exit 1; }
cat "$out/publish.txt"
# Every delivery is counted as it lands; 2 s past the target is plenty, then stop them.
sleep 3
redis2=$(redis_cpu_ticks)
failed=()
for i in $(seq "$processes"); do
  pid=${loadgens[$((i - 1))]}
  kill -INT "$pid" 2>/dev/null || true
  status=0
  wait "$pid" || status=$?
  # Interrupted as asked: exit 3; anything else is a fault.
  [ "$status" -eq 3 ] || failed+=("loadgen $i (exit $status)")
done
loadgens=()
t_end=$(date +%s.%N)
redis3=$(redis_cpu_ticks)

status=0
python3 - "$out" "$processes" "$connections" "$hold" "$rss_before" "$rss_held" "$fds_before" "$fds_held" \
  "$fds_after_hold" "$numsub" "$((redis1 - redis0))" "$((redis2 - redis1))" "$((redis3 - redis0))" \
  "$(getconf CLK_TCK)" "$t_start" "$t_end" "$ramp" "${#failed[@]}" <<'PY' || status=$?
import datetime, json, os, platform, sys
out, processes, n, hold, rss0, rss1, fds0, fds1, fds2, numsub, r_hold, r_pub, r_all, hz = sys.argv[1], *map(int, sys.argv[2:15])
t0, t1, ramp, failures = float(sys.argv[15]), float(sys.argv[16]), float(sys.argv[17]), int(sys.argv[18])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
reports = [json.load(open(f"{out}/loadgen-{i}.json")) for i in range(1, processes + 1)]
publish = json.load(open(f"{out}/publish.json"))
established = sum(r["connections"]["established"] for r in reports)
peak = sum(r["connections"]["peak_open"] for r in reports)
dropped = sum(r["connections"]["dropped"] for r in reports)
errors = sum(r["errors"]["total"] for r in reports)
deliveries = sum(r["idle"]["deliveries"] for r in reports)
reached = sum(r["idle"]["connections_reached"] for r in reports)
lost = established - reached
last_ms = max(r["idle"]["latency_us"]["max"] for r in reports) / 1000
p50_ms = sorted(r["idle"]["latency_us"]["p50"] for r in reports)[len(reports) // 2] / 1000
per_conn = (rss1 - rss0) * 1024 / n
print(f"\nc100k: {n:,} connections, {processes} wsloop processes joined by Redis, {processes} loadgen processes "
      f"({datetime.date.today()}, {os.cpu_count()} x {cpu}, Linux {platform.release()})")
print(f"  held: peak {peak:,} open of {n:,} (established {established:,}), dropped {dropped}, errors {errors}; "
      f"ramp {ramp:.1f} s, held {hold} s; wsloop descriptors {fds0:,} -> {fds1:,} -> {fds2:,} after the hold")
print(f"  publish: answer {publish['status']} after {publish['answer_us']:,.0f} us, first process delivered "
      f"{publish['delivered']}, dropped {publish['dropped']}; Redis subscribers of the room: {numsub}")
print(f"  deliveries: {deliveries:,} of {established:,} connections reached, lost {lost}; "
      f"until the last received it: {last_ms:,.1f} ms (median process's p50 {p50_ms:,.1f} ms)")
print(f"  wsloop RSS (all processes) {rss0:,} KiB -> {rss1:,} KiB: {per_conn:,.0f} bytes per connection")
print(f"  redis-server CPU: {r_hold / hz:.2f} s over the ramp and hold, {r_pub / hz:.2f} s over the publish, "
      f"{r_all / hz:.2f} s in all ({r_all / hz / (t1 - t0) * 100:.2f}% of one core over {t1 - t0:.0f} s)")
json.dump({"date": str(datetime.date.today()), "machine": f"{os.cpu_count()} x {cpu}", "kernel": platform.release(),
           "connections": n, "processes": processes, "hold_s": hold, "ramp_s": ramp, "peak_open": peak,
           "established": established, "dropped": dropped, "errors": errors, "deliveries": deliveries,
           "reached": reached, "lost": lost, "last_delivery_ms": last_ms, "rss_kib_before": rss0,
           "rss_kib_held": rss1, "bytes_per_connection": per_conn, "redis_numsub": numsub,
           "redis_cpu_s": {"ramp_and_hold": r_hold / hz, "publish": r_pub / hz, "all": r_all / hz},
           "publish": publish, "loadgen": reports}, open(f"{out}/summary.json", "w"), indent=1)
bad = []
if lost: bad.append(f"{lost} deliveries lost")
if dropped: bad.append(f"{dropped} connections dropped")
if peak < n: bad.append(f"only {peak} of {n} held")
if failures: bad.append(f"{failures} loadgen processes failed")
if bad:
    sys.exit("c100k.sh: FAILED: " + ", ".join(bad))
print("c100k.sh: every connection held and reached")
PY
[ ${#failed[@]} -eq 0 ] || { printf 'c100k.sh: FAILED: %s\n' "${failed[@]}" >&2; exit 1; }
exit "$status"
