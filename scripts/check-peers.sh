#!/usr/bin/env bash
# Builds the comparison peers (peers/, a crate of its own, never part of
# wsloop's build) and checks that each one works before anything is measured
# against it: starts it on port 0, reads the port from its one
# `listening on HOST:PORT` line, runs scripts/echo_check.py against it (text
# and binary echo of 0 B to 1 MiB, ping/pong, close, pieces straddling reads),
# then stops it with SIGTERM and expects exit 0.
#
# Usage: scripts/check-peers.sh [PEER...]   (default: all of them)
#   PEER is a binary name, optionally with its flags in one word, for example
#   'peer-tokio-tungstenite --read-buffer 4096'.
# Exits non-zero if any build, start, check or stop fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

peers=("$@")
if [ ${#peers[@]} -eq 0 ]; then
  peers=(
    "peer-tokio-tungstenite"
    "peer-tokio-tungstenite --read-buffer 4096"
    "peer-fastwebsockets"
    "peer-minimal"
  )
fi

venv=$(scripts/pyenv.sh)
echo "check-peers.sh: building peers (release)"
cargo build --release --quiet --manifest-path peers/Cargo.toml
bin="$root/peers/target/release"
logdir="$root/peers/target/check-peers"
mkdir -p "$logdir"

server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; true' EXIT

failed=()
for spec in "${peers[@]}"; do
  read -r -a cmd <<<"$spec"
  log="$logdir/${cmd[0]}.log"
  echo "check-peers.sh: $spec"
  "$bin/${cmd[0]}" "${cmd[@]:1}" --listen 127.0.0.1:0 2>"$log" &
  server=$!
  addr=""
  for _ in $(seq 100); do
    # sed stops at the first match itself (`| head` could SIGPIPE sed under pipefail).
    addr=$(sed -n '/^listening on [0-9.:]*$/{s/^listening on //p;q;}' "$log")
    [ -n "$addr" ] && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$addr" ]; then
    cat "$log" >&2
    echo "check-peers.sh: $spec did not print 'listening on HOST:PORT'" >&2
    failed+=("$spec (start)")
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
    continue
  fi
  lines=$(wc -l <"$log")
  [ "$lines" -eq 1 ] || echo "check-peers.sh: warning: $spec printed $lines lines at start" >&2

  if ! "$venv/bin/python" scripts/echo_check.py "$addr"; then
    failed+=("$spec (echo check)")
  fi

  if ! kill -0 "$server" 2>/dev/null; then
    failed+=("$spec (died)")
    wait "$server" 2>/dev/null || true
  else
    kill -TERM "$server"
    status=0
    for _ in $(seq 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$server" 2>/dev/null; then
      kill -KILL "$server"
      failed+=("$spec (ignored SIGTERM)")
    fi
    wait "$server" || status=$?
    [ "$status" -eq 0 ] || failed+=("$spec (exit $status on SIGTERM)")
  fi
  server=""
done

if [ ${#failed[@]} -gt 0 ]; then
  printf 'check-peers.sh: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "check-peers.sh: all ${#peers[@]} peers passed"
