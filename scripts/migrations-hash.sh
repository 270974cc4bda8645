#!/usr/bin/env bash
# Prints the MigrationsHash of the migrations embedded in a built db-setup
# binary (the marker build.rs puts in it, see src/migrate/mod.rs
# PACKAGE_MARKER). `make package` writes it to migrations.sha256 beside the
# bootstrap; the CDK construct compares it with the template's MigrationsHash.
set -euo pipefail
bin=${1:?usage: scripts/migrations-hash.sh path/to/bootstrap}
[ -f "$bin" ] || { echo "migrations-hash: $bin not found" >&2; exit 1; }
found=$(LC_ALL=C grep -aoE 'db-setup-migrations-sha256:[0-9a-f]{64}' "$bin" | sort -u || true)
case "$(printf '%s' "$found" | grep -c . || true)" in
  1) printf '%s\n' "${found#db-setup-migrations-sha256:}" ;;
  0) echo "migrations-hash: $bin holds no migrations hash marker: is it a db-setup binary? rebuild it with make package" >&2; exit 1 ;;
  *) echo "migrations-hash: $bin holds several migrations hash markers" >&2; exit 1 ;;
esac
