#!/usr/bin/env bash
# Profiles the server under load: wsloop (profiling build: release with debug
# info) pinned to CPU 0, loadgen echo pinned to CPU 1, `perf record` on the
# server for the middle of the run. Prints the top symbols and writes a flame
# graph. Hardware counters are often missing in virtual machines, so the
# sampling event is cpu-clock (a timer), which works everywhere.
#
# Usage: scripts/perf-record.sh [SECONDS]   (default 10)
# Environment: CONNECTIONS (500), SIZE (512), MODE (echo; or rate with RATE).
# Output: target/perf/perf.data, target/perf/top.txt (and the kernel / user
# split, target/perf/dso.txt), target/perf/flamegraph.svg (when inferno is
# installed or can be: without it the flame graph is skipped with a note).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/lib/servers.sh
seconds=${1:-10}
connections=${CONNECTIONS:-500}
size=${SIZE:-512}
mode=${MODE:-echo}
out=target/perf
mkdir -p "$out"
command -v perf >/dev/null || { echo "perf-record.sh: needs perf (Debian: apt-get install linux-perf)" >&2; exit 1; }

# inferno (the flame graph tools), installed into target/tools if missing.
tools="$ROOT/target/tools"
if ! command -v inferno-flamegraph >/dev/null && [ ! -x "$tools/bin/inferno-flamegraph" ]; then
  echo "perf-record.sh: installing inferno into $tools"
  cargo install --quiet --locked --root "$tools" inferno ||
    echo "perf-record.sh: could not install inferno: no flame graph this time" >&2
fi
export PATH="$tools/bin:$PATH"

cargo build --quiet --release --bin loadgen
cargo build --quiet --profile profiling --bin wsloop
print_machine
command="$ROOT/target/profiling/wsloop --listen 127.0.0.1:0 --max-connections 100000"
taskset -c 0 $command >"$out/wsloop.log" 2>&1 &
SERVER_PID=$!
trap stop_server EXIT
for _ in $(seq 100); do
  SERVER_ADDR=$(listen_addr "$out/wsloop.log")
  [ -n "$SERVER_ADDR" ] && break
  sleep 0.05
done
extra=()
[ "$mode" = rate ] && extra=(--rate "${RATE:-100k}")
taskset -c 1 target/release/loadgen --url "ws://$SERVER_ADDR/" --mode "$mode" -c "$connections" --size "$size" \
  --duration "$((seconds + 3))s" --warmup 1s --quiet "${extra[@]}" >"$out/loadgen.txt" &
loadgen=$!
sleep 2
# Hardware cycles where the machine has them, else the cpu-clock timer.
event=cycles
# (grep without -q reads all of perf's output: `grep -q` could exit first and
# SIGPIPE perf, which pipefail reports as a failure of the whole test.)
if ! perf stat -e cycles true >/dev/null 2>&1 || perf stat -e cycles true 2>&1 | grep "not supported" >/dev/null; then
  event=cpu-clock
fi
echo "perf-record.sh: recording $seconds s of the server (event $event)"
perf record -e "$event" -F 2999 --call-graph dwarf,16384 -p "$SERVER_PID" -o "$out/perf.data" -- sleep "$seconds" \
  2>"$out/perf-record.log" || { cat "$out/perf-record.log" >&2; exit 1; }
wait "$loadgen" || true
stop_server

perf report -i "$out/perf.data" --stdio --no-children -g none --sort sym --percent-limit 0.7 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | grep -E '^ +[0-9]' >"$out/top.txt" || true
perf report -i "$out/perf.data" --stdio --no-children -g none --sort dso 2>/dev/null \
  | grep -E '^ +[0-9]' >"$out/dso.txt" || true
echo "where the samples are (kernel, wsloop, libc):"
cat "$out/dso.txt"
echo "top symbols (self time):"
head -30 "$out/top.txt"
if command -v inferno-flamegraph >/dev/null; then
  perf script -i "$out/perf.data" 2>/dev/null | inferno-collapse-perf >"$out/stacks.folded"
  inferno-flamegraph --title "wsloop, $mode, $connections connections, $size B" <"$out/stacks.folded" >"$out/flamegraph.svg"
  echo "flame graph: $out/flamegraph.svg"
fi
