#!/bin/sh
# The official postgres image's start, in short: on the first start (an empty $PGDATA) create the
# cluster with POSTGRES_USER as its superuser, POSTGRES_PASSWORD required for every network client, and
# POSTGRES_DB, then run /docker-entrypoint-initdb.d/*.sql and *.sh; on every start, run the server.
set -eu

if [ "${1:-postgres}" != postgres ]; then exec "$@"; fi
[ $# -gt 0 ] && shift

user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres: POSTGRES_PASSWORD is not set: the database would accept anyone" >&2
        exit 1
    fi
    password_file=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" > "$password_file"
    initdb --username="$user" --pwfile="$password_file" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 >/dev/null
    rm -f "$password_file"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"

    pg_ctl -o "-c listen_addresses=''" -w start >/dev/null
    if [ "$database" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --username="$user" --dbname=postgres -q \
            -c "CREATE DATABASE \"$database\""
    fi
    for script in /docker-entrypoint-initdb.d/*; do
        case "$script" in
            *.sql) psql -v ON_ERROR_STOP=1 --username="$user" --dbname="$database" -q -f "$script" ;;
            *.sh) . "$script" ;;
        esac
    done
    pg_ctl -m fast -w stop >/dev/null
    echo "postgres: created the cluster in $PGDATA (user $user, database $database)"
fi

exec postgres -c listen_addresses='*' "$@"
