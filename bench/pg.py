"""PostgreSQL 16 + pgvector for the benchmarks (the pgserver wheel, as
scripts/servers.sh uses it), started with durable settings (fsync on) and a
log line prefix that names the database, so a per-database
`log_statement = 'all'` can be read back from the log.

Admin work (CREATE/DROP DATABASE, CHECKPOINT) goes through psql over the Unix
socket as `postgres` (trust); the tools under test connect over TCP with a
password (scram-sha-256), as they would to RDS.
"""

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

LOG_PREFIX = "@@ %m [%p] db=%d app=%a: "


class BenchError(Exception):
    """A failure the runner reports in one clear line."""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def is_root():
    return os.getuid() == 0


def as_pg(cmd):
    """PostgreSQL refuses to run as root: run it as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if is_root() else list(cmd)


def pgserver_bin(venv):
    py = Path(venv) / "bin" / "python"
    if not py.exists():
        raise BenchError(f"{py} is missing: run `make setup` (it installs pgserver)")
    out = subprocess.run(
        [str(py), "-c", "import pgserver, pathlib; print(pathlib.Path(pgserver.__file__).parent / 'pginstall' / 'bin')"],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise BenchError("pgserver is not installed in the venv: run `make setup`")
    return Path(out.stdout.strip())


class Postgres:
    """One server in `workdir`; `stop()` is safe to call more than once."""

    def __init__(self, workdir, venv):
        self.workdir = Path(workdir)
        self.venv = Path(venv)
        self.port = None
        self.password = secrets.token_hex(16)
        self.bin = None
        self.data = self.workdir / "pg16" / "data"
        self.log = self.workdir / "pg16" / "log"
        self.socket_dir = self.workdir / "pg16"
        self.started = False

    # -- lifecycle -------------------------------------------------------
    def start(self):
        bin_dir = pgserver_bin(self.venv)
        base = self.workdir / "pg16"
        base.mkdir(parents=True, exist_ok=True)
        if is_root():
            # The postgres user must be able to execute the binaries; a venv
            # under a 0700 home is not reachable, so copy the installation in
            # the wheel's layout: the binaries find libpq by a relative RPATH
            # ($ORIGIN/../../../pgserver.libs), as scripts/servers.sh does.
            probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(bin_dir / "postgres")])
            if probe.returncode != 0:
                install = bin_dir.parent
                copy = base / "pgpkg" / "pgserver" / "pginstall"
                shutil.copytree(install, copy, symlinks=True)
                shutil.copytree(install.parent.parent / "pgserver.libs", base / "pgpkg" / "pgserver.libs", symlinks=True)
                bin_dir = copy / "bin"
        self.bin = bin_dir
        pwfile = base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if is_root():
            subprocess.run(["chown", "-R", "postgres:", str(self.workdir)], check=True)
        initdb = subprocess.run(
            as_pg([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", f"--pwfile={pwfile}",
                   "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions"]),
            capture_output=True, text=True,
        )
        if initdb.returncode != 0:
            raise BenchError(f"initdb failed:\n{initdb.stdout}{initdb.stderr}")
        self.port = free_port()
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "100",
            "shared_buffers": "128MB",
            # Durable, as a real server: fsync and synchronous_commit stay on.
            "fsync": "on",
            "synchronous_commit": "on",
            "log_line_prefix": f"'{LOG_PREFIX}'",
            "log_min_messages": "warning",
            "log_checkpoints": "off",
            "lc_messages": "'C'",
        }
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n# db-setup benchmarks\n")
            for k, v in settings.items():
                f.write(f"{k} = {v}\n")
        start = subprocess.run(
            as_pg([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"]),
            capture_output=True, text=True,
        )
        self.started = True
        if start.returncode != 0:
            raise BenchError(f"PostgreSQL did not start:\n{start.stderr}\n{self.read_log()[-3000:]}")

    def stop(self):
        if self.started and self.data.exists():
            subprocess.run(
                as_pg([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop"]),
                capture_output=True,
            )
            self.started = False

    # -- helpers ---------------------------------------------------------
    def version(self):
        return self.psql("SELECT version()").strip()

    def extension_version(self, name):
        return self.psql(f"SELECT default_version FROM pg_available_extensions WHERE name = '{name}'").strip()

    def url(self, db, port=None, sslmode=True):
        u = f"postgresql://postgres:{self.password}@127.0.0.1:{port or self.port}/{db}"
        return u + "?sslmode=disable" if sslmode else u

    def psql(self, sql, db="postgres"):
        """Runs SQL as the superuser over the Unix socket; returns stdout."""
        out = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-d", db, "-c", sql],
            capture_output=True, text=True,
        )
        if out.returncode != 0:
            raise BenchError(f"psql ({db}): {sql[:200]!r}: {out.stderr.strip()}")
        return out.stdout

    def create_db(self, name, template="template1"):
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')

    def drop_db(self, name):
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def settle(self):
        """Before a timed run: dirty buffers to disk, then the OS's (`sync`)."""
        self.psql("CHECKPOINT")
        os.sync()

    def log_size(self):
        try:
            return self.log.stat().st_size
        except FileNotFoundError:
            return 0

    def read_log(self, start=0):
        try:
            with open(self.log, "rb") as f:
                f.seek(start)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_log_quiet(self, pause=0.3):
        """The log is written asynchronously by the backends: let it settle."""
        last = -1
        for _ in range(20):
            size = self.log_size()
            if size == last:
                return
            last = size
            time.sleep(pause)
