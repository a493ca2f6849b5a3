#!/usr/bin/env bash
# The project's test command (the README's, and what CI runs): every unit and
# integration test, the Autobahn TestSuite conformance run, the monitor page
# in headless Chromium (scripts/browser-test.sh), then every other script
# once with its shortest settings (scripts/check-scripts.sh, about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets
scripts/autobahn.sh
scripts/browser-test.sh
scripts/check-scripts.sh
