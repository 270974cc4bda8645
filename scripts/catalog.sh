#!/usr/bin/env bash
# Rebuilds src/verify/catalog.json (`make catalog`, under scripts/servers.sh):
# the catalog the embedded migrations produce on an empty database, with the
# users step's group-role grants. The database and roles are dropped after.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cli=${CLI:-$ROOT/target/debug/db-setup-cli}
base="postgresql://$DB_SETUP_TEST_PG_USER:$DB_SETUP_TEST_PG_PASSWORD@$DB_SETUP_TEST_PG_HOST:$DB_SETUP_TEST_PG_PORT"
psql=${DB_SETUP_TEST_PG_BIN:+$DB_SETUP_TEST_PG_BIN/}psql
db=catalog_$$
prefix=catalog$$
cleanup() {
  "$psql" -X -q "$base/postgres" -c "DROP DATABASE IF EXISTS $db" \
    -c "DROP ROLE IF EXISTS ${prefix}_readwrite, ${prefix}_readonly, ${prefix}_tablecreator" >/dev/null
}
trap cleanup EXIT
"$psql" -X -q "$base/postgres" -c "CREATE DATABASE $db"
"$cli" catalog --database-url "$base/$db?sslmode=disable" --prefix "$prefix" > "$ROOT/src/verify/catalog.json.new"
mv "$ROOT/src/verify/catalog.json.new" "$ROOT/src/verify/catalog.json"
echo "src/verify/catalog.json: $(grep -c '": "' "$ROOT/src/verify/catalog.json") objects"
