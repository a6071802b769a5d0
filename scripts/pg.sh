#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the tests and benchmarks.
#
#   scripts/pg.sh start   installs Debian's postgresql if it is missing, makes a cluster
#                         in $MIGRATOR_PG_DIR (default /tmp/migrator-pg), starts it on
#                         port $MIGRATOR_PG_PORT (default 55432) and prints its URL
#   scripts/pg.sh url     prints the URL (postgresql+psycopg://...)
#   scripts/pg.sh stop    stops it and deletes the cluster
#
# Trust authentication on 127.0.0.1 only: this server holds test data, nothing else.
set -euo pipefail
dir="${MIGRATOR_PG_DIR:-/tmp/migrator-pg}"
port="${MIGRATOR_PG_PORT:-55432}"
db=migrator_test
url="postgresql+psycopg://postgres@127.0.0.1:${port}/${db}"

bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

as_owner() {   # initdb and postgres refuse to run as root
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "${1:-}" in
start)
    if [ -z "$(bindir)" ]; then
        echo "pg.sh: installing Debian's postgresql" >&2
        if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
        $SUDO apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
    fi
    bin=$(bindir) || { echo "pg.sh: no PostgreSQL binaries after install" >&2; exit 1; }
    if [ -f "$dir/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        echo "$url"
        exit 0
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    chmod 700 "$dir"
    as_owner "$bin/initdb" -D "$dir" -U postgres --auth=trust --no-sync -E UTF8 >/dev/null
    # fsync off: a test cluster, thrown away after; every durability claim is SQLite's or the files'
    as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c fsync=off -c max_connections=200" \
        start >/dev/null
    as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -q -c "create database $db" postgres >/dev/null
    echo "$url"
    ;;
url)
    echo "$url"
    ;;
stop)
    bin=$(bindir) || exit 0
    if [ -d "$dir" ]; then
        as_owner "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
        rm -rf "$dir"
    fi
    ;;
*)
    echo "usage: scripts/pg.sh start|url|stop" >&2
    exit 2
    ;;
esac
