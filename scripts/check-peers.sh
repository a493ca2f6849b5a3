#!/usr/bin/env bash
# Builds the comparison peers (peers/, a crate of its own, never part of
# wsloop's build) and checks that each one works before anything is measured
# against it: starts it on port 0, reads the port from its one
# `listening on HOST:PORT` line, runs the checks for its kind against it,
# then stops it with SIGTERM and expects exit 0.
#   - every peer: scripts/echo_check.py (text and binary echo of 0 B to
#     1 MiB, ping/pong, close, pieces straddling reads, back-pressure); a
#     broadcast peer passes it too, as the only member of room /;
#   - the broadcast peers (peer-*-broadcast), then: scripts/broadcast_check.py
#     (rooms by path, the sender included, exactly once and in one order, room
#     isolation, a member reset mid-broadcast), and at exit the peer must
#     report 0 rooms open (every room freed with its last member) and 0
#     messages skipped (nobody in the checks lagged);
#   - the TLS peer (peer-tokio-rustls): started with a throwaway test CA and
#     ECDSA P-256 server certificate made at check time (test_tls_files in
#     scripts/lib/servers.sh, into target/test-tls/), echo_check.py runs over
#     wss:// trusting that CA (plus TLS 1.2 and 1.3, ALPN, plain text on the
#     TLS port), and a key that does not match its certificate must exit 2
#     with one line before listening.
#
# Usage: scripts/check-peers.sh [PEER...]   (default: all of them)
#   PEER is a binary name, optionally with its flags in one word, for example
#   'peer-tokio-tungstenite --read-buffer 4096'.
# Exits non-zero if any build, start, check or stop fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
started=$(date +%s)
# shellcheck source=scripts/lib/servers.sh
source scripts/lib/servers.sh

peers=("$@")
if [ ${#peers[@]} -eq 0 ]; then
  peers=(
    "peer-tokio-tungstenite"
    "peer-tokio-tungstenite --read-buffer 4096"
    "peer-fastwebsockets"
    "peer-minimal"
    "peer-tokio-tungstenite-broadcast"
    "peer-fastwebsockets-broadcast"
    "peer-minimal-broadcast"
    "peer-tokio-rustls"
    "peer-tokio-rustls --read-buffer 4096"
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
  kind=echo
  case "${cmd[0]}" in
    *-broadcast) kind=broadcast ;;
    peer-tokio-rustls) kind=tls ;;
  esac
  echo_args=()
  if [ "$kind" = tls ]; then
    if ! test_tls_files; then
      failed+=("$spec (test certificate)")
      continue
    fi
    # A key that is not the certificate's: one line, exit 2, never listening.
    status=0
    "$bin/${cmd[0]}" --listen 127.0.0.1:0 --tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/ca.key" \
      >"$logdir/${cmd[0]}.mismatch.log" 2>&1 || status=$?
    if [ "$status" -ne 2 ] || [ "$(wc -l <"$logdir/${cmd[0]}.mismatch.log")" -ne 1 ]; then
      cat "$logdir/${cmd[0]}.mismatch.log" >&2
      failed+=("$spec (a mismatched key: exit $status, expected 2 and one line)")
    fi
    cmd+=(--tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key")
    echo_args=(--ca "$TLS_DIR/ca.pem")
  fi
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

  if ! "$venv/bin/python" scripts/echo_check.py "$addr" "${echo_args[@]}"; then
    failed+=("$spec (echo check)")
  fi
  if [ "$kind" = broadcast ]; then
    if ! "$venv/bin/python" scripts/broadcast_check.py "$addr"; then
      failed+=("$spec (broadcast check)")
    fi
    # Every client has closed and seen the server close: what it reports at
    # exit must be a clean slate (a moment for the last leaves to land).
    sleep 0.3
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
    if [ "$kind" = broadcast ]; then
      report=$(sed -n 's/^.*: at exit: //p' "$log")
      echo "  at exit: ${report:-nothing reported}"
      case "$report" in
        "0 rooms open, 0 "*) ;;
        *) failed+=("$spec (at exit: ${report:-no report}; expected 0 rooms open, 0 skipped)") ;;
      esac
    fi
  fi
  server=""
done

if [ ${#failed[@]} -gt 0 ]; then
  printf 'check-peers.sh: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "check-peers.sh: all ${#peers[@]} peers passed ($(($(date +%s) - started))s)"
