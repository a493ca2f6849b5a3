#!/usr/bin/env bash
# Creates (once) the project's Python virtualenv under target/pyenv and prints
# its path. Everything Python that the tests and scripts use comes from here:
#   kosoku             drives the Autobahn TestSuite case files (scripts/autobahn.sh)
#   websockets         a server we did not write, for loadgen's interop test
#   prometheus_client  a real Prometheus text parser, for the /metrics test
#   selenium           drives headless Chromium for the monitor page's browser test
# Versions are pinned so that a run today and a run next month test the same thing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/target/pyenv"
stamp="$venv/.installed-v2"
packages=(kosoku==0.1.0 websockets==15.0.1 prometheus_client==0.22.1 selenium==4.51.0)

# Tests run in parallel and may all ask at once on a fresh checkout: one
# creates the virtualenv while the others wait for it.
mkdir -p "$root/target"
exec 9>"$root/target/.pyenv.lock"
flock 9
if [ ! -f "$stamp" ]; then
  python=${PYTHON:-python3}
  command -v "$python" >/dev/null || { echo "pyenv.sh: $python not found; install Python 3.10+" >&2; exit 1; }
  rm -rf "$venv"
  "$python" -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}" >&2
  touch "$stamp"
fi
echo "$venv"
