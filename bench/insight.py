#!/usr/bin/env python3
"""Times `db-setup-cli insight` on a generated catalog of 5,000 tables.

    scripts/servers.sh run -- python3 bench/insight.py [--tables 5000] [--runs 15]
                              [--cli target/release/db-setup-cli] [--doc docs/benchmarks.md]

Run by `make bench-insight` (and so by `make bench`), which starts PostgreSQL
16 + pgvector with scripts/servers.sh and builds the release CLI. The catalog:
N tables, each with a bigserial primary key (so a sequence) and a secondary
index, one in ten without a primary key, a few rows in one in fifty, then
ANALYZE: 5,000 tables, 5,000 sequences and ~9,500 indexes. Each run is the
real CLI process (start, connect, the pipelined queries, JSON out), timed
from outside. Prints the figure; with --doc, replaces (or appends) the section
between the markers below in that file. Standard library only.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- bench-insight: begin (written by bench/insight.py) -->"
END = "<!-- bench-insight: end -->"


def env(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"bench/insight.py: {name} is not set: run it under scripts/servers.sh run -- (make bench-insight)")
    return value


def url(db):
    return (f"postgresql://{env('DB_SETUP_TEST_PG_USER')}:{env('DB_SETUP_TEST_PG_PASSWORD')}@"
            f"{env('DB_SETUP_TEST_PG_HOST')}:{env('DB_SETUP_TEST_PG_PORT')}/{db}?sslmode=disable")


def psql(db, sql):
    bin_dir = os.environ.get("DB_SETUP_TEST_PG_BIN", "")
    exe = str(Path(bin_dir) / "psql") if bin_dir else "psql"
    subprocess.run([exe, "-X", "-q", "-v", "ON_ERROR_STOP=1", url(db).replace("?sslmode=disable", "")],
                   input=sql, text=True, check=True, stdout=subprocess.DEVNULL)


def generate(db, tables, batch=250):
    psql("postgres", f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}")
    psql(db, "CREATE EXTENSION IF NOT EXISTS vector")
    for start in range(0, tables, batch):
        parts = ["BEGIN;"]
        for i in range(start, min(start + batch, tables)):
            pk = "" if i % 10 == 0 else " PRIMARY KEY"
            parts.append(f"CREATE TABLE t_{i:05d} (id bigserial{pk}, v text, n int, at timestamptz DEFAULT now());")
            parts.append(f"CREATE INDEX t_{i:05d}_n ON t_{i:05d} (n);")
            if i % 50 == 0:
                parts.append(f"INSERT INTO t_{i:05d} (v, n) SELECT 'v' || g, g FROM generate_series(1, 200) g;")
        parts.append("COMMIT;")
        psql(db, "\n".join(parts))
    psql(db, "ANALYZE")


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs visible, {platform.system()} {platform.release()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--cli", default=str(ROOT / "target" / "release" / "db-setup-cli"))
    ap.add_argument("--doc", help="write the section into this Markdown file")
    args = ap.parse_args()
    cli = Path(args.cli)
    if not cli.exists():
        sys.exit(f"bench/insight.py: {cli} not found: cargo build --release --bin db-setup-cli")
    db = "bench_insight"
    t0 = time.monotonic()
    generate(db, args.tables)
    generated = time.monotonic() - t0
    command = [str(cli), "insight", "--top", "10", "--database-url", url(db)]
    times = []
    for _ in range(args.runs + 1):  # the first run warms the caches and is not counted
        start = time.perf_counter()
        out = subprocess.run(command, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if out.returncode != 0:
            sys.exit(f"bench/insight.py: insight failed: {out.stderr}")
        times.append(elapsed)
    times = times[1:]
    median, low, high = statistics.median(times), min(times), max(times)
    def show(c):
        if "postgresql://" in c:
            return "postgresql://.../bench_insight"
        return os.path.relpath(c, ROOT) if c.startswith(str(ROOT)) else c

    shown = " ".join(show(c) for c in command)
    build = "release" if "release" in cli.parts else "debug"
    section = f"""{BEGIN}
## `insight` on 5,000 tables

`make bench-insight` (bench/insight.py): {args.tables:,} tables generated in
{generated:.0f} s (each with a `bigserial` key and a secondary index, one in ten without a
primary key, one in fifty with 200 rows, then ANALYZE), then {args.runs} timed runs of the
real CLI ({build} build), process start to exit, after one warm-up run:

| command | median | min–max |
|---|---|---|
| `{shown}` | {median * 1000:.0f} ms | {low * 1000:.0f}–{high * 1000:.0f} ms |

Machine: {machine()}; PostgreSQL 16 + pgvector from scripts/servers.sh on the same host.
{END}
"""
    print(section)
    if args.doc:
        doc = Path(args.doc)
        text = doc.read_text() if doc.exists() else ""
        if BEGIN in text and END in text:
            before, rest = text.split(BEGIN, 1)
            after = rest.split(END, 1)[1].lstrip("\n")
            text = before + section + ("\n" + after if after else "")
        else:
            text = text.rstrip("\n") + "\n\n" + section
        doc.write_text(text)
    psql("postgres", f"DROP DATABASE IF EXISTS {db}")


if __name__ == "__main__":
    main()
