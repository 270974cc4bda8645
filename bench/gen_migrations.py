#!/usr/bin/env python3
"""Writes N small generated migrations into DIR, one table each:

    0001_create_t_0001.sql   CREATE TABLE t_0001 (id bigint PRIMARY KEY, note text);

Names sort the same way in db-setup and node-pg-migrate (numeric prefix).

    bench/gen_migrations.py N DIR
"""

import sys
from pathlib import Path


def generate(count, directory):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(count)))
    for i in range(1, count + 1):
        n = str(i).zfill(width)
        (directory / f"{n}_create_t_{n}.sql").write_text(
            f"CREATE TABLE t_{n} (id bigint PRIMARY KEY, note text);\n"
        )
    return directory


def transactional_copy(src, dst):
    """The full schema as node-pg-migrate can run it: the no-transaction
    files with `CONCURRENTLY` and the directive removed (same final schema,
    every file in a transaction). Returns the names of the rewritten files."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    rewritten = []
    for f in sorted(src.iterdir()):
        if not f.name.endswith(".sql"):
            continue
        text = f.read_text()
        lines = text.splitlines(keepends=True)
        if any(line.strip() == "-- db-setup: no-transaction" for line in lines):
            lines = [line for line in lines if line.strip() != "-- db-setup: no-transaction"]
            text = "".join(lines).replace(" CONCURRENTLY", "")
            rewritten.append(f.name)
        (dst / f.name).write_text(text)
    return rewritten


if __name__ == "__main__":
    if len(sys.argv) != 3 or not sys.argv[1].isdigit():
        sys.exit(__doc__)
    generate(int(sys.argv[1]), sys.argv[2])
