#!/usr/bin/env bash
# Runs the Autobahn TestSuite cases 1.* to 10.* against wsloop in echo mode,
# through kosoku (which drives Autobahn's own case files), and fails on any
# FAILED case. Groups 12 and 13 are permessage-deflate, which tungstenite does
# not implement, so they are excluded (as the Autobahn README advises).
#
# Usage: scripts/autobahn.sh [extra kosoku args, e.g. -i '5.*']
# Report: target/autobahn/index.html (one page per case beside it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

venv=$(scripts/pyenv.sh)
cargo build --release --quiet --bin wsloop
report="$root/target/autobahn"
log="$root/target/autobahn-server.log"
rm -rf "$report"
mkdir -p "$report"

# Port 0: the server picks a free port and says which in its first log line.
source scripts/lib/servers.sh
start_process "$log" env RUST_LOG=info target/release/wsloop --listen 127.0.0.1:0
server=$SERVER_PID
addr=$SERVER_ADDR
trap 'kill $server 2>/dev/null || true' EXIT
echo "autobahn.sh: wsloop on $addr; running cases 1-10 with kosoku"

set +e
"$venv/bin/kosoku" "$addr" -x '12.*' -x '13.*' -p 4 -o "$report" "$@"
kosoku_status=$?
set -e

# The server must have survived the whole suite, and stop cleanly.
kill -0 $server 2>/dev/null || { tail -n 20 "$log"; echo "autobahn.sh: wsloop died during the run" >&2; exit 1; }
kill -TERM $server
wait $server || { echo "autobahn.sh: wsloop did not exit 0 on SIGTERM" >&2; exit 1; }
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
print(f"autobahn.sh: report in {report}/index.html")
if failed:
    print("autobahn.sh: FAILED cases:\n" + "\n".join(failed))
    sys.exit(1)
if kosoku_status != 0:
    sys.exit(f"autobahn.sh: kosoku exited with {kosoku_status}")
PY
