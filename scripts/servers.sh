#!/usr/bin/env bash
# Local servers for tests, the demo and benchmarks, on free loopback ports:
#   - PostgreSQL 16 + pgvector from the pgserver wheel (scram-sha-256 over TCP)
#   - PostgreSQL 15 from Debian with TLS forced (a test CA made here), for TLS tests
#   - Secrets Manager from moto in server mode
#
#   scripts/servers.sh start DIR [pg16] [pg15tls] [moto]   (default: all three)
#   scripts/servers.sh stop DIR
#   scripts/servers.sh run -- CMD ...   start all in a temp dir, run CMD with the
#                                       environment below, stop them whatever CMD does
#
# DB_SETUP_PG16_SETTINGS: extra `-c name=value` options for PostgreSQL 16, after
# the test defaults (a later -c wins): the benchmarks run it durable with
#   DB_SETUP_PG16_SETTINGS="-c fsync=on -c max_connections=100 ..."
#
# `start` writes DIR/env, a file of `export` lines:
#   DB_SETUP_TEST_PG_URL     admin URL of PostgreSQL 16 (user postgres, with password)
#   DB_SETUP_TEST_PG_HOST/PORT/USER/PASSWORD, DB_SETUP_TEST_PG_BIN (its psql etc.)
#   DB_SETUP_TEST_TLS_PORT   PostgreSQL 15, TLS only; certificate for host name "localhost"
#   DB_SETUP_TEST_TLS_PASSWORD, DB_SETUP_TEST_TLS_CA, DB_SETUP_TEST_TLS_WRONG_CA
#   AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (moto)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PG15_BIN=${PG15_BIN:-/usr/lib/postgresql/15/bin}

log() { printf 'servers: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# PostgreSQL refuses to run as root: as root, run it as the `postgres` user.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

own_for_pg() {
  if [ "$(id -u)" = 0 ]; then chown -R postgres: "$@"; fi
}

pgserver_bin() {
  local bin
  bin=$("$VENV/bin/python" -c 'import pgserver, pathlib; print(pathlib.Path(pgserver.__file__).parent / "pginstall" / "bin")' 2>/dev/null) ||
    die "pgserver is not installed in $VENV (run: make setup)"
  echo "$bin"
}

# As root, the postgres user must be able to execute the binaries; a venv under
# a 0700 directory (root's home, a `mktemp -d` checkout) is not reachable, so
# copy the installation next to the data. The binaries and libraries find
# libpq by a relative RPATH ($ORIGIN/../../../pgserver.libs from pginstall/bin,
# one more ../ from pginstall/lib/postgresql), so the copy keeps the wheel's
# layout: DIR/pgpkg/pgserver/pginstall beside DIR/pgpkg/pgserver.libs.
reachable_pg_bin() {
  local bin=$1 dir=$2 install site
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$bin/postgres"; then
    install=$(dirname "$bin")
    site=$(dirname "$(dirname "$install")")
    [ -d "$site/pgserver.libs" ] || die "pgserver's libraries are missing: $site/pgserver.libs"
    mkdir -p "$dir/pgpkg/pgserver"
    cp -a "$install" "$dir/pgpkg/pgserver/pginstall"
    cp -a "$site/pgserver.libs" "$dir/pgpkg/pgserver.libs"
    chown -R postgres: "$dir/pgpkg"
    bin="$dir/pgpkg/pgserver/pginstall/bin"
    runuser -u postgres -- "$bin/initdb" --version >/dev/null 2>&1 ||
      die "the copy of pgserver in $dir/pgpkg does not run as postgres (check: ldd $bin/initdb)"
  fi
  echo "$bin"
}

# Starts a PostgreSQL data directory on a free port; another process can take
# the port between free_port and the bind, so a bind failure picks another
# (3 tries). Prints the port.
pg_start_on_free_port() {
  local pg_ctl=$1 data=$2 log=$3 opts=$4 port
  for _ in 1 2 3; do
    port=$(free_port)
    if as_pg "$pg_ctl" -D "$data" -l "$log" -w -t 30 -o "-h 127.0.0.1 -p $port $opts" start >/dev/null; then
      echo "$port"
      return 0
    fi
    grep -q "Address already in use" "$log" || return 1
    log "port $port was taken before PostgreSQL bound it: another one"
  done
  return 1
}

wait_for_port() {
  local port=$1 what=$2
  for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $port)))"; then
      return 0
    fi
    sleep 0.1
  done
  die "$what did not start listening on 127.0.0.1:$port"
}

start_pg16() {
  local dir=$1 bin port password
  bin=$(pgserver_bin) || exit 1
  bin=$(reachable_pg_bin "$bin" "$dir") || exit 1
  password=$(openssl rand -hex 16)
  mkdir -p "$dir/pg16"
  printf '%s\n' "$password" >"$dir/pg16/pwfile"
  own_for_pg "$dir/pg16"
  as_pg "$bin/initdb" -D "$dir/pg16/data" -U postgres --pwfile="$dir/pg16/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-instructions >"$dir/pg16/initdb.log" 2>&1 ||
    { cat "$dir/pg16/initdb.log" >&2; die "initdb (PostgreSQL 16) failed"; }
  # Like an estate's own rules: logins of roles named *_hbareject are refused
  # over TCP whatever their password (SQLSTATE 28000, as a pg_hba.conf reject
  # rule or an RDS refusal gives); first match wins, so the rule goes first.
  { printf 'host all /_hbareject$ 127.0.0.1/32 reject\n'; cat "$dir/pg16/data/pg_hba.conf"; } >"$dir/pg16/pg_hba.conf"
  mv "$dir/pg16/pg_hba.conf" "$dir/pg16/data/pg_hba.conf"
  own_for_pg "$dir/pg16"
  port=$(pg_start_on_free_port "$bin/pg_ctl" "$dir/pg16/data" "$dir/pg16/log" \
    "-k $dir/pg16 -c max_connections=300 -c fsync=off -c shared_buffers=64MB ${DB_SETUP_PG16_SETTINGS:-}") ||
    { cat "$dir/pg16/log" >&2; die "PostgreSQL 16 did not start"; }
  # RDS's role for IAM database authentication; here a plain stand-in.
  as_pg "$bin/psql" -X -q -h "$dir/pg16" -p "$port" -U postgres -d postgres -c "CREATE ROLE rds_iam NOLOGIN" >/dev/null ||
    die "could not create the rds_iam stand-in role"
  cat >>"$dir/env" <<EOF
export DB_SETUP_TEST_PG_HOST=127.0.0.1
export DB_SETUP_TEST_PG_PORT=$port
export DB_SETUP_TEST_PG_USER=postgres
export DB_SETUP_TEST_PG_PASSWORD=$password
export DB_SETUP_TEST_PG_URL=postgresql://postgres:$password@127.0.0.1:$port/postgres
export DB_SETUP_TEST_PG_BIN=$bin
export DB_SETUP_TEST_PG_LOG=$dir/pg16/log
export DB_SETUP_TEST_PG_DATA=$dir/pg16/data
export DB_SETUP_TEST_PG_SOCKET=$dir/pg16
EOF
  echo "$bin" >"$dir/pg16/bin"
  log "PostgreSQL 16 + pgvector on 127.0.0.1:$port"
}

make_test_certs() {
  local d=$1
  openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj "/CN=db-setup test CA" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj "/CN=db-setup wrong CA" \
    -keyout "$d/wrong-ca.key" -out "$d/wrong-ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >"$d/server.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 3 -extfile "$d/server.ext" -out "$d/server.crt" 2>/dev/null
  chmod 600 "$d/server.key"
}

start_pg15tls() {
  local dir=$1 port password
  [ -x "$PG15_BIN/postgres" ] || die "Debian's PostgreSQL 15 is missing ($PG15_BIN): apt-get install postgresql-15"
  password=$(openssl rand -hex 16)
  mkdir -p "$dir/pg15"
  make_test_certs "$dir/pg15"
  printf '%s\n' "$password" >"$dir/pg15/pwfile"
  own_for_pg "$dir/pg15"
  as_pg "$PG15_BIN/initdb" -D "$dir/pg15/data" -U postgres --pwfile="$dir/pg15/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >"$dir/pg15/initdb.log" 2>&1 ||
    { cat "$dir/pg15/initdb.log" >&2; die "initdb (PostgreSQL 15) failed"; }
  # TLS only over TCP, as RDS does with rds.force_ssl = 1.
  printf 'local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n' \
    >"$dir/pg15/data/pg_hba.conf"
  own_for_pg "$dir/pg15"
  port=$(pg_start_on_free_port "$PG15_BIN/pg_ctl" "$dir/pg15/data" "$dir/pg15/log" \
    "-k $dir/pg15 -c ssl=on -c ssl_cert_file=$dir/pg15/server.crt -c ssl_key_file=$dir/pg15/server.key -c fsync=off") ||
    { cat "$dir/pg15/log" >&2; die "PostgreSQL 15 (TLS) did not start"; }
  cat >>"$dir/env" <<EOF
export DB_SETUP_TEST_TLS_PORT=$port
export DB_SETUP_TEST_TLS_PASSWORD=$password
export DB_SETUP_TEST_TLS_CA=$dir/pg15/ca.crt
export DB_SETUP_TEST_TLS_WRONG_CA=$dir/pg15/wrong-ca.crt
EOF
  log "PostgreSQL 15 with TLS on 127.0.0.1:$port (certificate for localhost)"
}

start_moto() {
  local dir=$1 port
  [ -x "$VENV/bin/moto_server" ] || die "moto is not installed in $VENV (run: make setup)"
  port=$(free_port)
  mkdir -p "$dir/moto"
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/moto/log" 2>&1 &
  echo $! >"$dir/moto/pid"
  wait_for_port "$port" "moto"
  cat >>"$dir/env" <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_EC2_METADATA_DISABLED=true
EOF
  log "Secrets Manager (moto) on 127.0.0.1:$port"
}

start() {
  local dir=$1; shift
  local which=("$@")
  [ ${#which[@]} -gt 0 ] || which=(pg16 pg15tls moto)
  mkdir -p "$dir"
  own_for_pg "$dir"
  : >"$dir/env"
  for s in "${which[@]}"; do
    case $s in
      pg16) start_pg16 "$dir" ;;
      pg15tls) start_pg15tls "$dir" ;;
      moto) start_moto "$dir" ;;
      *) die "unknown server $s (pg16, pg15tls, moto)" ;;
    esac
  done
}

stop() {
  local dir=$1
  if [ -f "$dir/pg16/bin" ] && [ -d "$dir/pg16/data" ]; then
    as_pg "$(cat "$dir/pg16/bin")/pg_ctl" -D "$dir/pg16/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ -d "$dir/pg15/data" ]; then
    as_pg "$PG15_BIN/pg_ctl" -D "$dir/pg15/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ -f "$dir/moto/pid" ]; then
    kill "$(cat "$dir/moto/pid")" 2>/dev/null || true
  fi
}

run() {
  [ "${1:-}" = "--" ] && shift
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/db-setup-servers.XXXXXX")
  chmod 755 "$dir"
  # shellcheck disable=SC2064
  trap "stop '$dir'; rm -rf '$dir'" EXIT
  trap 'exit 130' INT TERM
  start "$dir" ${DB_SETUP_SERVERS:-}
  # shellcheck disable=SC1091
  source "$dir/env"
  "$@"
}

cmd=${1:-}
shift || true
case $cmd in
  start) start "$@" ;;
  stop) stop "$@" ;;
  run) run "$@" ;;
  *) die "usage: $0 start DIR [pg16|pg15tls|moto]... | stop DIR | run -- CMD..." ;;
esac
