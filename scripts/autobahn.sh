#!/usr/bin/env bash
# Runs the Autobahn TestSuite cases 1.* to 10.* against wsloop in echo mode,
# through kosoku (which drives Autobahn's own case files), and fails on any
# FAILED case. Groups 12 and 13 are permessage-deflate, which tungstenite does
# not implement, so they are excluded (as the Autobahn README advises).
#
# Usage: scripts/autobahn.sh [--tls] [extra kosoku args, e.g. -i '5.*']
#   --tls   over wss://: wsloop with a throwaway certificate (made here, in
#           target/, never committed), and kosoku (which speaks ws:// only)
#           through scripts/tls_proxy.py, which opens a TLS connection to
#           wsloop for each of its connections and checks the certificate.
# Report: target/autobahn[-tls]/index.html (one page per case beside it);
# the tally line is also written to tally.txt there, so runs can be compared.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

tls=
if [ "${1:-}" = --tls ]; then
  tls=1
  shift
fi
venv=$(scripts/pyenv.sh)
cargo build --release --quiet --bin wsloop
report="$root/target/autobahn${tls:+-tls}"
log="$root/target/autobahn${tls:+-tls}-server.log"
rm -rf "$report"
mkdir -p "$report"

source scripts/lib/servers.sh
server_args=()
if [ -n "$tls" ]; then
  certs="$root/target/autobahn-certs"
  mkdir -p "$certs"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -keyout "$certs/key.pem" -out "$certs/cert.pem" -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
  server_args=(--tls-cert "$certs/cert.pem" --tls-key "$certs/key.pem")
fi
# Port 0: the server picks a free port and says which in its first log line.
start_process "$log" env RUST_LOG=info target/release/wsloop --listen 127.0.0.1:0 "${server_args[@]}"
server=$SERVER_PID
addr=$SERVER_ADDR
proxy=
trap 'kill $server ${proxy:-} 2>/dev/null || true' EXIT
target=$addr
if [ -n "$tls" ]; then
  exec 3< <("$venv/bin/python" scripts/tls_proxy.py "$addr" "$certs/cert.pem" localhost)
  proxy=$!
  read -r -t 10 proxy_port <&3 || { echo "autobahn.sh: the TLS proxy did not start" >&2; exit 1; }
  target="127.0.0.1:$proxy_port"
  echo "autobahn.sh: wsloop on wss://$addr (kosoku through the TLS proxy on $target); running cases 1-10"
else
  echo "autobahn.sh: wsloop on $addr; running cases 1-10 with kosoku"
fi

set +e
"$venv/bin/kosoku" "$target" -x '12.*' -x '13.*' -p 4 -o "$report" "$@"
kosoku_status=$?
set -e

# The server must have survived the whole suite, and stop cleanly.
kill -0 $server 2>/dev/null || { tail -n 20 "$log"; echo "autobahn.sh: wsloop died during the run" >&2; exit 1; }
kill -TERM $server
wait $server || { echo "autobahn.sh: wsloop did not exit 0 on SIGTERM" >&2; exit 1; }
[ -z "$proxy" ] || kill "$proxy" 2>/dev/null || true
trap - EXIT

"$venv/bin/python" - "$report" "$kosoku_status" <<'PY'
import collections, glob, json, sys
report, kosoku_status = sys.argv[1], int(sys.argv[2])
cases = [json.load(open(f)) for f in glob.glob(f"{report}/*_case_*.json")]
if not cases:
    sys.exit(f"autobahn.sh: no case results in {report} (kosoku exit {kosoku_status})")
verdicts = collections.Counter()
failed = []
for case in cases:
    worst = "FAILED" if "FAILED" in (case["behavior"], case["behaviorClose"]) else case["behavior"]
    verdicts[worst] += 1
    if worst == "FAILED":
        failed.append(f'  {case["id"]}: {case["description"][:70]} -> {case["result"]} / {case["resultClose"]}')
key = lambda c: [int(p) for p in c["id"].split(".")]
for case in sorted(cases, key=key):
    if case["behavior"] not in ("OK",):
        print(f'  {case["id"]:8} {case["behavior"]:14} {case["result"]}')
summary = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
print(f"autobahn.sh: {len(cases)} cases: {summary}")
open(f"{report}/tally.txt", "w").write(f"{len(cases)} cases: {summary}\n")
print(f"autobahn.sh: report in {report}/index.html")
if failed:
    print("autobahn.sh: FAILED cases:\n" + "\n".join(failed))
    sys.exit(1)
if kosoku_status != 0:
    sys.exit(f"autobahn.sh: kosoku exited with {kosoku_status}")
PY
