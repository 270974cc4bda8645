#!/usr/bin/env bash
# Creates the next numbered migration file: scripts/new-migration.sh NAME [DIR]
# (`make migration NAME=add_course_tags`). DIR defaults to migrations/. The
# number is one more than the highest in DIR, zero-padded like the others
# (three digits). The file starts with a header that explains the directives;
# it holds no SQL yet, and the build refuses a migration without SQL, so it
# cannot be deployed empty by mistake.
set -euo pipefail
name=${1:-}
dir=${2:-migrations}
fail() { echo "make migration: $*" >&2; exit 2; }
[ -n "$name" ] || fail "give a name: make migration NAME=add_course_tags (lower-case letters, digits and _)"
[[ "$name" =~ ^[a-z0-9_]+$ ]] ||
  fail "\`$name\` is not a valid name: use lower-case letters, digits and _ only, as in add_course_tags"
[[ "$name" =~ ^[0-9]+_ ]] &&
  fail "\`$name\` starts with a number: give the name only (add_course_tags), the number is chosen for you"
[ ${#name} -le 200 ] || fail "\`$name\` is too long (at most 200 characters)"
[ -d "$dir" ] || fail "$dir is not a directory"
last=0
width=3
shopt -s nullglob
for f in "$dir"/[0-9]*.sql; do
  base=${f##*/}
  digits=${base%%[!0-9]*}
  [ ${#digits} -gt "$width" ] && width=${#digits}
  n=$((10#$digits))
  [ "$n" -gt "$last" ] && last=$n
  [ "${base#"${digits}"_}" = "$name.sql" ] && fail "a migration named $name exists already: $f (never edit or reuse a deployed one: pick another name)"
done
file=$(printf '%s/%0*d_%s.sql' "$dir" "$width" $((last + 1)) "$name")
[ -e "$file" ] && fail "$file exists already"
cat > "$file" <<'HEADER'
-- What this migration does and why (one paragraph: the next reader has only this).
--
-- Runs inside a transaction with its history row (and, in batch mode, with the
-- other pending files): no BEGIN/COMMIT, no IF NOT EXISTS needed. Forward-only:
-- once deployed, never edit this file; fix forward with a new one.
--
-- Directives are comment lines at the very top of the file, before any SQL,
-- one per line, written as `-- db-setup: <directive>` (see docs/migrations.md):
--   no-transaction            run outside a transaction, each statement
--                             autocommitted and the file restarted from the top
--                             after a failure (needed for CREATE INDEX
--                             CONCURRENTLY, VACUUM): make every statement idempotent
--   statement-timeout=30min   this file's statement_timeout (ms, s, min, h)
--   lock-timeout=10s          this file's lock_timeout
-- An unknown directive, or one below the first statement, is refused.
--
-- squawk-ignore-file require-lock-timeout, require-statement-timeout -- the runner sets both before every migration

HEADER
echo "$file"
