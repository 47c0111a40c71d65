#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on 127.0.0.1 for the test suite (Debian's postgresql
# package, installed when missing). Source this file: it exports TALLY_TEST_POSTGRES_URL.
#
#   source tests/servers/postgres.sh   # start (idempotent)
#   postgres_stop                      # stop
# It does not change the caller's shell options; each step checks its own result.

PG_HOME=${PG_HOME:-/tmp/tally-postgres}
PG_PORT=${PG_PORT:-54329}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# Runs a server command as the postgres user when we are root (PostgreSQL refuses to run as root).
pg_as() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

postgres_install() {
  if [ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/postgres" ]; then
    return 0
  fi
  echo "installing postgresql from Debian's packages..." >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2 || return 1
}

postgres_start() {
  postgres_install || return 1
  local bin
  bin=$(pg_bin)
  mkdir -p "$PG_HOME"
  [ "$(id -u)" = 0 ] && chown postgres "$PG_HOME"
  if [ ! -f "$PG_HOME/data/PG_VERSION" ]; then
    pg_as "$bin/initdb" -D "$PG_HOME/data" -A trust -U postgres >/dev/null || return 1
  fi
  if ! pg_as "$bin/pg_ctl" -D "$PG_HOME/data" status >/dev/null 2>&1; then
    pg_as "$bin/pg_ctl" -D "$PG_HOME/data" -l "$PG_HOME/server.log" -w \
      -o "-p $PG_PORT -k $PG_HOME -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
      start >/dev/null || { cat "$PG_HOME/server.log" >&2; return 1; }
  fi
  psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tc \
    "SELECT 1 FROM pg_database WHERE datname = 'tally_test'" | grep -q 1 \
    || psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE tally_test" >/dev/null \
    || return 1
  export TALLY_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/tally_test"
  echo "postgresql $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT, database tally_test" >&2
}

postgres_stop() {
  pg_as "$(pg_bin)/pg_ctl" -D "$PG_HOME/data" -m fast stop >/dev/null 2>&1 || true
}

postgres_start
