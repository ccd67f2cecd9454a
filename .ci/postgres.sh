# shellcheck shell=bash
# A throwaway PostgreSQL server for zerodl's search tests.
#
#   source .ci/postgres.sh          # start it; exports ZERODL_TEST_PG_URL
#   bash .ci/postgres.sh            # start it; prints `export ZERODL_TEST_PG_URL=...`
#   bash .ci/postgres.sh stop       # stop it and delete its data directory
#
# Installs PostgreSQL from Debian's packages if no server binaries are found (needs root:
# apt-get install -y postgresql), creates a data directory under /tmp, starts the server
# as a non-root user (postgres, or nobody) on 127.0.0.1 with a free port (trust
# authentication on loopback only: it is a test server), and creates database
# zerodl_test.  The URL is also written to $ZERODL_PG_STATE/url (default
# /tmp/zerodl-pg/url) so other shells can read it; the server keeps running after the
# script returns until `bash .ci/postgres.sh stop` (or the machine goes away).
#
# Safe to source: it changes no shell options of the caller and returns non-zero (with a
# message) on failure instead of exiting.

_zerodl_pg_state="${ZERODL_PG_STATE:-/tmp/zerodl-pg}"

_zerodl_pg_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            echo "$d"
            return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 1
}

_zerodl_pg_start() (
    set -eu
    log() { echo "postgres.sh: $*" >&2; }
    state="$_zerodl_pg_state"

    # Already running from an earlier call? Reuse it (pg_isready: pg_ctl refuses root).
    if [ -f "$state/url" ] && [ -f "$state/bindir" ] && [ -d "$state/data" ]; then
        bindir="$(cat "$state/bindir")"
        port="$(sed -E 's#.*:([0-9]+)/.*#\1#' "$state/url")"
        if "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -d zerodl_test -U zerodl; then
            log "reusing the server in $state"
            cat "$state/url"
            return 0
        fi
        # A stale directory: make sure no server of ours still runs on it.
        if [ -f "$state/data/postmaster.pid" ]; then
            kill -INT "$(head -1 "$state/data/postmaster.pid")" 2>/dev/null || true
            sleep 1
        fi
    fi

    if ! bindir="$(_zerodl_pg_bindir)"; then
        if [ "$(id -u)" != 0 ]; then
            log "PostgreSQL is not installed and I am not root: apt-get install postgresql"
            return 1
        fi
        log "installing PostgreSQL from the Debian packages"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends postgresql >&2
        # Debian's package may create and start a cluster of its own; we do not need it.
        if command -v pg_lsclusters >/dev/null 2>&1; then
            pg_lsclusters -h 2>/dev/null | while read -r ver name _rest; do
                pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
            done
        fi
        bindir="$(_zerodl_pg_bindir)" || { log "no initdb after installing"; return 1; }
    fi

    # The server refuses to run as root: pick an unprivileged user.
    run_as=()
    if [ "$(id -u)" = 0 ]; then
        user=postgres
        id "$user" >/dev/null 2>&1 || user=nobody
        if command -v runuser >/dev/null 2>&1; then
            run_as=(runuser -u "$user" --)
        else
            run_as=(su -s /bin/sh "$user" -c)
        fi
    fi
    run() {
        if [ "${#run_as[@]}" -eq 0 ]; then
            "$@"
        elif [ "${run_as[0]}" = runuser ]; then
            "${run_as[@]}" "$@"
        else
            "${run_as[@]}" "$(printf '%q ' "$@")"
        fi
    }

    rm -rf "$state"
    mkdir -p "$state"
    chmod 755 "$state"
    [ "$(id -u)" = 0 ] && chown "$user" "$state"

    port="$(python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
)"
    log "initdb in $state/data (port $port)"
    run "$bindir/initdb" -D "$state/data" -U zerodl --auth=trust -E UTF8 --no-sync \
        >"$state/initdb.log" 2>&1 || { cat "$state/initdb.log" >&2; return 1; }
    run "$bindir/pg_ctl" -D "$state/data" -l "$state/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $state -c fsync=off \
            -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >&2 || { cat "$state/server.log" >&2; return 1; }
    run "$bindir/createdb" -h 127.0.0.1 -p "$port" -U zerodl zerodl_test >&2
    echo "$bindir" >"$state/bindir"
    url="postgresql://zerodl@127.0.0.1:$port/zerodl_test"
    echo "$url" >"$state/url"
    chmod 644 "$state/url"
    log "server up: $url (stop: bash .ci/postgres.sh stop)"
    echo "$url"
)

_zerodl_pg_stop() (
    state="$_zerodl_pg_state"
    [ -d "$state/data" ] || { echo "postgres.sh: no server in $state" >&2; return 0; }
    bindir="$(cat "$state/bindir" 2>/dev/null || _zerodl_pg_bindir)"
    if [ "$(id -u)" = 0 ]; then
        user="$(stat -c %U "$state/data")"
        runuser -u "$user" -- "$bindir/pg_ctl" -D "$state/data" -m fast -w stop >&2 || true
    else
        "$bindir/pg_ctl" -D "$state/data" -m fast -w stop >&2 || true
    fi
    rm -rf "$state"
    echo "postgres.sh: stopped" >&2
)

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # sourced: export the URL into the caller's shell
    if [ "${1:-}" = stop ]; then
        _zerodl_pg_stop
    elif _zerodl_pg_url="$(_zerodl_pg_start)"; then
        export ZERODL_TEST_PG_URL="$_zerodl_pg_url"
        unset _zerodl_pg_url
    else
        echo "postgres.sh: could not start PostgreSQL; the PostgreSQL tests will be skipped" >&2
        unset _zerodl_pg_url
        return 1
    fi
else
    case "${1:-start}" in
        start) url="$(_zerodl_pg_start)" || exit 1
               echo "export ZERODL_TEST_PG_URL=$url" ;;
        stop) _zerodl_pg_stop ;;
        url) cat "$_zerodl_pg_state/url" ;;
        *) echo "usage: $0 [start|stop|url]" >&2; exit 2 ;;
    esac
fi
