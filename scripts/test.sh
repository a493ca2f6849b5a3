#!/usr/bin/env bash
# The project's test command (the README's, and what CI runs): every unit and
# integration test, the Autobahn TestSuite conformance run over ws:// and over
# wss:// (which must give the same tally), the monitor page in headless
# Chromium (scripts/browser-test.sh), then every other script once with its
# shortest settings (scripts/check-scripts.sh, about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
# The bridge tests (tests/bridge.rs) start a real redis-server: Debian's
# package, installed here if missing (as browser-test.sh does for Chromium).
if ! command -v redis-server >/dev/null; then
  echo "test.sh: installing Debian's redis-server"
  [ "$(id -u)" = 0 ] || { echo "test.sh: redis-server is missing and installing it needs root: apt-get install redis-server" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi
cargo test --all-targets
scripts/autobahn.sh
scripts/autobahn.sh --tls
if ! cmp -s target/autobahn/tally.txt target/autobahn-tls/tally.txt; then
  echo "test.sh: Autobahn over wss:// ($(cat target/autobahn-tls/tally.txt)) differs from ws:// ($(cat target/autobahn/tally.txt))" >&2
  exit 1
fi
scripts/browser-test.sh
scripts/check-scripts.sh
