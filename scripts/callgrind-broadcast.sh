#!/usr/bin/env bash
# User-space instructions per delivery, for a broadcast server, counted by
# valgrind's callgrind (exact, whatever else the machine is doing). The
# server runs under callgrind; loadgen (native) puts SUBSCRIBERS connections
# in one room, PUBLISHERS of them publishing in closed loop. Two runs of
# different length (SHORT and LONG seconds), each against a fresh server:
# start-up, handshakes, joins, leaves and exit are the same in both, so
#   (instructions_long - instructions_short) / (deliveries_long - deliveries_short)
# is the steady-state cost of one delivery, the publisher's read and the
# message's framing shared out over its deliveries. Kernel work is not
# counted. Deliveries are loadgen's whole-run count (`broadcast.delivered`:
# every delivery owed and received, warm-up and drain included).
#
# Usage: scripts/callgrind-broadcast.sh [SERVER]   (default wsloop-broadcast; see scripts/lib/servers.sh)
# Environment: SUBSCRIBERS (1000), SIZE (512), PUBLISHERS (1), PIPELINE (1),
#   SHORT (4s), LONG (12s) of traffic,
#   PROFILE (profiling: wsloop built with symbols and line info; release
#   skips that build: the count is the same, the annotation has no lines).
# Output: the machine, the figure, the top functions of the long run (self
# and inclusive), and target/callgrind-broadcast/<server>-<seconds>.out for
# callgrind_annotate or kcachegrind.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/lib/servers.sh
server=${1:-wsloop-broadcast}
subscribers=${SUBSCRIBERS:-1000}
size=${SIZE:-512}
publishers=${PUBLISHERS:-1}
pipeline=${PIPELINE:-1}
short=${SHORT:-4s}
long=${LONG:-12s}
profile=${PROFILE:-profiling}
out=target/callgrind-broadcast
mkdir -p "$out"
command -v valgrind >/dev/null || { echo "callgrind-broadcast.sh: needs valgrind (Debian: apt-get install valgrind)" >&2; exit 1; }
build_servers "$server"
is_peer "$server" || [ "$profile" = release ] || cargo build --quiet --profile "$profile" --bin wsloop
print_machine
trap stop_server EXIT

instructions() {
  local length=$1 file="$out/$server-$1.out" command
  command=$(server_command "$server")
  is_peer "$server" || command=${command/release/$profile}
  # shellcheck disable=SC2086 # the command is split into words on purpose
  valgrind --tool=callgrind --callgrind-out-file="$file" $command >"$out/$server.log" 2>&1 &
  SERVER_PID=$!
  SERVER_ADDR=""
  for _ in $(seq 600); do
    SERVER_ADDR=$(listen_addr "$out/$server.log")
    [ -n "$SERVER_ADDR" ] && break
    sleep 0.1
  done
  [ -n "$SERVER_ADDR" ] || { cat "$out/$server.log" >&2; exit 1; }
  target/release/loadgen "ws://$SERVER_ADDR/feed" --mode broadcast -c "$subscribers" --publishers "$publishers" \
    --pipeline "$pipeline" --size "$size" --duration "$length" --warmup 0 --connect-timeout 120s \
    --message-timeout 60s --quiet --json "$out/loadgen-$length.json" >"$out/loadgen-$length.txt" ||
    { cat "$out/loadgen-$length.txt" >&2; exit 1; }
  # Under valgrind the exit, which writes the profile, can take a while.
  stop_server 60
}

instructions "$short"
instructions "$long"
python3 - "$out" "$server" "$short" "$long" "$subscribers" "$size" "$publishers" <<'PY'
import json, sys
sys.path.insert(0, "scripts/lib")
from callgrind_total import instructions
out, server, short, long_, subscribers, size, publishers = sys.argv[1:]
def total(length):
    ir = instructions(f"{out}/{server}-{length}.out")
    report = json.load(open(f"{out}/loadgen-{length}.json"))
    return ir, report["broadcast"]["delivered"], report["broadcast"]["published"]
(ia, da, pa), (ib, db, pb) = total(short), total(long_)
per = (ib - ia) / (db - da)
print(f"{server}: {per:.0f} user-space instructions per delivery ({subscribers} subscribers in one room, "
      f"{publishers} publisher(s), {size} B; runs of {da} and {db} deliveries, set-up cancelled out; "
      f"{(ib - ia) / max(1, (db - da) / int(subscribers)):.0f} per published message)")
json.dump({"server": server, "subscribers": int(subscribers), "size": int(size), "publishers": int(publishers),
           "instructions_per_delivery": per, "runs": {short: [ia, da], long_: [ib, db]}},
          open(f"{out}/{server}.json", "w"), indent=1)
PY
# awk reads to the end: `| head` would stop early and fail the pipeline (SIGPIPE, exit 141).
echo "top functions, self (exclusive instructions, long run):"
callgrind_annotate --inclusive=no "$out/$server-$long.out" 2>/dev/null | awk '/^Ir/ { on = 1 } on && shown++ < 30'
echo "top functions, inclusive (long run):"
callgrind_annotate --inclusive=yes "$out/$server-$long.out" 2>/dev/null | awk '/^Ir/ { on = 1 } on && shown++ < 30'
