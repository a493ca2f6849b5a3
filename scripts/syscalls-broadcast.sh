#!/usr/bin/env bash
# Syscalls per delivery, for a broadcast server. SUBSCRIBERS connections in
# one room, PUBLISHERS of them publishing in closed loop with PIPELINE
# messages in flight each, so that several messages reach each subscriber in
# one wakeup of the server (the case where corked writes pay: one sendto per
# subscriber per wakeup however many messages it got). Two loadgen runs of
# different length (SHORT and LONG seconds) against one server pinned to
# CPU 0 (loadgen on CPU 1), each counted with `perf stat -e
# raw_syscalls:sys_enter` (and a breakdown by syscall) on the server's PID,
# as scripts/syscalls.sh does: a kernel tracepoint, exact, and cheap enough
# not to change the workload (strace would stop the server at every call).
# Set-up (accepts, handshakes, joins) is the same in both runs, so
#   (syscalls_long - syscalls_short) / (deliveries_long - deliveries_short)
# is the steady-state cost of one delivery. Deliveries are loadgen's
# whole-run count (`broadcast.delivered`). Also printed: messages per
# sendto, i.e. how many messages a subscriber got per write.
#
# Usage: scripts/syscalls-broadcast.sh [SERVER]   (default wsloop-broadcast)
# TOOL=strace counts with `strace -c -f` attached to the server instead
# (every thread; it stops the server at each call, so the server is slower
# and batches more: perf's count is the faithful one, strace's a cross-check
# where perf has no tracepoints).
# Environment: SUBSCRIBERS (1000), SIZE (512), PUBLISHERS (8), PIPELINE (4), SHORT (2s), LONG (6s), TOOL (perf).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/lib/servers.sh
server=${1:-wsloop-broadcast}
subscribers=${SUBSCRIBERS:-1000}
size=${SIZE:-512}
publishers=${PUBLISHERS:-8}
pipeline=${PIPELINE:-4}
short=${SHORT:-2s}
long=${LONG:-6s}
tool=${TOOL:-perf}
out=target/syscalls-broadcast
mkdir -p "$out"
case "$tool" in perf | strace) ;; *) echo "syscalls-broadcast.sh: TOOL is perf or strace" >&2; exit 1 ;; esac
command -v "$tool" >/dev/null || { echo "syscalls-broadcast.sh: needs $tool (Debian: apt-get install linux-perf, or strace)" >&2; exit 1; }
build_servers "$server"
print_machine
trap stop_server EXIT

# count LENGTH: one loadgen run of LENGTH against a fresh server, counted.
count() {
  local length=$1
  start_server "$server" "$out/$server.log" taskset -c 0
  local events=raw_syscalls:sys_enter
  for s in read recvfrom readv write sendto writev sendmsg epoll_wait epoll_pwait epoll_ctl accept4 close futex; do
    events+=",syscalls:sys_enter_$s"
  done
  if [ "$tool" = perf ]; then
    perf stat -x, -e "$events" -p "$SERVER_PID" -o "$out/perf-$length.csv" &
  else
    strace -c -f -p "$SERVER_PID" -o "$out/strace-$length.txt" 2>"$out/strace-$length.err" &
  fi
  local perf=$!
  sleep 0.3
  taskset -c 1 target/release/loadgen "ws://$SERVER_ADDR/feed" --mode broadcast -c "$subscribers" \
    --publishers "$publishers" --pipeline "$pipeline" --size "$size" --duration "$length" --warmup 0 --quiet \
    --json "$out/loadgen-$length.json" >"$out/loadgen-$length.txt" || { cat "$out/loadgen-$length.txt" >&2; exit 1; }
  sleep 0.2
  kill -INT "$perf"
  wait "$perf" || true
  stop_server
}

count "$short"
count "$long"
python3 - "$out" "$short" "$long" "$server" "$subscribers" "$size" "$publishers" "$pipeline" "$tool" <<'PY'
import csv, json, sys
out, short, long_, server, subscribers, size, publishers, pipeline, tool = sys.argv[1:]
def load(length):
    counts = {}
    if tool == "perf":
        for row in csv.reader(open(f"{out}/perf-{length}.csv")):
            if len(row) > 2 and row[0].strip().isdigit():
                counts[row[2].split(":")[-1].replace("sys_enter_", "")] = int(row[0])
    else:
        # strace -c: "% time  seconds  usecs/call  calls  [errors]  syscall", then a "total" row.
        for line in open(f"{out}/strace-{length}.txt"):
            f = line.split()
            if len(f) >= 5 and f[0].replace(".", "", 1).isdigit() and f[3].isdigit():
                counts["sys_enter" if f[-1] == "total" else f[-1]] = int(f[3])
    report = json.load(open(f"{out}/loadgen-{length}.json"))
    return counts, report["broadcast"]["delivered"], report["broadcast"]["published"]
(a, da, pa), (b, db, pb) = load(short), load(long_)
per = {k: (b.get(k, 0) - a.get(k, 0)) / (db - da) for k in b}
total = per.pop("sys_enter")
writes = sum(per.get(k, 0) for k in ("write", "sendto", "writev", "sendmsg"))
print(f"{server}: {total:.3f} syscalls per delivery (counted by {tool}; {subscribers} subscribers in one room, {publishers} publishers "
      f"x {pipeline} in flight, {size} B; runs of {da} and {db} deliveries, set-up cancelled out)")
for name, value in sorted(per.items(), key=lambda kv: -kv[1]):
    if value > 0.0005:
        print(f"  {name:12} {value:.4f}")
if writes > 0:
    print(f"  {1 / writes:.2f} messages per write to a subscriber (deliveries per write call)")
json.dump({"server": server, "subscribers": int(subscribers), "publishers": int(publishers), "pipeline": int(pipeline),
           "syscalls_per_delivery": total, "by_syscall": per,
           "deliveries_per_write": 1 / writes if writes > 0 else None},
          open(f"{out}/{server}.json", "w"), indent=1)
PY
