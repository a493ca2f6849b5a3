#!/usr/bin/env bash
# Syscalls per echoed message, for the server. Two loadgen echo runs against
# one server (pinned to CPU 0), a short one and a long one, each counted with
# `perf stat -e raw_syscalls:sys_enter` on the server's PID (a kernel
# tracepoint: exact, and cheap enough not to change the workload). Set-up
# (accepts, handshakes, registration) is the same in both runs, so
#   (syscalls_long - syscalls_short) / (messages_long - messages_short)
# is the steady-state cost per message. The ideal is 2: one read, one write,
# epoll_wait amortized over many connections.
#
# Usage: scripts/syscalls.sh [SERVER]   (default wsloop; see scripts/lib/servers.sh)
# Environment: CONNECTIONS (500), SIZE (512), SHORT (50000), LONG (250000) messages.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/lib/servers.sh
server=${1:-wsloop}
connections=${CONNECTIONS:-500}
size=${SIZE:-512}
short=${SHORT:-50000}
long=${LONG:-250000}
out=target/syscalls
mkdir -p "$out"
command -v perf >/dev/null || { echo "syscalls.sh: needs perf (Debian: apt-get install linux-perf)" >&2; exit 1; }
build_servers "$server"
print_machine
trap stop_server EXIT

# count MESSAGES: runs loadgen for MESSAGES messages against a fresh server
# and prints "messages syscalls" plus the per-syscall breakdown file.
count() {
  local messages=$1
  start_server "$server" "$out/$server.log" taskset -c 0
  local events=raw_syscalls:sys_enter
  for s in read recvfrom readv write sendto writev sendmsg epoll_wait epoll_pwait epoll_ctl accept4 close; do
    events+=",syscalls:sys_enter_$s"
  done
  perf stat -x, -e "$events" -p "$SERVER_PID" -o "$out/perf-$messages.csv" &
  local perf=$!
  sleep 0.3
  taskset -c 1 target/release/loadgen --url "ws://$SERVER_ADDR/" --mode echo -c "$connections" --size "$size" \
    --messages "$messages" --duration 120s --warmup 0 --quiet --json "$out/loadgen-$messages.json" >/dev/null
  sleep 0.2
  kill -INT "$perf"
  wait "$perf" || true
  stop_server
}

count "$short"
count "$long"
python3 - "$out" "$short" "$long" "$server" "$connections" "$size" <<'PY'
import csv, json, sys
out, short, long_, server, connections, size = sys.argv[1:]
def load(n):
    counts = {}
    for row in csv.reader(open(f"{out}/perf-{n}.csv")):
        if len(row) > 2 and row[0].strip().isdigit():
            counts[row[2].split(":")[-1].replace("sys_enter_", "")] = int(row[0])
    messages = json.load(open(f"{out}/loadgen-{n}.json"))["messages"]["received"]
    return counts, messages
(a, ma), (b, mb) = load(short), load(long_)
per = {k: (b.get(k, 0) - a.get(k, 0)) / (mb - ma) for k in b}
total = per.pop("sys_enter")
print(f"{server}: {total:.3f} syscalls per echoed message "
      f"({connections} connections, {size} B, runs of {ma} and {mb} messages, set-up cancelled out)")
for name, value in sorted(per.items(), key=lambda kv: -kv[1]):
    if value > 0.0005:
        print(f"  {name:12} {value:.3f}")
json.dump({"server": server, "syscalls_per_message": total, "by_syscall": per}, open(f"{out}/{server}.json", "w"), indent=1)
PY
