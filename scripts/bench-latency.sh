#!/usr/bin/env bash
# Open-loop latency, wsloop against the peers in one script: loadgen `rate`
# mode (latency from each message's intended send time, so no coordinated
# omission; the uncorrected figure is kept beside it), 2,000 connections,
# 512 B, at each RATE. Server on CPU 0, loadgen on CPU 1; median of RUNS runs.
#
# Above p99 these virtual machines stall on their own, so first the script
# measures the machine itself: a spin loop (scripts/stalls.py) on CPU 1 with
# nothing else running, counting gaps over 1 ms.
#
# Environment: RATES ("50k 100k"), RUNS (3), DURATION (10s), WARMUP (2s),
#   CONNECTIONS (2000), SERVERS ("wsloop minimal fastwebsockets"),
#   STALL_SECONDS (10: how long the machine's own stalls are measured).
# Output: the machine, a table, and target/bench-latency/results.json.
# Exits 1 if any loadgen run failed (after the table).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/lib/servers.sh
rates=${RATES:-50k 100k}
runs=${RUNS:-3}
duration=${DURATION:-10s}
warmup=${WARMUP:-2s}
stall_seconds=${STALL_SECONDS:-10}
connections=${CONNECTIONS:-2000}
servers=${SERVERS:-wsloop minimal fastwebsockets}
out=target/bench-latency
mkdir -p "$out"
rm -f "$out"/*.json
build_servers $servers
print_machine
trap stop_server EXIT

echo "bench-latency.sh: the machine's own stalls ($stall_seconds s spin on CPU 1, idle machine)"
taskset -c 1 python3 scripts/stalls.py "$stall_seconds" | tee "$out/stalls.json"

failed=()
for rate in $rates; do
  for run in $(seq "$runs"); do
    for server in $servers; do
      tag="$server-$rate-$run"
      start_server "$server" "$out/$tag.log" taskset -c 0
      status=0
      taskset -c 1 target/release/loadgen --url "ws://$SERVER_ADDR/" --mode rate -c "$connections" --rate "$rate" \
        --size 512 --duration "$duration" --warmup "$warmup" --quiet --json "$out/$tag.json" >/dev/null || status=$?
      [ "$status" -eq 0 ] || failed+=("$tag (loadgen exit $status)")
      stop_server
      printf '  %-16s %5s/s run %s: p50 %s us\n' "$server" "$rate" "$run" \
        "$(python3 -c "import json; print(round(json.load(open('$out/$tag.json'))['latency_us']['p50']))")"
    done
  done
done

python3 - "$out" <<'PY'
import glob, json, os, statistics, sys, datetime
out = sys.argv[1]
stalls = json.load(open(f"{out}/stalls.json"))
groups = {}
for path in sorted(glob.glob(f"{out}/*-*-*.json")):
    name = os.path.basename(path)[:-5]
    server, rate, run = name.rsplit("-", 2)
    groups.setdefault((rate, server), []).append(json.load(open(path)))
order = os.environ.get("SERVERS", "wsloop minimal fastwebsockets").split()
print(f"\nOpen loop, {next(iter(groups.values()))[0]['settings']['connections']} connections, 512 B; medians of "
      f"{len(next(iter(groups.values())))} runs ({datetime.date.today()}). Machine stalls over 1 ms with nothing running: "
      f"{stalls['per_second']}/s, longest {stalls['max_ms']} ms.\n")
print("| rate | server | achieved msgs/s | p50 us | p90 us | p99 us | p99.9 us | max us | uncorrected p99 us | errors |")
print("|---|---|---|---|---|---|---|---|---|---|")
summary = []
for rate in sorted({k[0] for k in groups}, key=lambda r: float(r.rstrip("k")) * (1000 if r.endswith("k") else 1)):
    for server in [s for s in order if (rate, server) in groups]:
        rs = groups[(rate, server)]
        med = lambda f: statistics.median(f(r) for r in rs)
        row = {"rate": rate, "server": server,
               "per_s": med(lambda r: r["messages"]["per_s"]),
               **{p: med(lambda r, p=p: r["latency_us"][p]) for p in ("p50", "p90", "p99", "p99_9", "max")},
               "uncorrected_p99": med(lambda r: r["latency_uncorrected_us"]["p99"]),
               "errors": sum(r["errors"]["total"] for r in rs)}
        summary.append(row)
        print(f"| {rate}/s | {server} | {row['per_s']:,.0f} | {row['p50']:.0f} | {row['p90']:.0f} | {row['p99']:.0f} | "
              f"{row['p99_9']:.0f} | {row['max']:.0f} | {row['uncorrected_p99']:.0f} | {row['errors']} |")
json.dump({"date": str(datetime.date.today()), "stalls": stalls, "summary": summary}, open(f"{out}/results.json", "w"), indent=1)
PY
if [ ${#failed[@]} -gt 0 ]; then
  printf 'bench-latency.sh: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
