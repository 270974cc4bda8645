#!/usr/bin/env python3
"""Fleet benchmark: N fresh databases on the local PostgreSQL 16 migrated by
`db-setup-cli fleet` (the embedded migrations), wall time per concurrency.

Run under scripts/servers.sh (it reads DB_SETUP_TEST_PG_*):
    scripts/servers.sh run -- python3 scripts/fleet_bench.py [--databases 50]
        [--concurrency 1,4,8,16] [--repeat 3] [--bin target/release/db-setup-cli]
Prints a Markdown table (median and range of the repetitions) for
docs/benchmarks.md. Every repetition recreates the databases, so each run
migrates N empty databases; they are dropped at the end.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def env(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{name} is not set: run under scripts/servers.sh run -- ...")
    return value


def psql(sql):
    subprocess.run(
        [os.path.join(env("DB_SETUP_TEST_PG_BIN"), "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=terse",
         "-h", env("DB_SETUP_TEST_PG_HOST"), "-p", env("DB_SETUP_TEST_PG_PORT"),
         "-U", env("DB_SETUP_TEST_PG_USER"), "-d", "postgres", "-c", sql],
        check=True, env={**os.environ, "PGPASSWORD": env("DB_SETUP_TEST_PG_PASSWORD"),
                              "PGOPTIONS": "-c client_min_messages=warning"},
        stdout=subprocess.DEVNULL,
    )


def recreate(names):
    for n in names:
        psql(f'DROP DATABASE IF EXISTS "{n}"')
        psql(f'CREATE DATABASE "{n}"')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--databases", type=int, default=50)
    ap.add_argument("--concurrency", default="1,4,8,16")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bin", default="target/release/db-setup-cli")
    args = ap.parse_args()
    names = [f"fleet_bench_{i}" for i in range(args.databases)]
    user, password = env("DB_SETUP_TEST_PG_USER"), env("DB_SETUP_TEST_PG_PASSWORD")
    host, port = env("DB_SETUP_TEST_PG_HOST"), env("DB_SETUP_TEST_PG_PORT")
    fleet = [{"name": n, "url": f"postgresql://{user}:{password}@{host}:{port}/{n}?sslmode=disable"}
             for n in names]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench") as tmp:
        path = os.path.join(tmp, "fleet.json")
        with open(path, "w") as f:
            json.dump(fleet, f)
        try:
            for c in [int(x) for x in args.concurrency.split(",")]:
                times = []
                for _ in range(args.repeat):
                    recreate(names)
                    start = time.perf_counter()
                    out = subprocess.run([args.bin, "fleet", "--concurrency", str(c), path],
                                         capture_output=True, text=True)
                    elapsed = (time.perf_counter() - start) * 1000
                    report = json.loads(out.stdout) if out.stdout else {}
                    if out.returncode != 0 or report.get("status") != "SUCCESS":
                        sys.exit(f"fleet failed at concurrency {c}: {out.stderr[-2000:]} {out.stdout[-2000:]}")
                    applied = {len(o["applied"]) for o in report["outcomes"]}
                    if len(report["outcomes"]) != args.databases or len(applied) != 1:
                        sys.exit(f"unexpected report at concurrency {c}: {applied}")
                    times.append(elapsed)
                rows.append((c, times, applied.pop()))
        finally:
            for n in names:
                psql(f'DROP DATABASE IF EXISTS "{n}"')
    base = statistics.median(rows[0][1])
    print(f"| concurrency | wall ms, median [min–max] of {args.repeat} | per database | speed-up vs {rows[0][0]} |")
    print("|---:|---:|---:|---:|")
    for c, times, _ in rows:
        med = statistics.median(times)
        print(f"| {c} | {med:.0f} [{min(times):.0f}–{max(times):.0f}] | {med / args.databases:.1f} ms "
              f"| {base / med:.2f}x |")
    print(f"\n{args.databases} databases, {rows[0][2]} migrations applied in each; binary {args.bin}")


if __name__ == "__main__":
    main()
