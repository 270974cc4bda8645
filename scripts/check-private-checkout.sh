#!/usr/bin/env bash
# Checks that the test servers start from a checkout the `postgres` user cannot
# read (a 0700 directory such as root's home or `mktemp -d`): scripts/servers.sh
# must then copy pgserver's installation where postgres can run it, with its
# shared libraries where the binaries' relative RPATH looks for them.
#
# Cheap: it copies scripts/ only, links the venv in, starts PostgreSQL 16 and
# runs one query that needs libpq (psql) and pgvector (a server library).
#   scripts/check-private-checkout.sh [VENV]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$(readlink -f "${1:-$ROOT/.venv}")
[ -x "$VENV/bin/python" ] || { echo "check-private-checkout: no venv at $VENV (run: make setup)" >&2; exit 1; }

checkout=$(mktemp -d) # mode 0700
trap 'rm -rf "$checkout"' EXIT
mkdir "$checkout/scripts"
cp "$ROOT/scripts/servers.sh" "$checkout/scripts/"
# The venv as the checkout sees it: its path (so pgserver's) lies under the 0700 directory.
ln -s "$VENV" "$checkout/.venv"

DB_SETUP_SERVERS=pg16 "$checkout/scripts/servers.sh" run -- bash -c '
  set -euo pipefail
  if [ "$(id -u)" = 0 ]; then
    case $DB_SETUP_TEST_PG_BIN in
      */pgpkg/pgserver/pginstall/bin) ;;
      *) echo "expected a copy of pgserver, the server runs from $DB_SETUP_TEST_PG_BIN" >&2; exit 1 ;;
    esac
  fi
  "$DB_SETUP_TEST_PG_BIN/psql" "$DB_SETUP_TEST_PG_URL" -v ON_ERROR_STOP=1 -Atq \
    -c "CREATE EXTENSION vector" -c "SELECT extversion FROM pg_extension WHERE extname = '"'"'vector'"'"'"
' >"$checkout/out" 2>&1 || { cat "$checkout/out" >&2; echo "check-private-checkout: FAILED from a 0700 checkout" >&2; exit 1; }
echo "test servers start from a 0700 checkout ($(id -un)): pgvector $(tail -n 1 "$checkout/out")"
