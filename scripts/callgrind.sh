#!/usr/bin/env bash
# User-space instructions per echoed message, for the server, counted by
# valgrind's callgrind: exact and repeatable whatever else the machine is
# doing, so it is the judge of micro-optimisations. Two loadgen echo runs
# (short and long) each against a fresh server under callgrind; set-up is the
# same in both, so
#   (instructions_long - instructions_short) / (messages_long - messages_short)
# is the steady-state cost per message. Kernel time is not counted, nor
# quanta's TSC calibration at start-up (in wsloop::clock::Clock::new), which
# runs for a span of wall time and so differs between the two runs.
#
# Usage: scripts/callgrind.sh [SERVER]   (default wsloop)
# Environment: CONNECTIONS (100), SIZE (512), SHORT (20000), LONG (120000) messages,
#   PROFILE (profiling: wsloop built with symbols and line info; release
#   skips that build: the count is the same, the annotation has no lines).
# Output: the machine, the figure, the top functions of the long run, and
# target/callgrind/<server>-<messages>.out for callgrind_annotate or kcachegrind.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/lib/servers.sh
server=${1:-wsloop}
connections=${CONNECTIONS:-100}
size=${SIZE:-512}
short=${SHORT:-20000}
long=${LONG:-120000}
profile=${PROFILE:-profiling}
out=target/callgrind
mkdir -p "$out"
command -v valgrind >/dev/null || { echo "callgrind.sh: needs valgrind (Debian: apt-get install valgrind)" >&2; exit 1; }
build_servers "$server"
# Symbols for the annotation: the profiling profile is release plus debug info.
if [ "$server" = wsloop ] && [ "$profile" != release ]; then
  cargo build --quiet --profile "$profile" --bin wsloop
fi
print_machine
trap stop_server EXIT

instructions() {
  local messages=$1 file="$out/$server-$1.out"
  local command
  command=$(server_command "$server")
  [ "$server" = wsloop ] && command=${command/release/$profile}
  # shellcheck disable=SC2086
  valgrind --tool=callgrind --callgrind-out-file="$file" $command >"$out/$server.log" 2>&1 &
  SERVER_PID=$!
  SERVER_ADDR=""
  for _ in $(seq 600); do
    SERVER_ADDR=$(listen_addr "$out/$server.log")
    [ -n "$SERVER_ADDR" ] && break
    sleep 0.1
  done
  [ -n "$SERVER_ADDR" ] || { cat "$out/$server.log" >&2; exit 1; }
  target/release/loadgen --url "ws://$SERVER_ADDR/" --mode echo -c "$connections" --size "$size" \
    --messages "$messages" --duration 600s --warmup 0 --connect-timeout 60s --message-timeout 60s --quiet \
    --json "$out/loadgen-$messages.json" >/dev/null
  # Under valgrind the exit, which writes the profile, can take a while.
  stop_server 60
}

instructions "$short"
instructions "$long"
python3 - "$out" "$server" "$short" "$long" "$connections" "$size" <<'PY'
import json, sys
sys.path.insert(0, "scripts/lib")
from callgrind_total import instructions
out, server, short, long_, connections, size = sys.argv[1:]
def total(n):
    ir = instructions(f"{out}/{server}-{n}.out")
    messages = json.load(open(f"{out}/loadgen-{n}.json"))["messages"]["received"]
    return ir, messages
(ia, ma), (ib, mb) = total(short), total(long_)
per = (ib - ia) / (mb - ma)
print(f"{server}: {per:.0f} user-space instructions per echoed {size} B message "
      f"({connections} connections; runs of {ma} and {mb} messages, set-up cancelled out)")
json.dump({"server": server, "instructions_per_message": per}, open(f"{out}/{server}.json", "w"), indent=1)
PY
echo "top functions (exclusive instructions, long run):"
# awk reads to the end: `| head` would stop early and fail the pipeline (SIGPIPE, exit 141).
callgrind_annotate --inclusive=no "$out/$server-$long.out" 2>/dev/null | awk '/^Ir/ { on = 1 } on && shown++ < 30'
