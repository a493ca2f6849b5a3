#!/usr/bin/env bash
# build-base.sh COMMIT: builds wsloop (release) as it was at COMMIT, in a
# throwaway worktree under target/base/, and prints the binary's path. For
# the A/B runs that compare against an earlier tree in one script:
#   WSLOOP_BASE=$(scripts/build-base.sh 5a1b6d6) SERVERS="wsloop wsloop-base minimal" scripts/bench-latency.sh
# Progress goes to stderr; stdout is the path alone.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[ $# -eq 1 ] || { echo "usage: scripts/build-base.sh COMMIT" >&2; exit 2; }
commit=$(git rev-parse --short "$1^{commit}")
tree=$ROOT/target/base/$commit
if [ ! -d "$tree" ]; then
  git worktree add --detach "$tree" "$commit" >&2
fi
echo "build-base.sh: building $commit in $tree" >&2
(cd "$tree" && CARGO_TARGET_DIR=$ROOT/target/base/target-$commit cargo build --release --quiet --bin wsloop) >&2
echo "$ROOT/target/base/target-$commit/release/wsloop"
