# A throwaway PostgreSQL 15 cluster for the tests and benchmarks; sourced by ./test and
# bench/*.sh. `pg_start` creates a cluster in a temp dir, starts it on a free loopback
# port and exports CORRAL_TEST_POSTGRES_URL (a superuser URL; each test creates its own
# database there); `pg_stop` stops it and removes the directory. As root the server runs
# as the `postgres` user (it refuses to run as root).
#
# PG_BIN: where initdb and pg_ctl are (default: Debian's /usr/lib/postgresql/15/bin, else
# the ones on PATH). PG_FAST=1 turns fsync off (tests); benchmarks keep the defaults.

pg_find_bin() {
  PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
  if [[ ! -x $PG_BIN/initdb ]] && command -v initdb >/dev/null 2>&1; then
    PG_BIN=$(dirname "$(command -v initdb)")
  fi
  [[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]]
}

# Installs PostgreSQL 15 when missing: as root on Debian with apt; anywhere else it stops
# and names the command.
pg_ensure_installed() {
  pg_find_bin && return 0
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "postgres: installing postgresql-15 (the store tests run against it)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q postgresql-15
    unset PG_BIN
    pg_find_bin && return 0
  fi
  echo "postgres: the store tests need PostgreSQL 15 (initdb, pg_ctl). Install it with:" >&2
  echo "  apt-get install -y postgresql-15     (Debian/Ubuntu, as root)" >&2
  echo "or point PG_BIN at its bin directory, or set CORRAL_TEST_POSTGRES_URL to a server of your own." >&2
  return 1
}

pg_as_owner() {
  if [[ $(id -u) == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_start() {
  pg_ensure_installed || return 1
  PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/corral-pg.XXXXXX")
  if [[ $(id -u) == 0 ]]; then chown postgres: "$PG_DIR"; fi
  local port opts
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  opts="-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=400"
  if [[ ${PG_FAST:-0} == 1 ]]; then
    opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  fi
  # A throwaway CA and a server certificate for 127.0.0.1 and localhost.
  local tls=$PG_DIR/tls
  mkdir -p "$tls"
  if ! {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj "/CN=corral test CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "/CN=localhost" -keyout "$tls/server.key" -out "$tls/server.csr" &&
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >"$tls/ext" &&
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
      -CAcreateserial -days 2 -extfile "$tls/ext" -out "$tls/server.pem"
  } >"$PG_DIR/tls.log" 2>&1; then
    cat "$PG_DIR/tls.log" >&2; return 1
  fi
  chmod 0600 "$tls/server.key"
  chmod a+r "$tls/ca.pem" "$tls/server.pem"
  if [[ $(id -u) == 0 ]]; then chown -R postgres: "$tls"; fi
  opts="$opts -c ssl=on -c ssl_cert_file=$tls/server.pem -c ssl_key_file=$tls/server.key"
  if ! pg_as_owner "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres -E UTF8 --no-sync >"$PG_DIR/initdb.log" 2>&1; then
    cat "$PG_DIR/initdb.log" >&2; return 1
  fi
  if ! pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -o "$opts" -w -t 30 start >/dev/null; then
    cat "$PG_DIR/server.log" >&2; return 1
  fi
  export CORRAL_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
  export CORRAL_TEST_POSTGRES_CA="$tls/ca.pem"
  echo "postgres: throwaway PostgreSQL $("$PG_BIN/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
}

pg_stop() {
  [[ -n ${PG_DIR:-} && -d $PG_DIR ]] || return 0
  pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
  PG_DIR=
}
