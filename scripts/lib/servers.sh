# Shared by the benchmark scripts (source it): building, starting and
# measuring the servers under test. Every server prints one line
# `listening on HOST:PORT` at start; we start each on port 0 and read it.
#
# Servers, by name:
#   wsloop                        this project (release build)
#   wsloop-no-latency             the same with --no-latency (what latency recording costs)
#   wsloop-broadcast              the same with --mode broadcast (rooms by path, what the broadcast peers do)
#   wsloop-tls                    wsloop on wss://, with the test certificate from test_tls_files
#   wsloop-base                   the wsloop binary at $WSLOOP_BASE (built from another commit, for
#                                 an A/B run in one script: `scripts/build-base.sh COMMIT` prints it)
#   minimal                       peers/: the hand-rolled frame-echo ceiling (one mio loop)
#   fastwebsockets                peers/: fastwebsockets on a tokio current_thread runtime
#   tokio-tungstenite-4k          peers/: tokio-tungstenite, 4 KiB read buffer
#   tokio-tungstenite             peers/: tokio-tungstenite, its defaults (128 KiB read buffer)
#   minimal-broadcast             peers/: the hand-rolled fan-out ceiling (rooms by path)
#   fastwebsockets-broadcast      peers/: fastwebsockets + tokio::sync::broadcast, a task per connection
#   tokio-tungstenite-broadcast   peers/: tokio-tungstenite + tokio::sync::broadcast, a task per connection
#   tokio-rustls                  peers/: wss:// echo, tokio-tungstenite over tokio-rustls (aws-lc-rs),
#                                 with the test certificate from test_tls_files (ECDSA P-256)
#   tokio-rustls-4k               the same with a 4 KiB read buffer
#
# The broadcast servers take --capacity N (messages per room's channel,
# default 1024) where they have a channel; the TLS server's clients trust
# $TLS_DIR/ca.pem.

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
# Where test_tls_files keeps the throwaway test CA and server certificate.
TLS_DIR=${TLS_DIR:-$ROOT/target/test-tls}

# is_peer NAME: whether server NAME comes from the peers/ crate.
is_peer() {
  case "$1" in
    wsloop | wsloop-no-latency | wsloop-broadcast | wsloop-tls | wsloop-base) return 1 ;;
    *) return 0 ;;
  esac
}

# build_servers NAME...: release builds of wsloop and loadgen, and of the
# peers/ crate only if one of the servers NAME is a peer (a cold peers build
# takes minutes). Fails on an unknown name, before anything runs.
build_servers() {
  local name need_peers=no
  for name in "$@"; do
    server_command "$name" >/dev/null || return 1
    if is_peer "$name"; then need_peers=yes; fi
  done
  (cd "$ROOT" && cargo build --release --quiet --bin wsloop --bin loadgen)
  if [ "$need_peers" = yes ]; then
    [ -f "$ROOT/peers/Cargo.toml" ] || { echo "peers/Cargo.toml is missing: cannot build $*" >&2; return 1; }
    (cd "$ROOT" && cargo build --release --quiet --manifest-path peers/Cargo.toml)
  fi
}

# listen_addr LOG: the HOST:PORT of the first `listening on HOST:PORT` line
# in LOG, or nothing. sed stops at that line itself: piping into `head`
# instead would kill the writer with SIGPIPE, which `set -o pipefail` turns
# into a failure (exit 141).
listen_addr() {
  sed -n '/listening on /{s/.*listening on \([0-9.:]*\).*/\1/p;q;}' "$1"
}

# print_machine: what the figures were measured on (the lscpu model line,
# CPU count, kernel), for the output of every measuring script.
print_machine() {
  local model
  model=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' || true)
  [ -n "$model" ] || model=$(sed -n '/^model name/{s/^model name[[:space:]]*: *//p;q;}' /proc/cpuinfo)
  echo "machine: Model name: ${model:-unknown}; $(nproc) CPUs; Linux $(uname -r)"
}

# test_tls_files: makes (once, and again before they expire) a throwaway test
# CA and a server certificate it signs, both ECDSA P-256, for 127.0.0.1 and
# localhost, in $TLS_DIR: ca.pem (what clients trust), server.pem and
# server.key (PKCS#8). Never committed: target/ is ignored, and the keys are
# made on each machine. Prints nothing on success.
test_tls_files() {
  local dir=$TLS_DIR
  tls_files_fresh() { [ -f "$dir/server.key" ] && openssl x509 -checkend 86400 -noout -in "$dir/server.pem" >/dev/null 2>&1; }
  tls_files_fresh && return 0
  command -v openssl >/dev/null || { echo "test_tls_files: openssl is missing" >&2; return 1; }
  mkdir -p "$dir"
  # Scripts may ask at once: one makes the files while the others wait.
  (
    flock 8
    tls_files_fresh && exit 0
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    {
      openssl req -x509 "${ec[@]}" -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 30 \
        -subj "/CN=wsloop test CA (throwaway)" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
        openssl req "${ec[@]}" -keyout "$dir/server.key" -out "$dir/server.csr" -subj "/CN=localhost" &&
        printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
          "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$dir/server.ext" &&
        openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
          -days 30 -extfile "$dir/server.ext" -out "$dir/server.pem"
    } >"$dir/openssl.log" 2>&1 || { cat "$dir/openssl.log" >&2; echo "test_tls_files: openssl failed" >&2; exit 1; }
  ) 8>"$dir/.lock"
}

# server_command NAME: the command line that runs server NAME on a free port.
server_command() {
  local peers="$ROOT/peers/target/release"
  case "$1" in
    wsloop) echo "$ROOT/target/release/wsloop --listen 127.0.0.1:0 --max-connections 100000 --stats-interval 0" ;;
    wsloop-no-latency) echo "$(server_command wsloop) --no-latency" ;;
    wsloop-base)
      [ -x "${WSLOOP_BASE:-}" ] || { echo "wsloop-base: set WSLOOP_BASE to a wsloop binary (scripts/build-base.sh COMMIT)" >&2; return 1; }
      local current
      current=$(server_command wsloop)
      echo "$WSLOOP_BASE ${current#* }"
      ;;
    wsloop-broadcast) echo "$(server_command wsloop) --mode broadcast" ;;
    wsloop-tls)
      test_tls_files || return 1
      echo "$(server_command wsloop) --tls-cert $TLS_DIR/server.pem --tls-key $TLS_DIR/server.key"
      ;;
    minimal) echo "$peers/peer-minimal --listen 127.0.0.1:0" ;;
    fastwebsockets) echo "$peers/peer-fastwebsockets --listen 127.0.0.1:0" ;;
    tokio-tungstenite-4k) echo "$peers/peer-tokio-tungstenite --listen 127.0.0.1:0 --read-buffer 4096" ;;
    tokio-tungstenite) echo "$peers/peer-tokio-tungstenite --listen 127.0.0.1:0" ;;
    minimal-broadcast) echo "$peers/peer-minimal-broadcast --listen 127.0.0.1:0" ;;
    fastwebsockets-broadcast) echo "$peers/peer-fastwebsockets-broadcast --listen 127.0.0.1:0" ;;
    tokio-tungstenite-broadcast) echo "$peers/peer-tokio-tungstenite-broadcast --listen 127.0.0.1:0" ;;
    tokio-rustls)
      test_tls_files || return 1
      echo "$peers/peer-tokio-rustls --listen 127.0.0.1:0 --tls-cert $TLS_DIR/server.pem --tls-key $TLS_DIR/server.key"
      ;;
    tokio-rustls-4k) echo "$(server_command tokio-rustls) --read-buffer 4096" ;;
    *) echo "unknown server: $1" >&2; return 1 ;;
  esac
}

# is_tls NAME: whether server NAME speaks wss://.
is_tls() {
  case "$1" in
    wsloop-tls | tokio-rustls*) return 0 ;;
    *) return 1 ;;
  esac
}

# server_url NAME: the URL loadgen connects to for server NAME at
# $SERVER_ADDR, and the flags it needs for it (--ca for a TLS server).
server_url() {
  if is_tls "$1"; then
    echo "wss://$SERVER_ADDR/ --ca $TLS_DIR/ca.pem"
  else
    echo "ws://$SERVER_ADDR/"
  fi
}

# start_server NAME LOG [PREFIX...]: starts server NAME (optionally under a
# prefix such as `taskset -c 0`), waits for its address.
# Sets SERVER_PID and SERVER_ADDR.
start_server() {
  local name=$1 log=$2
  shift 2
  local command
  command=$(server_command "$name") || return 1
  # shellcheck disable=SC2086 # the command is split into words on purpose
  start_process "$log" "$@" $command
}

# start_process LOG COMMAND...: runs any server command line in the
# background and waits for its `listening on HOST:PORT` line.
# Sets SERVER_PID and SERVER_ADDR.
start_process() {
  local log=$1
  shift
  # Created here, not only by the background redirection: that happens in
  # the child, which may not have run yet when listen_addr first reads it
  # (sed on a missing file fails, and set -e ends the script).
  : >"$log"
  "$@" >"$log" 2>&1 &
  SERVER_PID=$!
  SERVER_ADDR=""
  for _ in $(seq 200); do
    SERVER_ADDR=$(listen_addr "$log")
    [ -n "$SERVER_ADDR" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "server did not start ($*); its log:" >&2
  cat "$log" >&2
  return 1
}

# stop_server [SECONDS]: SIGTERM, then SIGKILL if it lingers SECONDS (5).
stop_server() {
  [ -n "${SERVER_PID:-}" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq "$((${1:-5} * 20))"); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# cpu_ticks PID: user+system CPU time in clock ticks (see CLK_TCK).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# core_ticks CPU: "busy total" clock ticks of one CPU from /proc/stat. Busy
# includes softirq time, where loopback TCP does much of its work and which
# /proc/PID/stat does not charge to the process.
core_ticks() {
  awk -v cpu="cpu$1" '$1 == cpu { total = 0; for (i = 2; i <= 9; i++) total += $i; print total - $5 - $6, total }' /proc/stat
}

# cap_cpu PID PERCENT: moves process PID (all its threads, and those it
# starts later) into a cgroup allowed PERCENT of one CPU (CFS bandwidth, in
# 10 ms periods), on cgroup v2 or v1. Sets CAP_DIR for uncap_cpu. Needs
# root; returns 1 with a line on stderr where there is no cpu controller.
cap_cpu() {
  local pid=$1 percent=$2 period=10000
  local quota=$((period * percent / 100))
  if grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control || return 1
    CAP_DIR=/sys/fs/cgroup/wsloop-bench
    mkdir -p "$CAP_DIR" && echo "$quota $period" >"$CAP_DIR/cpu.max" || return 1
  elif [ -d /sys/fs/cgroup/cpu ] && [ -w /sys/fs/cgroup/cpu ]; then
    CAP_DIR=/sys/fs/cgroup/cpu/wsloop-bench
    mkdir -p "$CAP_DIR" && echo "$period" >"$CAP_DIR/cpu.cfs_period_us" &&
      echo "$quota" >"$CAP_DIR/cpu.cfs_quota_us" || return 1
  else
    echo "cap_cpu: no writable cgroup cpu controller (needs root)" >&2
    return 1
  fi
  echo "$pid" >"$CAP_DIR/cgroup.procs"
}

# uncap_cpu: removes cap_cpu's cgroup once its process has exited.
uncap_cpu() {
  # Not fatal: a cgroup left behind is reused by the next cap_cpu.
  [ -z "${CAP_DIR:-}" ] || rmdir "$CAP_DIR" 2>/dev/null || true
  CAP_DIR=""
}

# rss_kib PID: resident memory.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
