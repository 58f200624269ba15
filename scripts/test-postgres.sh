#!/bin/bash
# A throwaway PostgreSQL for the store's tests, on 127.0.0.1 only.
#   eval "$(scripts/test-postgres.sh start)"   # prints export NETWATCH_TEST_POSTGRES=… and PG_TEST_DIR=…
#   scripts/test-postgres.sh stop "$PG_TEST_DIR"
# Needs root and Debian's postgresql package (apt-get install -y postgresql).
set -euo pipefail
case "${1:-}" in
  start)
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$bin" ] || { echo "no PostgreSQL server: apt-get install -y postgresql" >&2; exit 2; }
    dir=$(mktemp -d /tmp/netwatch-pg.XXXXXX); chown postgres:postgres "$dir"
    # a free port: ask the kernel for one, then hand it to PostgreSQL
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    su postgres -c "$bin/initdb -D $dir/data -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8" >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    su postgres -c "$bin/pg_ctl -D $dir/data -o '-k $dir -c listen_addresses=127.0.0.1 -p $port -c fsync=off' -l $dir/log -w start" >/dev/null \
      || { cat "$dir/log" >&2; exit 1; }
    echo "export NETWATCH_TEST_POSTGRES=postgres://postgres@127.0.0.1:$port PG_TEST_DIR=$dir"
    ;;
  stop)
    dir=${2:?usage: $0 stop DIR}
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    su postgres -c "$bin/pg_ctl -D $dir/data -m fast -w stop" >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
