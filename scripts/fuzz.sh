#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of every target in
# fuzz/fuzz_targets/, on the stable toolchain.
#
#   scripts/fuzz.sh                      # each target for FUZZ_SECONDS (default 600)
#   FUZZ_SECONDS=60 scripts/fuzz.sh      # what CI runs
#   FUZZ_SECONDS=0 scripts/fuzz.sh       # build, and run the seed corpora once
#   scripts/fuzz.sh frames               # only the targets named
#
# Exits non-zero if any target crashes (panic, failed invariant, sanitizer
# report, timeout, out of memory), printing the input and how to reproduce.
#
# Stable, not nightly: cargo-fuzz builds with nightly-only flags (-Z
# sanitizer, -Cpasses=sancov-module, `--cfg fuzzing`); a stable rustc accepts
# them when RUSTC_BOOTSTRAP=1 is in the build's environment, so it is set here
# only, for the cargo-fuzz commands (never globally). libFuzzer itself comes
# with the libfuzzer-sys crate, which compiles its C++ with the system
# compiler. The toolchain is `stable` (FUZZ_TOOLCHAIN overrides); a nightly
# that happens to be installed is not used.
#
# Sanitizer: address (FUZZ_SANITIZER=none to go without). The stable
# toolchain ships the runtime (librustc-stable_rt.asan.a in its rustlib), and
# with RUSTC_BOOTSTRAP=1 `-Zsanitizer=address` links it: checked on 1.95 with a
# planted heap overflow in unsafe code, which ASan reported
# (heap-buffer-overflow) and the run exited 1. It costs about half the
# executions per second, and finds what an unsafe block (or libc) gets wrong,
# which a panic never shows.
#
# The seed corpus, fuzz/corpus/<target>/, is only read; what the fuzzer adds
# goes to target/fuzz-corpus/<target>/ (kept between local runs, never
# committed). Logs: target/fuzz-logs/<target>.log. Crashes:
# fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-600}
SANITIZER=${FUZZ_SANITIZER:-address}
CARGO_FUZZ_VERSION=0.13.2
# A slower input than this is a hang (the slowest seen is well under 1 s).
TIMEOUT_S=${FUZZ_TIMEOUT_S:-10}
export RUSTUP_TOOLCHAIN=${FUZZ_TOOLCHAIN:-stable}

case $FUZZ_SECONDS in
  '' | *[!0-9]*) echo "FUZZ_SECONDS must be a whole number of seconds, not '$FUZZ_SECONDS'" >&2; exit 2 ;;
esac

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi
for t in "${targets[@]}"; do
  [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "no fuzz target fuzz/fuzz_targets/$t.rs" >&2; exit 2; }
done

# awk and sed read to the end (or quit on a file): `| head` would kill the writer under pipefail.
cpu=$(lscpu 2>/dev/null | awk '/^Model name:/ && !seen++ { sub(/^Model name:[[:space:]]*/, ""); print }' || true)
[ -n "$cpu" ] || cpu=$(sed -n '/^model name/{s/^model name[[:space:]]*:[[:space:]]*//p;q;}' /proc/cpuinfo)
echo "cpu: $cpu ($(nproc) cores)"
echo "toolchain: $(rustc --version) (RUSTUP_TOOLCHAIN=$RUSTUP_TOOLCHAIN)"
case $(rustc --version) in
  *nightly* | *-dev*) echo "warning: this is not a stable toolchain; CI's is" >&2 ;;
esac

started=$(date +%s)
if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
echo "$(cargo fuzz --version), sanitizer: $SANITIZER, $FUZZ_SECONDS s per target: ${targets[*]}"

fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }

# One build for all targets (the runs below find it up to date).
fuzz build -s "$SANITIZER"
echo "install and build: $(($(date +%s) - started)) s"

mkdir -p target/fuzz-logs
failed=()
summary=()
for t in "${targets[@]}"; do
  corpus=target/fuzz-corpus/$t
  log=target/fuzz-logs/$t.log
  mkdir -p "$corpus" "fuzz/corpus/$t"
  if [ "$FUZZ_SECONDS" -eq 0 ]; then limit=(-runs=0); else limit=(-max_total_time="$FUZZ_SECONDS"); fi
  echo
  echo "== $t: ${limit[*]} (log: $log)"
  set +e
  fuzz run -s "$SANITIZER" "$t" "$corpus" "fuzz/corpus/$t" -- \
    "${limit[@]}" -timeout="$TIMEOUT_S" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  # libFuzzer's last status line ("#N DONE cov: .. ft: .. corp: .. exec/s: ..") and final stats.
  last=$(grep -E '^#[0-9]+[[:space:]]+(INITED|NEW|REDUCE|pulse|DONE)' "$log" | tail -1 || true)
  stat() { sed -n "s/^stat::$1:[[:space:]]*//p" "$log" | tail -1; }
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
  line="$t: $(stat number_of_executed_units) execs, $(stat average_exec_per_sec) exec/s, cov $cov, ft $ft, corpus $corp, peak rss $(stat peak_rss_mb) MB"
  echo "$last"
  if [ $rc -ne 0 ]; then
    failed+=("$t")
    line="$line: FAILED (exit $rc)"
    echo "-- $t failed (exit $rc); the end of its log:"
    # From the first report line (panic, sanitizer, libFuzzer) to the end.
    awk '/panicked at|==[0-9]+==ERROR|ERROR: libFuzzer|SUMMARY:|deadly signal/ { on = 1 } on && shown++ < 80' "$log"
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if [ -n "$artifact" ]; then
      echo "input: $artifact"
      echo "reproduce: RUSTC_BOOTSTRAP=1 RUSTUP_TOOLCHAIN=$RUSTUP_TOOLCHAIN cargo fuzz run -s $SANITIZER $t $artifact"
    fi
  fi
  summary+=("$line")
done

echo
echo "== fuzzing summary ($FUZZ_SECONDS s per target, sanitizer $SANITIZER, $cpu)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "no crash in ${#targets[@]} targets"
