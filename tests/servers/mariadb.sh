#!/usr/bin/env bash
# Starts a throwaway MariaDB server (the RDS MySQL stand-in; Debian's mariadb-server package,
# installed when missing) on 127.0.0.1. Source this file: it exports TALLY_TEST_MYSQL_URL.
#
#   source tests/servers/mariadb.sh   # start (idempotent)
#   mariadb_stop                      # stop
# It does not change the caller's shell options; each step checks its own result.

MARIADB_HOME=${MARIADB_HOME:-/tmp/tally-mariadb}
MARIADB_PORT=${MARIADB_PORT:-33069}

mariadb_install() {
  if [ -x /usr/sbin/mariadbd ]; then
    return 0
  fi
  echo "installing mariadb-server from Debian's packages..." >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    mariadb-server mariadb-client >&2 || return 1
}

mariadb_client() { mariadb --protocol=socket -S "$MARIADB_HOME/mysqld.sock" -u root "$@"; }

mariadb_start() {
  mariadb_install || return 1
  mkdir -p "$MARIADB_HOME"
  if [ ! -d "$MARIADB_HOME/data/mysql" ]; then
    mariadb-install-db --no-defaults --user="$(id -un)" --datadir="$MARIADB_HOME/data" \
      --auth-root-authentication-method=normal >"$MARIADB_HOME/install.log" 2>&1 \
      || { cat "$MARIADB_HOME/install.log" >&2; return 1; }
  fi
  if ! mariadb_client -e "SELECT 1" >/dev/null 2>&1; then
    nohup /usr/sbin/mariadbd --no-defaults --user="$(id -un)" --datadir="$MARIADB_HOME/data" \
      --socket="$MARIADB_HOME/mysqld.sock" --pid-file="$MARIADB_HOME/mysqld.pid" \
      --bind-address=127.0.0.1 --port="$MARIADB_PORT" --skip-name-resolve \
      --innodb-flush-log-at-trx-commit=0 >"$MARIADB_HOME/server.log" 2>&1 &
    for _ in $(seq 1 100); do
      mariadb_client -e "SELECT 1" >/dev/null 2>&1 && break
      sleep 0.2
    done
  fi
  mariadb_client -e "SELECT 1" >/dev/null 2>&1 || { cat "$MARIADB_HOME/server.log" >&2; return 1; }
  mariadb_client -e "CREATE DATABASE IF NOT EXISTS tally_test; \
    CREATE USER IF NOT EXISTS 'tally'@'127.0.0.1' IDENTIFIED BY 'tally-test-only'; \
    GRANT ALL ON *.* TO 'tally'@'127.0.0.1'; FLUSH PRIVILEGES;" || return 1
  export TALLY_TEST_MYSQL_URL="mysql://tally:tally-test-only@127.0.0.1:$MARIADB_PORT/tally_test"
  echo "mariadb $(/usr/sbin/mariadbd --version | awk '{print $3}') on 127.0.0.1:$MARIADB_PORT, database tally_test" >&2
}

mariadb_stop() {
  if [ -f "$MARIADB_HOME/mysqld.pid" ]; then
    kill "$(cat "$MARIADB_HOME/mysqld.pid")" 2>/dev/null || true
  fi
}

mariadb_start
