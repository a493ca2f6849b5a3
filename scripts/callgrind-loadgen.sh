#!/usr/bin/env bash
# loadgen's user-space instructions per echoed message, measured with callgrind.
#
# Two echo runs against a release wsloop that differ only in --messages; the
# difference in instructions divided by the difference in messages is the
# per-message cost, with start-up, connection set-up, ramp, drain and close
# (identical in both runs) cancelled out. Kernel work (the read and write
# system calls themselves) is not counted: callgrind sees user space only.
#
# Usage: scripts/callgrind-loadgen.sh [OUT_DIR]
# Environment: CONNECTIONS (100), SIZE (512), PIPELINE (1), SHORT (20000), LONG (120000), EXTRA (more loadgen flags),
#   PROFILE (profiling: loadgen with symbols and line info; release skips that build, same count).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/lib/servers.sh
out=${1:-target/callgrind}
connections=${CONNECTIONS:-100}
size=${SIZE:-512}
pipeline=${PIPELINE:-1}
short=${SHORT:-20000}
long=${LONG:-120000}
profile=${PROFILE:-profiling}
mkdir -p "$out"

command -v valgrind >/dev/null || { echo "callgrind-loadgen.sh: valgrind not found" >&2; exit 1; }
# Release code generation with line info (profile "profiling") for the annotation; the
# release binary has the function names too, and the same instruction count.
cargo build --quiet --release --bin wsloop --bin loadgen
[ "$profile" = release ] || cargo build --quiet --profile "$profile" --bin loadgen
print_machine

log="$out/wsloop.log"
target/release/wsloop --listen 127.0.0.1:0 --max-connections 12000 >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  addr=$(listen_addr "$log")
  [ -n "$addr" ] && break
  sleep 0.05
done
[ -n "${addr:-}" ] || { echo "wsloop did not start:" >&2; cat "$log" >&2; exit 1; }

instructions() { # messages -> total Ir
  local file="$out/loadgen.$1.callgrind"
  valgrind --tool=callgrind --callgrind-out-file="$file" \
    "target/$profile/loadgen" --url "ws://$addr/" --mode echo -c "$connections" --size "$size" \
    --pipeline "$pipeline" --messages "$1" --warmup 0 --duration 10m --connect-timeout 60s --message-timeout 60s \
    --quiet ${EXTRA:-} \
    >"$out/loadgen.$1.txt" 2>"$out/loadgen.$1.valgrind.log"
  grep -q '^result: ok' "$out/loadgen.$1.txt" || { cat "$out/loadgen.$1.txt" >&2; exit 1; }
  awk '/^summary:/ {print $2}' "$file"
}

short_ir=$(instructions "$short")
long_ir=$(instructions "$long")
per_message=$(( (long_ir - short_ir) / (long - short) ))
echo "connections $connections, size $size B, pipeline $pipeline"
echo "run of $short messages: $short_ir instructions"
echo "run of $long messages: $long_ir instructions"
echo "user-space instructions per echoed message: $per_message"
echo
echo "Top functions (self cost) of the $long-message run:"
# awk reads to the end: `| head` would stop early and fail the pipeline (SIGPIPE, exit 141).
callgrind_annotate --inclusive=no "$out/loadgen.$long.callgrind" 2>/dev/null | awk 'NR <= 60 && /^ *[0-9,]+ / && shown++ < 25' 
