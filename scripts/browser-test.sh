#!/usr/bin/env bash
# The monitor page in a real browser: headless Chromium (Debian's package,
# installed here if missing) loads GET / from a fresh wsloop, sends messages
# through the page and checks the echo, the counters and the console
# (tests/browser/monitor_test.py). Screenshots: target/monitor.png (1280x900)
# and target/monitor-phone.png (390x844); target/monitor-failure.png on failure.
#
# Usage: scripts/browser-test.sh        (installing Chromium needs root and apt)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
started=$(date +%s)

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "browser-test.sh: installing Debian's chromium and chromium-driver"
  [ "$(id -u)" = 0 ] || { echo "browser-test.sh: Chromium is missing and installing it needs root" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

venv=$(scripts/pyenv.sh)
cargo build --release --quiet --bin wsloop
mkdir -p target
log="$root/target/browser-test-server.log"

# Port 0: the server picks a free port and says which in its first log line.
# A short stats interval, so the page's "recent" latency window fills during the test.
source scripts/lib/servers.sh
start_process "$log" env RUST_LOG=info target/release/wsloop --listen 127.0.0.1:0 --stats-interval 3s
server=$SERVER_PID
addr=$SERVER_ADDR
trap 'kill $server 2>/dev/null || true' EXIT
echo "browser-test.sh: wsloop on $addr; $(/usr/bin/chromium --version 2>/dev/null)"

set +e
# Bounded as a whole too: every wait inside is, but a wedged browser is not.
timeout 120 "$venv/bin/python" tests/browser/monitor_test.py "http://$addr/" "$root/target"
status=$?
set -e

kill -0 $server 2>/dev/null || { tail -n 20 "$log"; echo "browser-test.sh: wsloop died during the test" >&2; exit 1; }
kill -TERM $server
wait $server || { tail -n 20 "$log"; echo "browser-test.sh: wsloop did not exit 0 on SIGTERM" >&2; exit 1; }
trap - EXIT
if [ $status -ne 0 ]; then
  echo "browser-test.sh: FAILED (monitor_test.py exit $status; server log: $log)" >&2
  exit 1
fi
echo "browser-test.sh: passed in $(( $(date +%s) - started ))s"
