#!/usr/bin/env bash
# Closed-loop echo throughput, wsloop against the comparison peers, one run
# each after the other in this script so the ratios compare like with like.
# Each server is pinned to CPU 0 and loadgen to CPU 1; 500 connections, one
# message in flight each, binary payloads of 512 B, 1 KiB, 8 KiB and 16 KiB;
# the median of RUNS runs is reported.
#
# Prints one table (msgs/s; the ratio to wsloop, of the median rates and,
# per round, the median and range of the ratios within each round; how busy
# each core was, CPU time per message on each side, p50/p99 round trip) and
# writes every run to target/bench-echo/results.json. "Core busy" comes from /proc/stat and
# includes softirq time (much of loopback TCP's work), which per-process
# accounting misses; it is the figure that says whether a side was saturated.
# Exits 1 (after the table) if any loadgen run failed.
#
# Environment: RUNS (3), DURATION (5s), WARMUP (1s), CONNECTIONS (500),
#   SIZES ("512 1024 8192 16384"),
#   SERVERS ("wsloop minimal fastwebsockets tokio-tungstenite-4k tokio-tungstenite").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/lib/servers.sh

runs=${RUNS:-3}
duration=${DURATION:-5s}
warmup=${WARMUP:-1s}
connections=${CONNECTIONS:-500}
sizes=${SIZES:-512 1024 8192 16384}
servers=${SERVERS:-wsloop minimal fastwebsockets tokio-tungstenite-4k tokio-tungstenite}
out=target/bench-echo
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.log

[ "$(nproc)" -ge 2 ] || { echo "bench-echo.sh: needs 2 CPUs (server and loadgen each on its own)" >&2; exit 1; }
echo "bench-echo.sh: building (release)"
build_servers $servers
print_machine
trap stop_server EXIT
seconds() { python3 -c "import sys; from re import match; m = match(r'([0-9.]+)(ms|s)?$', sys.argv[1]); print(float(m[1]) / (1000 if m[2] == 'ms' else 1))" "$1"; }
window=$(seconds "$duration")
warm=$(seconds "$warmup")
hz=$(getconf CLK_TCK)

for size in $sizes; do
  for run in $(seq "$runs"); do
    # Interleave the servers within each round, so that slow drifts of this
    # shared machine hit all of them alike.
    for server in $servers; do
      tag="$server-$size-$run"
      start_server "$server" "$out/$tag.log" taskset -c 0
      taskset -c 1 target/release/loadgen --url "ws://$SERVER_ADDR/" --mode echo --connections "$connections" \
        --size "$size" --duration "$duration" --warmup "$warmup" --quiet --json "$out/$tag.json" >/dev/null &
      loadgen=$!
      # The server's CPU over the middle of the measurement window.
      sleep "$(python3 -c "print(0.6 + $warm + 0.2)")"
      ticks0=$(cpu_ticks "$SERVER_PID"); core0_0=$(core_ticks 0); core1_0=$(core_ticks 1); t0=$(date +%s.%N)
      sleep "$(python3 -c "print(max(0.5, $window - 0.6))")"
      ticks1=$(cpu_ticks "$SERVER_PID"); core0_1=$(core_ticks 0); core1_1=$(core_ticks 1); t1=$(date +%s.%N)
      status=0
      wait "$loadgen" || status=$?
      stop_server
      python3 - "$out/$tag.json" "$server" "$size" "$run" "$ticks0" "$ticks1" "$t0" "$t1" "$hz" "$status" \
        "$core0_0" "$core0_1" "$core1_0" "$core1_1" <<'PY'
import json, sys
path, server, size, run, ticks0, ticks1, t0, t1, hz, status = sys.argv[1:11]
core = [tuple(map(int, a.split())) for a in sys.argv[11:15]]
busy = lambda a, b: (b[0] - a[0]) / max(1, b[1] - a[1])
report = json.load(open(path))
report["bench"] = {
    "server": server, "size": int(size), "run": int(run), "loadgen_exit": int(status),
    "server_cpu": (int(ticks1) - int(ticks0)) / int(hz) / (float(t1) - float(t0)),
    "server_core_busy": busy(core[0], core[1]), "loadgen_core_busy": busy(core[2], core[3]),
}
json.dump(report, open(path, "w"))
PY
      printf '  %-22s %6s B  run %s: %8.0f msgs/s\n' "$server" "$size" "$run" \
        "$(python3 -c "import json; print(json.load(open('$out/$tag.json'))['messages']['per_s'])")"
    done
  done
done

python3 - "$out" "$runs" <<'PY'
import glob, json, os, platform, statistics, sys, datetime
out, runs = sys.argv[1], int(sys.argv[2])
reports = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/*-*-*.json"))]
rows, summary = {}, []
for r in reports:
    b = r["bench"]
    rows.setdefault((b["size"], b["server"]), []).append(r)
order = os.environ.get("SERVERS", "wsloop minimal fastwebsockets tokio-tungstenite-4k tokio-tungstenite").split()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"\nEcho, {reports[0]['settings']['connections']} connections, 1 in flight each, binary; server on CPU 0, "
      f"loadgen on CPU 1; median of {runs} runs ({datetime.date.today()}, {os.cpu_count()} x {cpu})\n")
print("| payload | server | msgs/s | vs wsloop | per round vs wsloop | server core busy | loadgen core busy | server us/msg | p50 us | p99 us | errors |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
def per_round(size, server):
    """The median and range of this server's rate over wsloop's in the same
    round: the servers take turns within a round, so a ratio taken within
    one cancels the machine's slow drifts, which the median rates do not."""
    mine = {r["bench"]["run"]: r["messages"]["per_s"] for r in rows.get((size, server), [])}
    ours = {r["bench"]["run"]: r["messages"]["per_s"] for r in rows.get((size, "wsloop"), [])}
    ratios = sorted(mine[k] / ours[k] for k in mine if ours.get(k))
    return (statistics.median(ratios), ratios[0], ratios[-1]) if ratios else None
warnings = []
for size in sorted({k[0] for k in rows}):
    base = None
    for server in [s for s in order if (size, s) in rows]:
        runs_ = sorted(rows[(size, server)], key=lambda r: r["messages"]["per_s"])
        median = runs_[len(runs_) // 2]
        rate = median["messages"]["per_s"]
        base = rate if server == "wsloop" else base
        ratio = f"{rate / base:.2f}x" if base else "-"
        paired = per_round(size, server)
        paired_text = f"{paired[0]:.3f}x ({paired[1]:.2f} to {paired[2]:.2f})" if paired else "-"
        errors = sum(r["errors"]["total"] for r in runs_)
        b = median["bench"]
        score, lcore = b["server_core_busy"], b["loadgen_core_busy"]
        # CPU 0 time per message: the server and the kernel work it caused (softirq included).
        us_per_msg = score / rate * 1e6
        lat = median["latency_us"]
        print(f"| {size} B | {server} | {rate:,.0f} | {ratio} | {paired_text} | {score:.0%} | {lcore:.0%} | {us_per_msg:.2f} | "
              f"{lat['p50']:.0f} | {lat['p99']:.0f} | {errors} |")
        summary.append({"size": size, "server": server, "msgs_per_s": rate, "vs_wsloop": rate / base if base else None,
                        "per_round_vs_wsloop": paired and {"median": paired[0], "min": paired[1], "max": paired[2]},
                        "server_core_busy": score, "loadgen_core_busy": lcore, "server_process_cpu": b["server_cpu"],
                        "server_us_per_msg": us_per_msg, "loadgen_us_per_msg": median["cpu"]["per_message_us"],
                        "p50_us": lat["p50"], "p99_us": lat["p99"],
                        "errors": errors, "runs": [r["messages"]["per_s"] for r in runs_]})
        if score < 0.95:
            warnings.append(f"{server} at {size} B: its core was {score:.0%} busy, loadgen's {lcore:.0%}: "
                            + ("the load generator is the bottleneck" if lcore >= 0.95 else "neither side saturated"))
        if errors:
            warnings.append(f"{server} at {size} B: {errors} integrity errors")
for w in warnings:
    print(f"note: {w}")
json.dump({"date": str(datetime.date.today()), "machine": f"{os.cpu_count()} x {cpu}", "kernel": platform.release(),
           "summary": summary, "runs": reports}, open(f"{out}/results.json", "w"), indent=1)
print(f"\nall runs: {out}/results.json")
failed = [f"{r['bench']['server']} {r['bench']['size']} B run {r['bench']['run']} (loadgen exit {r['bench']['loadgen_exit']})"
          for r in reports if r["bench"]["loadgen_exit"] != 0]
if failed:
    sys.exit("bench-echo.sh: FAILED: " + ", ".join(failed))
PY
