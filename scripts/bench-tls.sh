#!/usr/bin/env bash
# What wss:// costs, in one run: wsloop over TLS against wsloop plain and
# against the tokio-rustls peer (tokio-tungstenite over tokio-rustls, both
# on rustls 0.23 with aws-lc-rs), with the ECDSA P-256 test certificate of
# test_tls_files (scripts/lib/servers.sh). Three parts:
#
#   echo       closed-loop echo, CONNECTIONS (500) connections, one binary
#              message in flight each, payloads SIZES ("512 16384"): msgs/s,
#              the ratios TLS/plain and wsloop-TLS/tokio-rustls.
#   handshake  loadgen churn mode (connect, TLS, upgrade, one 64 B echo,
#              close), HS_CONNECTIONS (64) at a time, full handshakes
#              (--tls-resume none) and resumed ones (TLS 1.3 tickets):
#              handshakes/s, and per CPU-second of the server process
#              (rate divided by its CPU use), what the server alone can do
#              when the client or a neighbour on CPU 0 is the limit.
#              loadgen does not check the certificate here (--insecure; the
#              server still signs every full handshake): checking it costs
#              the one client core two ECDSA verifications per handshake,
#              each dearer than the server's one signature, so the client
#              saturated first and the ratio measured it. HS_VERIFY=1 checks
#              (--ca).
#              Even so, loadgen does the same key exchange as the server on
#              its one core, so neither side is kept busy and the figure
#              measures how the two take turns as much as the server. A
#              third run ("capped") therefore caps the server at HS_CAP
#              percent (50) of one core with a cgroup (needs root; skipped
#              with a note without it, and with HS_CAP=0), so that the
#              server, not the client, is the limit: full handshakes/s then
#              compare the servers' costs.
#   memory     IDLE (10000) idle connections opened and held HOLD (5s): server
#              RSS then minus RSS before, divided by IDLE.
#
# Server pinned to CPU 0, loadgen to CPU 1. The echo and handshake parts run
# ROUNDS rounds, the servers interleaved within each round (this machine
# drifts), and report medians. Prints the machine (lscpu's Model name) and
# tables, and writes every run to target/bench-tls/results.json.
# Exits 1 (after the tables) if a loadgen run failed.
#
# Environment: ROUNDS (3), DURATION (5s), WARMUP (1s), CONNECTIONS (500),
#   SIZES ("512 16384"), HS_CONNECTIONS (64), HS_VERIFY (0), HS_CAP (50), IDLE (10000), HOLD (5s),
#   PARTS ("echo handshake memory"),
#   SERVERS ("wsloop-tls wsloop tokio-rustls tokio-rustls-4k": each part runs
#   those of its own that are listed: echo wsloop-tls wsloop tokio-rustls;
#   handshake wsloop-tls tokio-rustls; memory all four).
# Quick: ROUNDS=1 DURATION=1s WARMUP=0 CONNECTIONS=20 SIZES=512 HS_CONNECTIONS=8 IDLE=200 HOLD=1s
#   SERVERS="wsloop-tls wsloop" (no peer, so no peers/ build).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/lib/servers.sh

rounds=${ROUNDS:-3}
duration=${DURATION:-5s}
warmup=${WARMUP:-1s}
connections=${CONNECTIONS:-500}
sizes=${SIZES:-512 16384}
hs_connections=${HS_CONNECTIONS:-64}
hs_verify=${HS_VERIFY:-0}
hs_cap=${HS_CAP:-50}
idle=${IDLE:-10000}
hold=${HOLD:-5s}
parts=${PARTS:-echo handshake memory}
servers=${SERVERS:-wsloop-tls wsloop tokio-rustls tokio-rustls-4k}
out=target/bench-tls
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.log

[ "$(nproc)" -ge 2 ] || { echo "bench-tls.sh: needs 2 CPUs (server and loadgen each on its own)" >&2; exit 1; }
# pick LIST: the servers of LIST that SERVERS names, in LIST's order.
pick() {
  local s t chosen=()
  for s in $1; do
    for t in $servers; do [ "$s" = "$t" ] && chosen+=("$s"); done
  done
  echo "${chosen[*]:-}"
}
echo_servers=$(pick "wsloop-tls wsloop tokio-rustls")
hs_servers=$(pick "wsloop-tls tokio-rustls")
mem_servers=$(pick "wsloop-tls wsloop tokio-rustls tokio-rustls-4k")
for part in $parts; do
  case "$part" in echo | handshake | memory) ;; *) echo "bench-tls.sh: unknown part: $part" >&2; exit 1 ;; esac
done
case " $parts " in *" memory "*) scripts/limits.sh "$idle" || { echo "bench-tls.sh: raise the limits above first" >&2; exit 1; } ;; esac
echo "bench-tls.sh: building (release)"
# shellcheck disable=SC2086 # lists of names
build_servers $servers
test_tls_files
print_machine
trap stop_server EXIT
seconds() { python3 -c "import sys; from re import match; m = match(r'([0-9.]+)(ms|s)?$', sys.argv[1]); print(float(m[1]) / (1000 if m[2] == 'ms' else 1))" "$1"; }
window=$(seconds "$duration")
warm=$(seconds "$warmup")
hz=$(getconf CLK_TCK)
failed=()

# measure SERVER TAG LOADGEN-ARGS...: starts SERVER on CPU 0, runs loadgen
# on CPU 1 against it with the args, samples both cores over the middle of
# the measurement window, and adds that to loadgen's JSON report.
measure() {
  local server=$1 tag=$2 status=0 loadgen ticks0 ticks1 c0a c0b c1a c1b t0 t1
  shift 2
  start_server "$server" "$out/$tag.log" taskset -c 0
  if [ "${CAP:-0}" -gt 0 ]; then
    cap_cpu "$SERVER_PID" "$CAP" || { stop_server; return 1; }
  fi
  local target
  target=$(server_url "$server")
  # The handshake part (NO_VERIFY=1) measures the servers, not the client's
  # certificate checks: see the header.
  [ "${NO_VERIFY:-0}" = 1 ] && target="${target%% --ca *} --insecure"
  # shellcheck disable=SC2086 # the URL and its flags
  taskset -c 1 target/release/loadgen $target "$@" --duration "$duration" --warmup "$warmup" \
    --quiet --json "$out/$tag.json" >/dev/null 2>"$out/$tag.err" &
  loadgen=$!
  sleep "$(python3 -c "print(0.6 + $warm + 0.2)")"
  ticks0=$(cpu_ticks "$SERVER_PID"); c0a=$(core_ticks 0); c1a=$(core_ticks 1); t0=$(date +%s.%N)
  sleep "$(python3 -c "print(max(0.5, $window - 0.6))")"
  ticks1=$(cpu_ticks "$SERVER_PID"); c0b=$(core_ticks 0); c1b=$(core_ticks 1); t1=$(date +%s.%N)
  wait "$loadgen" || status=$?
  stop_server
  uncap_cpu
  [ "$status" -eq 0 ] || { failed+=("$tag (loadgen exit $status)"); cat "$out/$tag.err" >&2; }
  [ -s "$out/$tag.json" ] || echo '{}' >"$out/$tag.json"
  python3 - "$out/$tag.json" "$server" "$tag" "$status" "$ticks0" "$ticks1" "$t0" "$t1" "$hz" \
    "$c0a" "$c0b" "$c1a" "$c1b" "${CAP:-0}" <<'PY'
import json, sys
path, server, tag, status, ticks0, ticks1, t0, t1, hz = sys.argv[1:10]
core = [tuple(map(int, a.split())) for a in sys.argv[10:14]]
cap = sys.argv[14]
busy = lambda a, b: (b[0] - a[0]) / max(1, b[1] - a[1])
r = json.load(open(path))
r["bench"] = {"server": server, "tag": tag, "loadgen_exit": int(status), "cap": int(cap),
              "server_cpu": (int(ticks1) - int(ticks0)) / int(hz) / (float(t1) - float(t0)),
              "server_core_busy": busy(core[0], core[1]), "loadgen_core_busy": busy(core[2], core[3])}
json.dump(r, open(path, "w"))
m, h = r.get("messages", {}), r.get("handshake", {})
rate = m.get("per_s") if "churn" not in tag else h.get("per_s")
unit = "handshakes/s" if "churn" in tag else "msgs/s"
print(f"  {tag:36} {rate or 0:10.0f} {unit}, server core {r['bench']['server_core_busy']:.0%}")
PY
}

for part in $parts; do
  case "$part" in
    echo)
      [ -n "$echo_servers" ] || continue
      echo "bench-tls.sh: echo, $connections connections, sizes $sizes, $rounds rounds"
      for size in $sizes; do
        for round in $(seq "$rounds"); do
          for server in $echo_servers; do
            measure "$server" "echo-$server-$size-$round" --mode echo -c "$connections" --size "$size"
          done
        done
      done
      ;;
    handshake)
      [ -n "$hs_servers" ] || continue
      echo "bench-tls.sh: handshakes (churn), $hs_connections at a time, $rounds rounds"
      for resume in none tickets; do
        for round in $(seq "$rounds"); do
          for server in $hs_servers; do
            NO_VERIFY=$((1 - hs_verify)) measure "$server" "churn-$resume-$server-$round" --mode churn \
              -c "$hs_connections" --size 64 --tls-resume "$resume"
          done
        done
      done
      # Full handshakes again, each server capped at HS_CAP% of CPU 0 (see the header).
      if [ "$hs_cap" -gt 0 ]; then
        echo "bench-tls.sh: handshakes (churn), servers capped at $hs_cap% of a core"
        for round in $(seq "$rounds"); do
          for server in $hs_servers; do
            CAP=$hs_cap NO_VERIFY=$((1 - hs_verify)) measure "$server" "churn-capped-$server-$round" --mode churn \
              -c "$hs_connections" --size 64 --tls-resume none || {
              echo "bench-tls.sh: no cgroup to cap the server with: capped run skipped" >&2
              break 2
            }
          done
        done
      fi
      ;;
    memory)
      for server in $mem_servers; do
        echo "bench-tls.sh: memory, $idle idle connections on $server"
        tag="memory-$server"
        start_server "$server" "$out/$tag.log" taskset -c 0
        # shellcheck disable=SC2046 # the URL and its flags
        lg() { taskset -c 1 target/release/loadgen $(server_url "$server") --quiet "$@"; }
        # One small exchange first, so that the baseline has the loop's own buffers.
        lg --mode echo -c 1 --messages 100 --warmup 0 --json "$out/$tag-warmup.json" >/dev/null
        sleep 0.5
        rss_before=$(rss_kib "$SERVER_PID")
        status=0
        # Held until sampled, then ended with SIGINT (loadgen exits 3 with its report).
        # Not through lg(): $! must be loadgen itself (taskset execs it).
        # shellcheck disable=SC2046 # the URL and its flags
        taskset -c 1 target/release/loadgen $(server_url "$server") --quiet --mode idle -c "$idle" --duration 600s \
          --warmup 0 --json "$out/$tag.json" >/dev/null 2>"$out/$tag.err" &
        loadgen=$!
        for _ in $(seq 600); do # until they are all open (or loadgen gave up), then HOLD
          [ "$(ls "/proc/$SERVER_PID/fd" | wc -l)" -ge "$idle" ] && break
          kill -0 "$loadgen" 2>/dev/null || break
          sleep 0.1
        done
        sleep "$(seconds "$hold")"
        rss_held=$(rss_kib "$SERVER_PID")
        fds_held=$(ls "/proc/$SERVER_PID/fd" | wc -l)
        kill -INT "$loadgen" 2>/dev/null || true
        wait "$loadgen" || status=$?
        [ "$status" -ne 3 ] || status=0
        stop_server
        [ "$status" -eq 0 ] || { failed+=("$tag (loadgen exit $status)"); cat "$out/$tag.err" >&2; }
        [ -s "$out/$tag.json" ] || echo '{}' >"$out/$tag.json"
        python3 - "$out/$tag.json" "$server" "$tag" "$status" "$rss_before" "$rss_held" "$fds_held" "$idle" <<'PY'
import json, sys
path, server, tag, status, rss0, rss1, fds, n = sys.argv[1:]
r = json.load(open(path))
per = (int(rss1) - int(rss0)) * 1024 / int(n)
r["bench"] = {"server": server, "tag": tag, "loadgen_exit": int(status), "rss_kib_before": int(rss0),
              "rss_kib_held": int(rss1), "fds_held": int(fds), "connections": int(n), "bytes_per_connection": per}
json.dump(r, open(path, "w"))
print(f"  {tag:36} RSS {rss0} KiB -> {rss1} KiB with {fds} fds: {per:,.0f} bytes per idle connection")
PY
      done
      ;;
  esac
done

python3 - "$out" <<'PY'
import glob, json, os, platform, statistics, sys, datetime
out = sys.argv[1]
reports = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/*.json")) if "bench" in json.load(open(p))]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
today = datetime.date.today()
summary, checks = {"echo": [], "handshake": [], "memory": []}, []
median = lambda rs, key: sorted(rs, key=key)[len(rs) // 2]
names = {"wsloop-tls": "wsloop wss://", "wsloop": "wsloop ws://", "tokio-rustls": "tokio-rustls wss://",
         "tokio-rustls-4k": "tokio-rustls wss://, 4 KiB read buffer"}
def target(what, value, goal):
    met = value is not None and value >= goal
    checks.append(f"| {what} | {'-' if value is None else f'{value:.2f}x'} | >= {goal}x | {'yes' if met else 'no'} |")

echo = {}
for r in reports:
    t = r["bench"]["tag"]
    if t.startswith("echo-"):
        size = r["settings"]["size_bytes"] if "size_bytes" in r.get("settings", {}) else int(t.rsplit("-", 2)[1])
        echo.setdefault((size, r["bench"]["server"]), []).append(r)
if echo:
    n = next(iter(echo.values()))
    print(f"\nEcho over TLS: {n[0]['settings']['connections']} connections, 1 in flight each, binary; server on CPU 0, "
          f"loadgen on CPU 1; median of {len(n)} rounds ({today}, {os.cpu_count()} x {cpu})\n")
    print("| payload | server | msgs/s | server core busy | loadgen core busy | server us/msg | p50 us | p99 us | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in sorted({k[0] for k in echo}):
        rates = {}
        for server in ["wsloop-tls", "wsloop", "tokio-rustls"]:
            rs = echo.get((size, server))
            if not rs:
                continue
            m = median(rs, lambda r: r.get("messages", {}).get("per_s") or 0)
            rate = m.get("messages", {}).get("per_s") or 0
            rates[server] = rate
            b, lat = m["bench"], m.get("latency_us", {})
            errors = sum(r.get("errors", {}).get("total", 0) for r in rs)
            print(f"| {size} B | {names[server]} | {rate:,.0f} | {b['server_core_busy']:.0%} | {b['loadgen_core_busy']:.0%} | "
                  f"{b['server_core_busy'] / rate * 1e6 if rate else 0:.2f} | {lat.get('p50', 0):.0f} | {lat.get('p99', 0):.0f} | {errors} |")
            summary["echo"].append({"size": size, "server": server, "msgs_per_s": rate, "server_core_busy": b["server_core_busy"],
                                    "loadgen_core_busy": b["loadgen_core_busy"], "p50_us": lat.get("p50"), "p99_us": lat.get("p99"),
                                    "errors": errors, "rounds": [r.get("messages", {}).get("per_s") for r in rs]})
        tls, plain, peer = rates.get("wsloop-tls"), rates.get("wsloop"), rates.get("tokio-rustls")
        if tls and plain:
            target(f"echo {size} B: wsloop TLS / wsloop plain", tls / plain, 0.6)
        if tls and peer:
            target(f"echo {size} B: wsloop TLS / tokio-rustls", tls / peer, 1.3)

hs = {}
for r in reports:
    t = r["bench"]["tag"]
    if t.startswith("churn-"):
        hs.setdefault((t.split("-")[1], r["bench"]["server"]), []).append(r)
if hs:
    n = next(iter(hs.values()))
    print(f"\nTLS handshakes (churn: connect, TLS, upgrade, one 64 B echo, close), "
          f"{n[0]['settings']['connections']} at a time, ECDSA P-256; median of {len(n)} rounds ({today})\n")
    print("| handshake | server | handshakes/s | server core busy | loadgen core busy | server process CPU | per server CPU-second | "
          "server us/handshake | p50 us | tls p50 us | resumed | failures |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for resume in ["none", "tickets", "capped"]:
        rates, caps = {}, {}
        for server in ["wsloop-tls", "tokio-rustls"]:
            rs = hs.get((resume, server))
            if not rs:
                continue
            m = median(rs, lambda r: r.get("handshake", {}).get("per_s") or 0)
            h, b = m.get("handshake", {}), m["bench"]
            rate = h.get("per_s") or 0
            # The server process's own CPU: CPU 0's busy time would count
            # whatever else this shared machine runs there.
            cap = rate / b["server_cpu"] if b["server_cpu"] else 0
            rates[server], caps[server] = rate, cap
            tls = m.get("tls") or {}
            failures = sum(r.get("connections", {}).get("failed", 0) for r in rs)
            label = {"none": "full", "tickets": "resumed (tickets)", "capped": f"full, server capped at {b.get('cap', '?')}% of a core"}[resume]
            print(f"| {label} | {names[server]} | {rate:,.0f} | {b['server_core_busy']:.0%} | {b['loadgen_core_busy']:.0%} | "
                  f"{b['server_cpu']:.0%} | {cap:,.0f} | {1e6 / cap if cap else 0:.0f} | {h.get('latency_us', {}).get('p50', 0):.0f} | "
                  f"{h.get('tls_latency_us', {}).get('p50', 0):.0f} | {tls.get('resumed', 0)} of {tls.get('handshakes', 0)} | {failures} |")
            summary["handshake"].append({"resume": resume, "server": server, "handshakes_per_s": rate,
                                         "per_server_cpu_second": cap, "server_process_cpu": b["server_cpu"], "server_core_busy": b["server_core_busy"],
                                         "loadgen_core_busy": b["loadgen_core_busy"], "resumed": tls.get("resumed"),
                                         "handshakes": tls.get("handshakes"), "failures": failures,
                                         "rounds": [r.get("handshake", {}).get("per_s") for r in rs]})
        if rates.get("wsloop-tls") and rates.get("tokio-rustls"):
            if resume == "capped":
                target("full handshakes/s, servers capped alike: wsloop / tokio-rustls",
                       rates["wsloop-tls"] / rates["tokio-rustls"], 1.3)
                continue
            what = "full" if resume == "none" else "resumed"
            target(f"{what} handshakes/s: wsloop / tokio-rustls", rates["wsloop-tls"] / rates["tokio-rustls"], 1.3)
            target(f"{what} handshakes per server CPU-second: wsloop / tokio-rustls",
                   caps["wsloop-tls"] / caps["tokio-rustls"], 1.3)

mem = {r["bench"]["server"]: r for r in reports if r["bench"]["tag"].startswith("memory-")}
if mem:
    n = next(iter(mem.values()))["bench"]["connections"]
    print(f"\nMemory: {n:,} idle connections held, server RSS after minus before, per connection ({today})\n")
    print("| server | RSS before KiB | RSS held KiB | open fds | bytes per idle connection | held | handshake p50 ms |")
    print("|---|---|---|---|---|---|---|")
    for server in ["wsloop-tls", "wsloop", "tokio-rustls", "tokio-rustls-4k"]:
        r = mem.get(server)
        if not r:
            continue
        b = r["bench"]
        c = r.get("connections", {})
        print(f"| {names[server]} | {b['rss_kib_before']:,} | {b['rss_kib_held']:,} | {b['fds_held']:,} | "
              f"{b['bytes_per_connection']:,.0f} | {c.get('peak_open', 0):,} | "
              f"{r.get('handshake', {}).get('latency_us', {}).get('p50', 0) / 1000:.1f} |")
        summary["memory"].append({"server": server, **b})
    if "wsloop-tls" in mem and "tokio-rustls" in mem:
        tls, peer = mem["wsloop-tls"]["bench"]["bytes_per_connection"], mem["tokio-rustls"]["bench"]["bytes_per_connection"]
        # Under half the peer's: the peer's bytes at least 2x wsloop's.
        target("memory per idle TLS connection: tokio-rustls / wsloop", peer / tls if tls > 0 else None, 2.0)

if checks:
    print("\n| target | measured | goal | met |\n|---|---|---|---|")
    print("\n".join(checks))
json.dump({"date": str(today), "machine": f"{os.cpu_count()} x {cpu}", "kernel": platform.release(),
           "summary": summary, "targets": checks, "runs": reports}, open(f"{out}/results.json", "w"), indent=1)
print(f"\nall runs: {out}/results.json")
PY
if [ ${#failed[@]} -gt 0 ]; then
  printf 'bench-tls.sh: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
