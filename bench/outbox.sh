#!/bin/sh
# The outbox's figures (issue 10), release mode: 200 progress updates at Slack's pace,
# 100 lock changes through a 60 s outage, and the request-path cost of outbox rows
# against the binary from before the outbox (BASE_REF, default: the commit this work
# started from), built here into the same target dir and compared in the same run.
# Usage: bench/outbox.sh   (about 4 minutes; BENCH_ONLY=updates|outage|hotpath for one)
set -eu
cd "$(dirname "$0")/.."
BASE_REF=${BASE_REF:-e4b969f}
BASE_BIN=target/bench-base/corral
if [ ! -x "$BASE_BIN" ]; then
  WT=$(mktemp -d)
  git worktree add --detach "$WT" "$BASE_REF" >/dev/null
  cargo build --release --quiet --manifest-path "$WT/Cargo.toml" --target-dir target
  mkdir -p target/bench-base
  cp target/release/corral "$BASE_BIN"
  git worktree remove --force "$WT"
  # The baseline overwrote target/release/corral: make cargo link ours again.
  touch src/main.rs
fi
BASELINE_BIN="$PWD/$BASE_BIN" cargo bench --bench outbox "$@"
