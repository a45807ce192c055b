#!/usr/bin/env bash
# Acknowledgement of a signed `/release status` slash command under load.
#
# Starts `corral serve` (release build) on loopback, pre-signs one Slack slash-command
# request with the current timestamp, and loads it with wrk from a second process
# (20 connections). Prints requests/s, p50/p99 latency and the server's peak RSS.
# corral runs twice in the same run: on a SQLite file, then (unless PG=0) on a throwaway
# PostgreSQL 15 (tests/postgres.sh, default settings), and the two are compared.
# Unless BASELINE=0, the same signed request is sent, in the same run, to Slack's
# official Bolt for JavaScript (bench/bolt-js, installed with npm on first use) and Bolt
# for Python (bench/bolt_release.py, if `pip install slack_bolt` was done).
#
# Needs: wrk (apt-get install wrk), python3, curl; PostgreSQL 15 (apt-get install
# postgresql-15) unless PG=0; node+npm for the Bolt-JS baseline.
# CORRAL_BIN=path runs that binary instead of building this tree (before/after comparisons).
# CORRAL_BEFORE_BIN=path also runs that (older) binary in the same run, on the same
# PostgreSQL database (same schema) and a SQLite file of its own, right after this one,
# and prints its ratios too.
# Usage: bench/ack.sh [seconds]   (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-15}
CONNS=${CONNS:-20}
THREADS=${THREADS:-2}
# The per-user command limit is off by default (one user sends everything); USER_RATE=N
# (commands a minute, at most 10000) turns it on, so each command also pays its store
# round trip (the limit is a row in the store, shared by replicas).
USER_RATE=${USER_RATE:-0}
SECRET=8f742231b10e8888abcd99yyyzzz85a5
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# CORRAL_BIN runs another build (an older release, to compare) instead of this tree's.
if [[ -n ${CORRAL_BIN:-} ]]; then
  BIN=$(realpath "$CORRAL_BIN")
else
  cargo build --release --quiet
  BIN=$(realpath target/release/corral)
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

BODY='token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Frelease&text=status&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c'
cat > "$WORK/req.lua" <<'LUA'
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["X-Slack-Request-Timestamp"] = os.getenv("TS")
wrk.headers["X-Slack-Signature"] = os.getenv("SIG")
LUA

sign() {
  TS=$(date +%s)
  SIG=$(python3 -c 'import hmac,hashlib,sys; print("v0="+hmac.new(sys.argv[1].encode(), ("v0:"+sys.argv[2]+":"+sys.argv[3]).encode(), hashlib.sha256).hexdigest())' "$SECRET" "$TS" "$BODY")
  export TS SIG BODY
}

wait_up() {
  for _ in $(seq 1 200); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.05
  done
  echo "server at $1 did not start" >&2; return 1
}

# Runs wrk against $1 and prints: rps p50 p99 (ms)
load() {
  sign
  # The ack must be what Slack expects before we time it.
  code=$(curl -s -o "$WORK/ack.json" -w '%{http_code}' -X POST "$1" \
    -H 'Content-Type: application/x-www-form-urlencoded' \
    -H "X-Slack-Request-Timestamp: $TS" -H "X-Slack-Signature: $SIG" --data-binary "$BODY")
  if [ "$code" != 200 ]; then echo "ack check failed: HTTP $code $(cat "$WORK/ack.json")" >&2; return 1; fi
  wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$WORK/req.lua" "$1" > "$WORK/wrk.txt"
  python3 - "$WORK/wrk.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)", v)
    if not m:
        sys.exit(f"cannot read wrk latency {v!r}:\n{t}")
    n, u = m.groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = ms(re.search(r"^\s*50%\s+(\S+)", t, re.M).group(1))
p99 = ms(re.search(r"^\s*99%\s+(\S+)", t, re.M).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
errors = re.search(r"Socket errors: (.*)", t)
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {non2xx.group(1) if non2xx else 0} {'errors:'+errors.group(1).replace(' ','') if errors else 'ok'}")
PY
}

peak_rss_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# corral on one store URL: prints its line, sets C_RPS C_P99 C_RSS. One signed user floods
# on purpose here: the per-user command limit is off.
corral_run() { # label, database URL
  local label=$1 db=$2 port pid
  port=$(free_port)
  ( cd "$WORK" && CORRAL_LISTEN=127.0.0.1:$port SLACK_SIGNING_SECRET=$SECRET CORRAL_LOG=warn \
    CORRAL_SLACK_USER_RATE=$USER_RATE CORRAL_DATABASE_URL=$db exec "$BIN" serve 2>"$WORK/serve-$label.log" ) &
  pid=$!
  wait_up "http://127.0.0.1:$port/healthz"
  read -r C_RPS C_P50 C_P99 C_BAD C_ERR < <(load "http://127.0.0.1:$port/slack/commands")
  C_RSS=$(peak_rss_mb $pid)
  kill $pid; wait $pid 2>/dev/null || true
  printf "%-8s " "$label:"; echo "${C_RPS} req/s, p50 ${C_P50} ms, p99 ${C_P99} ms, peak RSS ${C_RSS} MB (non-2xx: ${C_BAD}, ${C_ERR})"
}

if [ "${PG:-1}" != 0 ]; then
  source tests/postgres.sh
  trap 'kill $(jobs -p) 2>/dev/null || true; pg_stop; rm -rf "$WORK"' EXIT
  pg_start
  corral_run corral-pg "$CORRAL_TEST_POSTGRES_URL"
  PG_RPS=$C_RPS PG_P99=$C_P99
fi
corral_run corral "sqlite://bench.db"
ratios() { # label, sqlite rps, pg rps, sqlite p99, pg p99
  python3 -c "import sys; s,p,sp,pp=map(float,sys.argv[2:6]); print(f'  {sys.argv[1]}PostgreSQL vs SQLite: throughput {p/s:.2f}x, p99 {pp/sp:.2f}x (target: within 2x)')" "$@"
}
if [ -n "${PG_RPS:-}" ]; then
  ratios "" "$C_RPS" "$PG_RPS" "$C_P99" "$PG_P99"
fi
if [[ -n ${CORRAL_BEFORE_BIN:-} && -n ${PG_RPS:-} ]]; then
  NOW_BIN=$BIN NOW_RPS=$C_RPS NOW_P99=$C_P99 NOW_RSS=$C_RSS
  BIN=$(realpath "$CORRAL_BEFORE_BIN")
  # The same database (a status only reads; the schema is the same).
  corral_run before-pg "$CORRAL_TEST_POSTGRES_URL"
  B_PG_RPS=$C_RPS B_PG_P99=$C_P99
  corral_run before "sqlite://bench-before.db"
  ratios "before: " "$C_RPS" "$B_PG_RPS" "$C_P99" "$B_PG_P99"
  BIN=$NOW_BIN C_RPS=$NOW_RPS C_P99=$NOW_P99 C_RSS=$NOW_RSS
fi

# Baselines, same signed request, same machine, same run: Bolt for JavaScript (HTTPReceiver)
# and Bolt for Python (its built-in server).
baseline() { # name, port, command...
  local name=$1 port=$2; shift 2
  BOLT_PORT=$port SLACK_SIGNING_SECRET=$SECRET "$@" >"$WORK/$name.log" 2>&1 &
  local pid=$!
  wait_up "http://127.0.0.1:$port/slack/events" || { echo "$name did not start" >&2; return 0; }
  local rps p50 p99 bad err rss
  read -r rps p50 p99 bad err < <(load "http://127.0.0.1:$port/slack/events")
  rss=$(peak_rss_mb $pid)
  kill $pid; wait $pid 2>/dev/null || true
  printf '%-8s %s req/s, p50 %s ms, p99 %s ms, peak RSS %s MB (non-2xx: %s, %s)\n' "$name:" "$rps" "$p50" "$p99" "$rss" "$bad" "$err"
  python3 -c "import sys; c,b,cp,bp,cr,br=map(float,sys.argv[1:7]); print(f'  corral vs {sys.argv[7]}: throughput {c/b:.1f}x, p99 {bp/cp:.1f}x lower, RSS {br/cr:.1f}x smaller')" \
    "$C_RPS" "$rps" "$C_P99" "$p99" "$C_RSS" "$rss" "$name"
}

if [ "${BASELINE:-1}" != 0 ]; then
  if command -v node >/dev/null; then
    [ -d bench/bolt-js/node_modules ] || (cd bench/bolt-js && npm install --silent --no-audit --no-fund)
    baseline bolt-js "$(free_port)" node bench/bolt-js/app.js
  else
    echo "bolt-js baseline skipped (no node)"
  fi
  if python3 -c 'import slack_bolt' 2>/dev/null; then
    baseline bolt-py "$(free_port)" python3 bench/bolt_release.py
  else
    echo "bolt-py baseline skipped (pip install slack_bolt to include it)"
  fi
fi
