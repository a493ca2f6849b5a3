#!/usr/bin/env bash
# The monitor page in a real browser: headless Chromium (Debian's package,
# installed here if missing) loads GET / from a fresh wsloop and is driven
# like a person would (tests/browser/monitor_test.py), twice:
#   1. echo mode: sends messages through the page, checks the echo, the
#      counters and the console, and that the room panel is off;
#   2. --mode broadcast --publish-token <random>: two browsers join one room
#      in the room panel; a message typed in one, one POST /publish from the
#      test and one from the page's form must appear in both.
# Screenshots: target/monitor.png (1280x900), target/monitor-phone.png
# (390x844), target/monitor-rooms.png, target/monitor-rooms-phone.png;
# target/monitor-*failure.png on failure.
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
source scripts/lib/servers.sh
echo "browser-test.sh: $(/usr/bin/chromium --version 2>/dev/null)"

# run_test NAME TEST_ARGS -- SERVER_ARGS: starts a fresh wsloop with
# SERVER_ARGS, runs monitor_test.py TEST_ARGS URL target against it, and
# stops it with SIGTERM, which must exit 0.
server=
trap '[ -z "$server" ] || kill $server 2>/dev/null || true' EXIT
scheme=http
run_test() {
  local name=$1 log="$root/target/browser-test-server-$1.log" test_args=() status
  shift
  while [ "$1" != -- ]; do test_args+=("$1"); shift; done
  shift
  # Port 0: the server picks a free port and says which in its first log line.
  # (Over https the address must be a name the certificate covers: 127.0.0.1 is.)
  # A short stats interval, so the page's "recent" latency windows fill during the test.
  start_process "$log" env RUST_LOG=info target/release/wsloop --listen 127.0.0.1:0 --stats-interval 3s "$@"
  server=$SERVER_PID
  echo "browser-test.sh: $name: wsloop${*:+ $*} on $SERVER_ADDR"
  set +e
  # Bounded as a whole too: every wait inside is, but a wedged browser is not.
  timeout 60 "$venv/bin/python" tests/browser/monitor_test.py "${test_args[@]}" "$scheme://$SERVER_ADDR/" "$root/target"
  status=$?
  set -e
  kill -0 $server 2>/dev/null || { tail -n 20 "$log"; echo "browser-test.sh: $name: wsloop died during the test" >&2; exit 1; }
  kill -TERM $server
  wait $server || { tail -n 20 "$log"; echo "browser-test.sh: $name: wsloop did not exit 0 on SIGTERM" >&2; exit 1; }
  server=
  if [ $status -ne 0 ]; then
    echo "browser-test.sh: $name: FAILED (monitor_test.py exit $status; server log: $log)" >&2
    exit 1
  fi
}

run_test echo --
# A fresh token each run, handed to the server and the test in their environment.
WSLOOP_PUBLISH_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export WSLOOP_PUBLISH_TOKEN
run_test rooms --rooms -- --mode broadcast
unset WSLOOP_PUBLISH_TOKEN

# The page over https:// (and its WebSocket over wss://), with a throwaway
# certificate that Chromium is told to trust by its public key's hash.
certs="$root/target/browser-test-certs"
mkdir -p "$certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -keyout "$certs/key.pem" -out "$certs/cert.pem" -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
spki=$(openssl x509 -pubkey -noout -in "$certs/cert.pem" | openssl pkey -pubin -outform der \
  | openssl dgst -sha256 -binary | base64)
export CHROMIUM_EXTRA_FLAGS="--ignore-certificate-errors-spki-list=$spki" MONITOR_TEST_CA="$certs/cert.pem"
scheme=https
run_test tls --screenshots-prefix tls- -- --tls-cert "$certs/cert.pem" --tls-key "$certs/key.pem"
echo "browser-test.sh: passed in $(( $(date +%s) - started ))s"
