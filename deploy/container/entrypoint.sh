#!/bin/sh
# Container entry point: turns a mounted password file (Docker/Compose secret) into a libpq password
# file, then runs `neurolabel "$@"`. The password never enters the environment or config.toml.
#   NEUROLABEL_DB_PASSWORD_FILE   file holding the PostgreSQL password (e.g. /run/secrets/postgres_password)
set -eu

if [ -n "${NEUROLABEL_DB_PASSWORD_FILE:-}" ]; then
    [ -r "$NEUROLABEL_DB_PASSWORD_FILE" ] || { echo "neurolabel: cannot read $NEUROLABEL_DB_PASSWORD_FILE" >&2; exit 2; }
    passfile="${PGPASSFILE:-${TMPDIR:-/tmp}/neurolabel.pgpass}"
    umask 077
    # libpq's format host:port:database:user:password, with \ and : escaped in the password.
    printf '*:*:*:*:%s\n' "$(head -n 1 "$NEUROLABEL_DB_PASSWORD_FILE" | sed -e 's/\\/\\\\/g' -e 's/:/\\:/g')" > "$passfile"
    export PGPASSFILE="$passfile"
fi
exec neurolabel "$@"
