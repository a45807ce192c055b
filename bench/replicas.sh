#!/usr/bin/env bash
# The lock race over three replicas (issue 13), release build: three `corral serve`
# processes on one PostgreSQL database, simultaneous /start each round; the same race on
# one SQLite file is the baseline in the same run. Starts a throwaway PostgreSQL 15
# (default settings, fsync on) and removes it after.
# Usage: bench/replicas.sh   (BENCH_ROUNDS=1000 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/postgres.sh
trap pg_stop EXIT
pg_start
CORRAL_BENCH_POSTGRES_URL=$CORRAL_TEST_POSTGRES_URL cargo bench --bench lock_race
