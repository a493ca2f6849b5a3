#!/usr/bin/env bash
# Runs the scripts in scripts/ once each with their shortest settings (about
# a minute in all) and checks their exit status: 0 for a run that works,
# non-zero for one that cannot (an unknown server, impossible limits). Also
# checks what they print and build:
#   - no script pipes into `head` or `grep -q`: under `set -o pipefail` the
#     writer's SIGPIPE fails the script (exit 141) after a good run;
#   - a run of wsloop alone never builds the peers/ crate (minutes, cold);
#   - every measuring script prints the machine's CPU model (lscpu's
#     "Model name" line) beside its figures.
#
# Not run here: autobahn.sh and browser-test.sh (scripts/test.sh runs them,
# and they call pyenv.sh); check-peers.sh and any run of a peer (a cold
# build of peers/ takes about 90 s); perf-record.sh (a profiling build and
# `cargo install inferno`, minutes). Scripts whose tool is missing (perf,
# valgrind) are skipped with a note, and so are those that pin the server
# and loadgen to CPUs 0 and 1 on a machine with one CPU.
#
# Usage: scripts/check-scripts.sh   (on failure, every log is kept in target/check-scripts/)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
started=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A cargo that records its command lines, to check what each script builds.
mkdir -p "$work/bin"
real_cargo=$(command -v cargo)
cat >"$work/bin/cargo" <<EOF
#!/bin/sh
echo "\$*" >>"$work/cargo.log"
exec "$real_cargo" "\$@"
EOF
chmod +x "$work/bin/cargo"
export PATH="$work/bin:$PATH"

failed=()
skipped=()
fail() { echo "check-scripts.sh: FAIL: $*" >&2; failed+=("$*"); }

# run EXPECT NAME [VAR=value...] COMMAND...: runs COMMAND (with the
# variables set) and checks its status: EXPECT is ok (0) or fail (non-zero).
# Output goes to $work/NAME.log, shown if the check fails.
run() {
  local expect=$1 name=$2 status=0 t0
  shift 2
  t0=$(date +%s)
  env "$@" >"$work/$name.log" 2>&1 </dev/null || status=$?
  if { [ "$expect" = ok ] && [ "$status" -ne 0 ]; } || { [ "$expect" = fail ] && [ "$status" -eq 0 ]; }; then
    tail -n 30 "$work/$name.log" >&2
    fail "$name: exit $status, expected $expect"
    return 1
  fi
  echo "check-scripts.sh: $name: exit $status as expected ($(($(date +%s) - t0))s)"
}

# shows NAME TEXT: the output of check NAME contains TEXT.
shows() {
  grep -qF -- "$2" "$work/$1.log" || { tail -n 30 "$work/$1.log" >&2; fail "$1: output lacks \"$2\""; }
}

echo "check-scripts.sh: no pipe into head or grep -q"
if grep -nE '\|[[:space:]]*(head|grep[[:space:]]+(-[a-zA-Z]*q|--quiet))\b' scripts/*.sh scripts/lib/*.sh | grep -vE '^[^:]+:[0-9]+:[[:space:]]*#' >"$work/pipes"; then
  cat "$work/pipes" >&2
  fail "a script pipes into head or grep -q (SIGPIPE under pipefail)"
fi

run ok limits scripts/limits.sh 100 || true
run fail build-base-usage scripts/build-base.sh || true
run fail build-base-unknown scripts/build-base.sh no-such-commit || true
run fail limits-impossible scripts/limits.sh 100000000 || true

if [ "$(nproc)" -lt 2 ]; then
  skipped+=("bench-echo.sh, bench-handshake.sh, bench-latency.sh, bench-broadcast.sh, bench-tls.sh, c10k.sh, c100k.sh, bench-redis.sh, syscalls.sh (they pin to CPUs 0 and 1 or need both)")
else
  run ok bench-echo SERVERS=wsloop RUNS=1 SIZES=512 DURATION=1s WARMUP=0 CONNECTIONS=20 scripts/bench-echo.sh &&
    shows bench-echo "Model name:" && shows bench-echo "| 512 B | wsloop |"
  run fail bench-echo-unknown SERVERS=no-such-server RUNS=1 SIZES=512 DURATION=1s scripts/bench-echo.sh || true
  run fail bench-echo-no-base WSLOOP_BASE= SERVERS=wsloop-base RUNS=1 SIZES=512 DURATION=1s scripts/bench-echo.sh || true
  run ok bench-handshake SERVERS=wsloop RUNS=1 DURATION=1s WARMUP=0 CONNECTIONS=8 scripts/bench-handshake.sh &&
    shows bench-handshake "Model name:" && shows bench-handshake "| wsloop |"
  run ok bench-latency SERVERS=wsloop RUNS=1 RATES=1k DURATION=1s WARMUP=0 CONNECTIONS=20 STALL_SECONDS=1 \
    scripts/bench-latency.sh && shows bench-latency "Model name:" && shows bench-latency "| 1k/s | wsloop |"
  run ok bench-tls SERVERS="wsloop-tls wsloop" ROUNDS=1 DURATION=1s WARMUP=0 CONNECTIONS=20 SIZES=512 \
    HS_CONNECTIONS=8 IDLE=200 HOLD=1s scripts/bench-tls.sh && shows bench-tls "Model name:" &&
    shows bench-tls "| 512 B | wsloop wss:// |" && shows bench-tls "| full | wsloop wss:// |" &&
    shows bench-tls "echo 512 B: wsloop TLS / wsloop plain" && shows bench-tls "bytes per idle connection"
  run fail bench-tls-unknown SERVERS=wsloop-tls PARTS=no-such-part scripts/bench-tls.sh || true
  run ok c10k ACTIVE=20 DURATION=1s WARMUP=0 RATE=2k scripts/c10k.sh 200 2 &&
    shows c10k "Model name:" && shows c10k "bytes per idle connection"
  run ok bench-broadcast SERVERS=wsloop-broadcast RUNS=1 DURATION=1s WARMUP=0 SUBSCRIBERS=20 SIZES=64 \
    scripts/bench-broadcast.sh && shows bench-broadcast "Model name:" && shows bench-broadcast "| 20 | 64 B | wsloop-broadcast |"
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    run ok bench-redis RUNS=1 DURATION=1s WARMUP=0 SUBSCRIBERS=10 RATE=50 scripts/bench-redis.sh &&
      shows bench-redis "Model name:" && shows bench-redis "Redis adds"
    run ok c100k CONNECTIONS=2000 HOLD=2 scripts/c100k.sh && shows c100k "Model name:" && shows c100k "lost 0"
  else
    skipped+=("bench-redis.sh and c100k.sh (no redis-server)")
  fi
  if ! perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1; then
    skipped+=("syscalls.sh, syscalls-broadcast.sh (perf cannot count raw_syscalls:sys_enter here)")
  else
    run ok syscalls CONNECTIONS=10 SHORT=2000 LONG=6000 scripts/syscalls.sh wsloop &&
      shows syscalls "Model name:" && shows syscalls "syscalls per echoed message"
    run fail syscalls-unknown scripts/syscalls.sh no-such-server || true
    run ok syscalls-broadcast SUBSCRIBERS=20 PUBLISHERS=2 PIPELINE=2 SHORT=1s LONG=2s scripts/syscalls-broadcast.sh &&
      shows syscalls-broadcast "Model name:" && shows syscalls-broadcast "syscalls per delivery"
  fi
fi

if command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null; then
  # PROFILE=release: the same instruction count without a third build profile.
  run ok callgrind PROFILE=release CONNECTIONS=4 SHORT=300 LONG=900 scripts/callgrind.sh wsloop &&
    shows callgrind "Model name:" && shows callgrind "instructions per echoed"
  run fail callgrind-unknown PROFILE=release scripts/callgrind.sh no-such-server || true
  run ok callgrind-broadcast PROFILE=release SUBSCRIBERS=20 SHORT=1s LONG=2s scripts/callgrind-broadcast.sh &&
    shows callgrind-broadcast "Model name:" && shows callgrind-broadcast "instructions per delivery"
  run ok callgrind-loadgen PROFILE=release CONNECTIONS=4 SHORT=300 LONG=900 scripts/callgrind-loadgen.sh \
    "$work/callgrind-loadgen" && shows callgrind-loadgen "Model name:" && shows callgrind-loadgen "per echoed message"
else
  skipped+=("callgrind.sh and callgrind-loadgen.sh (no valgrind)")
fi

# None of the runs above uses a peer, so none may have built one.
if grep -n 'peers' "$work/cargo.log" >"$work/peer-builds"; then
  cat "$work/peer-builds" >&2
  fail "a run of wsloop alone built the peers/ crate"
fi

for s in "${skipped[@]}"; do echo "check-scripts.sh: skipped: $s"; done
if [ ${#failed[@]} -gt 0 ]; then
  rm -rf target/check-scripts && mkdir -p target && cp -r "$work" target/check-scripts
  printf 'check-scripts.sh: FAILED: %s\n' "${failed[@]}" >&2
  echo "check-scripts.sh: the logs are in target/check-scripts/" >&2
  exit 1
fi
echo "check-scripts.sh: all passed in $(($(date +%s) - started))s"
