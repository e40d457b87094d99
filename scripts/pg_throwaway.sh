#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL server: `bash scripts/pg_throwaway.sh CMD ARGS...`.
#
# The server lives in a temporary directory (data and unix socket), listens on a free port of
# 127.0.0.1, trusts local connections, runs without fsync, and is stopped and removed when this
# script exits, however it exits. CMD gets TEST_DATABASE_URL pointing at it
# (postgresql+asyncpg://postgres@127.0.0.1:PORT/postgres).
#
# The server binaries are the newest of /usr/lib/postgresql/*/bin (or PG_BIN). When there are
# none, root installs Debian's `postgresql` package; anyone else gets CMD run without
# TEST_DATABASE_URL (the tests then run on SQLite only), and a line that says so.
# As root the server runs as the `postgres` system user (PostgreSQL refuses to run as root).
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

find_bin() {
    if [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/initdb" ]; then
        echo "$PG_BIN"
        return
    fi
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
        echo "$dir"
    fi
}

BIN=$(find_bin)
if [ -z "$BIN" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "pg_throwaway: no PostgreSQL server here; installing Debian's postgresql package" >&2
    export DEBIAN_FRONTEND=noninteractive
    # The package's own cluster is not started: a container has no init system, and a
    # policy-rc.d that refuses (exit 101) keeps its postinst from trying.
    apt-get update -qq >/dev/null
    apt-get install -y -qq postgresql >/dev/null
    BIN=$(find_bin)
fi
if [ -z "$BIN" ]; then
    echo "pg_throwaway: no PostgreSQL server binaries (/usr/lib/postgresql/*/bin): tests run on SQLite only" >&2
    exec "$@"
fi

DIR=$(mktemp -d "${TMPDIR:-/tmp}/pg-throwaway.XXXXXX")
chmod 755 "$DIR"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir "$DIR" --shell /bin/sh postgres
    fi
    chown postgres: "$DIR"
    if command -v runuser >/dev/null; then
        as_pg=(runuser -u postgres --)
    else
        as_pg=(su postgres -s /bin/sh -c '"$0" "$@"')
    fi
fi

# A free port: bind port 0, read what the kernel gave, let it go. Another process could take it
# in between; pg_ctl then fails and this script with it.
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')

stop() {
    "${as_pg[@]}" "$BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"${as_pg[@]}" "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust --encoding=UTF8 \
    --locale=C.UTF-8 --no-sync >/dev/null
"${as_pg[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 start -o "\
-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DIR \
-c fsync=off -c synchronous_commit=off -c full_page_writes=off \
-c max_connections=300 -c shared_buffers=64MB" >/dev/null || {
    cat "$DIR/server.log" >&2
    exit 1
}

export TEST_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:$PORT/postgres"
echo "pg_throwaway: PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT" >&2
# Not exec: the trap must outlive the command.
"$@"
