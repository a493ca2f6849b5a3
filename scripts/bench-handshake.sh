#!/usr/bin/env bash
# Handshakes per second: loadgen `churn` mode (connect, one echo, close,
# repeat) against each server; server on CPU 0, loadgen on CPU 1; median of
# RUNS runs. loadgen closes with a close handshake and lets the server end the
# TCP connection, so TIME_WAIT stays on the server side and client ports last.
#
# Environment: RUNS (3), DURATION (5s), WARMUP (1s), CONNECTIONS (64 open at a time),
#   SERVERS ("wsloop minimal fastwebsockets tokio-tungstenite-4k").
# Output: the machine, a table, and target/bench-handshake/results.json.
# Exits 1 if any loadgen run failed (after the table).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/lib/servers.sh
runs=${RUNS:-3}
duration=${DURATION:-5s}
warmup=${WARMUP:-1s}
connections=${CONNECTIONS:-64}
servers=${SERVERS:-wsloop minimal fastwebsockets tokio-tungstenite-4k}
out=target/bench-handshake
mkdir -p "$out"
rm -f "$out"/*.json
build_servers $servers
print_machine
trap stop_server EXIT
hz=$(getconf CLK_TCK)
failed=()
for run in $(seq "$runs"); do
  for server in $servers; do
    tag="$server-$run"
    start_server "$server" "$out/$tag.log" taskset -c 0
    ticks0=$(cpu_ticks "$SERVER_PID")
    status=0
    taskset -c 1 target/release/loadgen --url "ws://$SERVER_ADDR/" --mode churn -c "$connections" --size 64 \
      --duration "$duration" --warmup "$warmup" --quiet --json "$out/$tag.json" >/dev/null || status=$?
    [ "$status" -eq 0 ] || failed+=("$tag (loadgen exit $status)")
    ticks1=$(cpu_ticks "$SERVER_PID")
    stop_server
    python3 - "$out/$tag.json" "$ticks0" "$ticks1" "$hz" <<'PY'
import json, sys
path, t0, t1, hz = sys.argv[1:]
r = json.load(open(path))
r["server_cpu_s"] = (int(t1) - int(t0)) / int(hz)
json.dump(r, open(path, "w"))
print(f"  {path.split('/')[-1][:-5]:28} {r['handshake']['per_s'] or 0:8.0f} handshakes/s")
PY
  done
done
python3 - "$out" <<'PY'
import glob, json, os, statistics, sys, datetime
out = sys.argv[1]
groups = {}
for path in sorted(glob.glob(f"{out}/*.json")):
    if path.endswith("results.json"):
        continue
    server = os.path.basename(path)[:-5].rsplit("-", 1)[0]
    groups.setdefault(server, []).append(json.load(open(path)))
order = os.environ.get("SERVERS", "wsloop minimal fastwebsockets tokio-tungstenite-4k").split()
print(f"\nChurn (connect, 64 B echo, close), {next(iter(groups.values()))[0]['settings']['connections']} at a time; "
      f"median of {len(next(iter(groups.values())))} runs ({datetime.date.today()})\n")
print("| server | handshakes/s | handshake p50 us | p99 us | failures |")
print("|---|---|---|---|---|")
summary = []
for server in [s for s in order if s in groups]:
    rs = sorted(groups[server], key=lambda r: r["handshake"]["per_s"] or 0)
    m = rs[len(rs) // 2]
    lat = m["handshake"]["latency_us"]
    failures = sum(r["connections"]["failed"] for r in rs)
    print(f"| {server} | {m['handshake']['per_s']:,.0f} | {lat['p50']:.0f} | {lat['p99']:.0f} | {failures} |")
    summary.append({"server": server, "handshakes_per_s": m["handshake"]["per_s"], "p50_us": lat["p50"],
                    "p99_us": lat["p99"], "failures": failures, "runs": [r["handshake"]["per_s"] for r in rs]})
json.dump({"date": str(datetime.date.today()), "summary": summary}, open(f"{out}/results.json", "w"), indent=1)
PY
if [ ${#failed[@]} -gt 0 ]; then
  printf 'bench-handshake.sh: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
