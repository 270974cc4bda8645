"""The machine, the versions, binary sizes, and the report: a console table
and docs/benchmarks.md, both from the results of one run."""

import json
import os
import platform
import subprocess
import zipfile
from pathlib import Path

from stats import cell, fmt_ratio, iqr, ms, ratio, summary

ELF_MACHINES = {0x3E: "x86_64", 0xB7: "arm64 (aarch64)"}


def _run(argv, cwd=None):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=30)
        return (out.stdout or out.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine():
    info = {"versions": {}}
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lscpu = _run(["lscpu"])
    hyper = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Hypervisor vendor")), "")
    info["cpu"] = cpu + (f" (virtual machine, {hyper})" if hyper else "")
    info["cores"] = os.cpu_count()
    try:
        kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
        info["ram"] = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        info["ram"] = "?"
    info["kernel"] = f"{platform.system()} {platform.release()} {platform.machine()}"
    os_name = ""
    try:
        os_name = next(line.split("=", 1)[1].strip('"') for line in Path("/etc/os-release").read_text().splitlines()
                       if line.startswith("PRETTY_NAME="))
    except (OSError, StopIteration):
        pass
    info["os"] = os_name
    fs = _run(["df", "-T", "/tmp"]).splitlines()
    info["tmp_fs"] = fs[-1].split()[1] if len(fs) > 1 else "?"
    info["versions"]["python"] = platform.python_version()
    return info


def versions(pg, root, cli, npm_bin):
    v = {}
    v["postgres"] = pg.psql("SHOW server_version").strip()
    v["pgvector"] = pg.extension_version("vector")
    v["psql"] = _run([str(pg.bin / "psql"), "--version"])
    v["node"] = _run(["node", "--version"])
    for pkg in ("node-pg-migrate", "pg"):
        try:
            v[pkg] = json.loads((root / "tests" / "interop" / "node_modules" / pkg / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            v[pkg] = "?"
    v["rustc"] = _run(["rustc", "--version"])
    commit = _run(["git", "rev-parse", "--short", "HEAD"], cwd=root)
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "migrations", "Cargo.toml",
                  "Cargo.lock"], cwd=root)
    v["db-setup"] = commit + (" + uncommitted changes in src/migrations" if dirty else "")
    v["settings"] = {k: pg.psql(f"SHOW {k}").strip() for k in
                     ("fsync", "synchronous_commit", "shared_buffers", "wal_level", "password_encryption")}
    return v


def binary_info(path, zip_path):
    """Size of a binary, its architecture, and the size of the zip Lambda
    gets (the binary as `bootstrap`, mode 755, deflated, as cargo lambda
    packs it), also at the highest deflate level."""
    path = Path(path)
    data = path.read_bytes()
    arch = ELF_MACHINES.get(int.from_bytes(data[18:20], "little"), "?") if data[:4] == b"\x7fELF" else "not ELF"
    sizes = {}
    for level in (6, 9):
        zi = zipfile.ZipInfo("bootstrap", date_time=(2024, 1, 1, 0, 0, 0))
        zi.external_attr = (0o100755 & 0xFFFF) << 16
        zi.compress_type = zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(zip_path, "w") as z:
            z.writestr(zi, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=level)
        sizes[level] = Path(zip_path).stat().st_size
    needed = [line.split()[0] for line in _run(["ldd", str(path)]).splitlines()
              if "=>" in line and "linux-vdso" not in line]
    return {"path": str(path), "bytes": len(data), "arch": arch, "zip": sizes[6], "zip9": sizes[9],
            "dynamic": needed}


def mib(n):
    return "n/a" if n is None else f"{n / 2**20:.1f} MiB ({n / 1e6:.1f} MB)"


def verdict(ok):
    return "n/a" if ok is None else ("**reached**" if ok else "**missed**")


def _s(results, key, tool):
    return results.get(key, {}).get(tool, {}).get("summary")


def _counts(results, key, tool):
    return results.get(key, {}).get(tool, {}).get("counts")


def _rt(c):
    return "n/a" if not c else f"{c['round_trips']} (+{c['connect_round_trips']})"


def _stmts(c):
    return "n/a" if not c else f"{c['logged']} / {c['statements']}"


def targets(r):
    """Each target: (text, figure, reached?)."""
    out = []
    noop_cli, noop_npm = _s(r, "noop", "db-setup-batch"), _s(r, "noop", "node-pg-migrate")
    x = ratio(noop_npm, noop_cli)
    out.append(("No-op deploy >= 10x faster than node-pg-migrate",
                f"{fmt_ratio(x, 1)} ({ms(noop_cli and noop_cli['median'])} ms vs {ms(noop_npm and noop_npm['median'])} ms)",
                None if x is None else x >= 10))
    c = _counts(r, "noop", "db-setup-batch")
    out.append(("No-op deploy <= 4 round trips after connect", "n/a" if not c else f"{c['round_trips']}",
                None if not c else c["round_trips"] <= 4))
    full_cli, full_ft = _s(r, "full", "db-setup-batch"), _s(r, "full", "floor-tracking")
    x = ratio(full_cli, full_ft)
    out.append(("Full schema <= 1.1x the floor with tracking", f"{fmt_ratio(x)} ({ms(full_cli and full_cli['median'])} ms "
                f"vs {ms(full_ft and full_ft['median'])} ms)", None if x is None else x <= 1.1))
    tx_cli, tx_npm = _s(r, "full_tx", "db-setup-batch"), _s(r, "full_tx", "node-pg-migrate")
    x = ratio(tx_npm, tx_cli)
    out.append(("Full schema >= 3x faster than node-pg-migrate (on the transactional variant: "
                "node-pg-migrate cannot run the files as they are)",
                f"{fmt_ratio(x)} ({ms(tx_cli and tx_cli['median'])} ms vs {ms(tx_npm and tx_npm['median'])} ms)",
                None if x is None else x >= 3))
    n = r.get("gen_meta", {}).get("count", "?")
    g_cli, g_ft, g_npm = _s(r, "gen", "db-setup-batch"), _s(r, "gen", "floor-tracking"), _s(r, "gen", "node-pg-migrate")
    x = ratio(g_cli, g_ft)
    out.append((f"{n} migrations, batch mode <= 1.0x the floor with tracking",
                f"{fmt_ratio(x)} ({ms(g_cli and g_cli['median'])} ms vs {ms(g_ft and g_ft['median'])} ms)",
                None if x is None else x <= 1.0))
    x = ratio(g_npm, g_cli)
    out.append((f"{n} migrations, batch mode >= 2x faster than node-pg-migrate",
                f"{fmt_ratio(x)} ({ms(g_cli and g_cli['median'])} ms vs {ms(g_npm and g_npm['median'])} ms)",
                None if x is None else x >= 2))
    fn = r.get("function", {})
    hwm = max(fn.get("hwm_noop", []) + fn.get("hwm_create", []), default=None)
    out.append(("Peak RSS <= 25 MB (the db-setup process, Create and no-op invokes)", mib(hwm),
                None if hwm is None else hwm <= 25e6))
    pkg = fn.get("package")
    zsize = (pkg or fn.get("binary") or {}).get("zip")
    which = (f"the cargo-lambda package ({pkg['arch']}{', built before the latest source change' if pkg.get('stale') else ''})" if pkg else
             "the host release build (x86_64): no cargo-lambda package found" if fn else "not measured")
    out.append(("Release zip <= 8 MB", f"{mib(zsize)}, {which}", None if zsize is None else zsize <= 8e6))
    return out


def console(r):
    lines = []

    def table(title, key, ref=None, ref_label=None, tools=None):
        res = r.get(key)
        if not res:
            return
        lines.append(f"\n{title}")
        lines.append(f"  {'tool':52s} {'median ms [min-max]':>26s} {'ratio':>8s}  round trips")
        refs = res.get(ref, {}).get("summary") if ref else None
        for k, v in res.items():
            if tools and k not in tools or "summary" not in v:
                continue
            x = ratio(v["summary"], refs) if refs else None
            lines.append(f"  {v['label'][:52]:52s} {cell(v['summary']):>26s} {fmt_ratio(x) if x else '':>8s}  "
                         f"{_rt(v.get('counts'))}")
        if ref_label:
            lines.append(f"  (ratio: median / median of {ref_label})")

    table("1. Full schema (migrations/, as is)", "full", "floor-tracking", "the floor with tracking")
    table("1b. Full schema, transactional variant (what node-pg-migrate can run)", "full_tx", "floor-tracking",
          "the floor with tracking")
    table("2. No-op deploy", "noop", "db-setup-batch", "db-setup-cli")
    table("   baselines", "noop_baselines")
    table(f"3. {r.get('gen_meta', {}).get('count', '?')} generated migrations", "gen", "floor-tracking",
          "the floor with tracking")
    lat = r.get("latency_meta")
    if lat:
        table(f"3b. The same through a delay line (+{2 * lat['one_way_ms']:.1f} ms per round trip, measured "
              f"{ms(lat['rtt'] and lat['rtt']['median'])} ms)", "gen_latency", "floor-tracking", "the floor with tracking")
    if r.get("scale"):
        lines.append("\n3c. Scaling, db-setup-cli: count, batch, each (median ms [min-max])")
        for n, v in r["scale"].items():
            lines.append(f"  {n:>6s}  {cell(v.get('db-setup-batch')):>24s}  {cell(v.get('db-setup-each')):>24s}")
    fn = r.get("function")
    if fn:
        lines.append("\n4. The function")
        b = fn["binary"]
        lines.append(f"  release binary (host {b['arch']}): {mib(b['bytes'])}, zip {mib(b['zip'])}")
        if fn.get("package"):
            p = fn["package"]
            lines.append(f"  cargo-lambda package ({p['arch']}): {mib(p['bytes'])}, zip {mib(p['zip'])}")
        lines.append(f"  start to ready: {cell(fn['ready'])} ms; no-op invoke cold {cell(fn['cold_noop'])} ms, "
                     f"warm {cell(fn['warm_noop'])} ms; Create {cell(fn['create'])} ms")
        lines.append(f"  peak RSS: no-op {mib(max(fn['hwm_noop'], default=None))}, "
                     f"Create {mib(max(fn['hwm_create'], default=None))}")
    lines.append("\nTargets")
    for text, figure, ok in targets(r):
        lines.append(f"  [{'ok ' if ok else ('-- ' if ok is None else 'MISS')}] {text}: {figure}")
    return "\n".join(lines)


# -- Markdown --------------------------------------------------------------------

def _tool_table(r, key, ref, ref_label, speed_ref=None, counts=True):
    res = r.get(key) or {}
    refs = res.get(ref, {}).get("summary") if ref else None
    srefs = res.get(speed_ref, {}).get("summary") if speed_ref else None
    head = "| tool | median ms [min–max] | IQR ms |"
    sep = "|---|---:|---:|"
    if ref:
        head += f" vs {ref_label} |"
        sep += "---:|"
    if speed_ref:
        head += " node-pg-migrate ÷ this |"
        sep += "---:|"
    if counts:
        head += " round trips after connect (+ connect) | logged / SQL statements |"
        sep += "---:|---:|"
    rows = [head, sep]
    for k, v in res.items():
        if "summary" not in v:
            continue
        row = f"| {v['label']} | {cell(v['summary'])} | {iqr(v['summary'])} |"
        if ref:
            row += f" {fmt_ratio(ratio(v['summary'], refs))} |"
        if speed_ref:
            row += f" {fmt_ratio(ratio(srefs, v['summary']), 1)} |"
        if counts:
            row += f" {_rt(v.get('counts'))} | {_stmts(v.get('counts'))} |"
        rows.append(row)
    return "\n".join(rows)


def _breakdown(r):
    """db-setup-cli: time in the run (its report's total_ms: lock taken to
    report) against the whole process."""
    rows = ["| scenario | process, median ms | in the run (`total_ms`) | of which the server executing the migrations (Σ `execution_ms`) | outside the run (start, read files, connect, unlock, exit) |",
            "|---|---:|---:|---:|---:|"]
    names = {"full": "full schema", "full_tx": "full schema, transactional variant", "noop": "no-op",
             "gen": f"{r.get('gen_meta', {}).get('count', '?')} migrations"}
    for key in ("full", "full_tx", "noop", "gen"):
        for tool in ("db-setup-batch", "db-setup-each"):
            v = r.get(key, {}).get(tool)
            if not v or not v.get("cli"):
                continue
            wall = v["summary"]["median"] * 1000
            total = summary([c["total_ms"] for c in v["cli"]])["median"]
            ex = summary([c["execution_ms"] for c in v["cli"]])["median"]
            mode = tool.split("-")[-1]
            rows.append(f"| {names[key]} ({mode}) | {wall:.1f} | {total:.0f} | {ex:.1f} | {wall - total:.1f} |")
    return "\n".join(rows)


def markdown(r, command):
    m = r["machine"]
    v = m["versions"]
    load = r.get("load", {}).get("summary") or {}
    cpu = r.get("cpu")
    others = cpu["others"] / cpu["seconds"] if cpu and cpu.get("seconds") else None
    busy = others is not None and others >= 0.15
    t = targets(r)
    out = []
    w = out.append
    w("# Benchmarks\n")
    w("<!-- Generated by bench/run (`make bench`) from one run; change bench/report.py, not this file. -->\n")
    w(f"Run on **{r['started']}** with `{command}` (`make bench` runs `bench/run`), db-setup `{v.get('db-setup')}`, "
      f"{r['seconds'] / 60:.1f} minutes, profile `{r['profile']}` (repetitions: full schema {r['reps']['full']}, "
      f"no-op {r['reps']['noop']}, generated {r['reps']['gen']}, scaling {r['reps']['scale']}, "
      f"function starts {r['reps']['fn_starts']}).\n")
    if cpu:
        w(f"CPU over the run ({cpu['seconds']:.0f} s on {m['cores']} cores): PostgreSQL {cpu['postgres']:.1f} s, the "
          f"tools and this harness {cpu['harness']:.1f} s, **other processes {cpu['others']:.1f} s** "
          f"({others * 100:.0f}% of one core on average); 1-minute load average {load.get('median', 0):.2f} "
          f"(median of {load.get('n', 0)} samples, the benchmark's own processes included).\n")
    if busy:
        w("**Busy machine:** other work (builds, tests) shared the CPUs while this ran, so absolute times are "
          "noisier and higher than on an idle machine. The tools were compared within this one run, "
          "interleaved, so the ratios are the figures to read.\n")
    else:
        w("The machine was otherwise quiet during this run. Timings on this virtual machine still drift by "
          "10–25% over minutes (disk, host); the tools were interleaved within the run, so compare ratios.\n")
    w("## Machine\n")
    w("| | |\n|---|---|")
    w(f"| CPU | {m['cpu']}, {m['cores']} cores |")
    w(f"| RAM | {m['ram']} |")
    w(f"| OS, kernel | {m['os']}, {m['kernel']} (`/tmp` on {m['tmp_fs']}) |")
    s = v.get("settings", {})
    w(f"| PostgreSQL | {v.get('postgres')} (pgserver wheel) + pgvector {v.get('pgvector')}; fsync={s.get('fsync')}, "
      f"synchronous_commit={s.get('synchronous_commit')}, shared_buffers={s.get('shared_buffers')}, "
      f"password_encryption={s.get('password_encryption')} |")
    w(f"| psql | {v.get('psql')} |")
    w(f"| node-pg-migrate | {v.get('node-pg-migrate')} with pg {v.get('pg')} on Node.js {v.get('node')} |")
    w(f"| db-setup | {v.get('rustc')}, release profile (opt-level s, LTO, strip) |")
    w(f"| harness | Python {v.get('python')} (standard library) |\n")

    w("## Method\n")
    w("- One PostgreSQL 16 server started by the harness, durable settings (fsync on), on loopback; every tool "
      "connects over TCP with a password (SCRAM-SHA-256), without TLS (`sslmode=disable`).")
    w("- A fresh database for every measurement (`CREATE DATABASE` from `template1`, or from a template that "
      "already holds the schema for the no-op runs), then `CHECKPOINT` and `sync` before the timed run; the "
      "databases are dropped after each scenario, untimed. PostgreSQL's defaults otherwise "
      "(max_connections 100, max_locks_per_transaction 64).")
    w("- Times are whole processes (start to exit) measured by the harness: `db-setup-cli migrate --dir DIR`, "
      "`node node-pg-migrate.js up -m DIR` (default options: one transaction, verbose), and psql.")
    w("- The tools are interleaved: each repetition runs every tool once, the order rotated by one each time. "
      "Figures are the median with [min–max] and the inter-quartile range.")
    w("- The floors are psql sessions over the same files (`psql -X -q -v ON_ERROR_STOP=1 -f driver.sql`, the "
      "files included with `\\i`). When every file is transactional the driver runs under `-1` (one "
      "transaction). When some files carry `-- db-setup: no-transaction` (CONCURRENTLY statements cannot run "
      "in a transaction block), the driver wraps each run of consecutive transactional files in BEGIN/COMMIT "
      "and runs each no-transaction file in autocommit, still in one session: the same grouping as db-setup's "
      "batch mode. The same choice for both floors.")
    w("- \"Floor with tracking\" adds what any `pgmigrations` runner must do, in that session: "
      "`pg_advisory_lock`, `CREATE TABLE IF NOT EXISTS pgmigrations`, one history read, one `INSERT` per file "
      "(after the file, in its transaction), `pg_advisory_unlock`. psql sends each statement in its own round "
      "trip.")
    w("- Counts come from one extra, untimed run per tool: a TCP proxy between the tool and the server counts "
      "client turns (bytes sent, then the server answers: a round trip) and the protocol messages, and the "
      "database has `log_statement = 'all'`: *logged* is the number of statements the server logged (one per "
      "simple Query message, which may hold several SQL statements, or per extended-protocol execute), *SQL "
      "statements* splits those at top-level semicolons. The connection itself (startup, SCRAM) is counted "
      "apart. A pipelined batch is one turn when the client has written all of it before the first answer "
      "arrives, two when answers start arriving while it is still writing (db-setup's 4 or 5 below).")
    w("- Every run is checked: the same number of relations as the reference run, and one history row per file "
      "for the tools that track.\n")

    w("## Targets\n")
    w("| target | this run | |\n|---|---|---|")
    for text, figure, ok in t:
        w(f"| {text} | {figure} | {verdict(ok)} |")
    w("\nJudged strictly on the medians of this run; where the spreads overlap, a small miss or pass is "
      "within the noise (the tables give [min–max] and IQR). Where a target is missed, *Where the time goes* "
      "says why.\n")

    meta = r.get("full_meta", {})
    w("## 1. Full schema into an empty database\n")
    w(f"`migrations/`: {meta.get('files')} files; {len(meta.get('no_tx', []))} of them are no-transaction "
      f"({', '.join(meta.get('no_tx', []))}): each statement of those runs alone, autocommitted, in every tool "
      "that can run them.\n")
    w(_tool_table(r, "full", "floor-tracking", "floor with tracking") + "\n")
    att = r.get("full_npm_attempts", {})
    if att:
        w("**node-pg-migrate cannot apply these files.** Every SQL migration runs inside a transaction "
          "(node-pg-migrate offers `pgm.noTransaction()` to JavaScript migrations only), and the file's SQL is "
          "sent as one multi-statement query, itself an implicit transaction block:\n")
        for name, a in att.items():
            w(f"- `up` {name}: exit {a['exit']} after {a['seconds'] * 1000:.0f} ms, while running "
              f"`{a['last_started']}`: `{a['error']}`; history afterwards: "
              f"{', '.join(a['recorded']) if a['recorded'] else 'empty (rolled back)'}.")
        w("")
    w("So the comparison with node-pg-migrate uses a **transactional variant** of the schema: the "
      f"no-transaction files ({', '.join(meta.get('rewritten', []))}) with `CONCURRENTLY` and the directive "
      "removed, everything else unchanged. It builds the same schema on an empty database (same relations), "
      "with every file in a transaction. All four tools run it:\n")
    w(_tool_table(r, "full_tx", "floor-tracking", "floor with tracking", speed_ref="node-pg-migrate") + "\n")

    w("## 2. No-op deploy (everything applied)\n")
    w("The database already holds the full schema and its 12 history rows (written by db-setup-cli; "
      "node-pg-migrate reads the same table). The floor is one psql session: `pg_advisory_lock`, the history "
      "read, `pg_advisory_unlock`.\n")
    w(_tool_table(r, "noop", "db-setup-batch", "db-setup-cli") + "\n")
    w("What a process costs before any migration work (same method, no migration):\n")
    w(_tool_table(r, "noop_baselines", None, None, counts=False) + "\n")
    c = _counts(r, "noop", "db-setup-batch")
    if c:
        w("The statements db-setup-cli sent in the no-op run, as the server logged them:\n")
        w("```sql")
        for line in c["log_sample"]:
            w(line.replace("\n", " ")[:160])
        w("```\n")
    cn = _counts(r, "noop", "node-pg-migrate")
    if cn:
        w("node-pg-migrate's, for comparison:\n")
        w("```sql")
        for line in cn["log_sample"]:
            w(line.replace("\n", " ")[:160])
        w("```\n")

    n = r.get("gen_meta", {}).get("count", "?")
    w(f"## 3. {n} generated migrations\n")
    w(f"`bench/gen_migrations.py {n} DIR`: one file per table, `CREATE TABLE t_0001 (id bigint PRIMARY KEY, "
      "note text);`. All transactional, so the floors run under `psql -1`. db-setup-cli runs in `batch` mode "
      "(one transaction, every migration and its history row pipelined) and in `each` mode (one transaction and "
      "one commit per migration).\n")
    w(_tool_table(r, "gen", "floor-tracking", "floor with tracking", speed_ref="node-pg-migrate") + "\n")
    lat = r.get("latency_meta")
    if lat and r.get("gen_latency"):
        w(f"The same {n} migrations with a network between the tools and the server: a delay line (bench/wire.py) "
          f"forwards every chunk {lat['one_way_ms']:.1f} ms after it arrived, in each direction, without holding "
          f"back what follows (a pipelined burst is delayed once). A round trip through it measured "
          f"{cell(lat['rtt'])} ms (the nominal {2 * lat['one_way_ms']:.1f} ms plus the proxy's own cost): about a "
          "client and RDS in neighbouring availability zones. Fewer repetitions; the connection's own round trips "
          "(startup, SCRAM) are delayed too.\n")
        w(_tool_table(r, "gen_latency", "floor-tracking", "floor with tracking", speed_ref="node-pg-migrate",
                      counts=False) + "\n")
    if r.get("scale"):
        w(f"How db-setup-cli's time grows with the count (same method; the {n} row is the run above):\n")
        w("| migrations | batch: median ms [min–max] | per migration | each: median ms [min–max] | per migration |")
        w("|---:|---:|---:|---:|---:|")
        for count, vv in r["scale"].items():
            b, e = vv.get("db-setup-batch"), vv.get("db-setup-each")
            per = lambda s: "n/a" if not s else f"{s['median'] * 1000 / int(count):.2f} ms"  # noqa: E731
            w(f"| {count} | {cell(b)} | {per(b)} | {cell(e)} | {per(e)} |")
        w("")

    fn = r.get("function")
    if fn:
        w("## 4. The function\n")
        b = fn["binary"]
        w("| | |\n|---|---|")
        stale = " **(older than src/ or migrations/)**" if b.get("stale") else ""
        w(f"| release binary `target/release/db-setup` (host, {b['arch']}, built {b.get('built')}){stale} | "
          f"{mib(b['bytes'])} |")
        w(f"| its zip (`bootstrap`, deflate level 6 as cargo lambda; level 9) | {mib(b['zip'])}; {mib(b['zip9'])} |")
        if b.get("dynamic"):
            w(f"| its shared libraries | {', '.join(b['dynamic'])} |")
        p = fn.get("package")
        if p:
            stale = " **(older than src/ or migrations/: run `make package` for a current one)**" if p.get("stale") else ""
            w(f"| cargo-lambda package `{p.get('path')}` ({p['arch']}, built {p.get('built')} by `make package`: "
              f"`cargo lambda build --release --features vendored-openssl`){stale} | {mib(p['bytes'])} |")
            w(f"| its zip (deflate 6; 9) | {mib(p['zip'])}; {mib(p['zip9'])} |")
        else:
            w("| cargo-lambda package | not found (`target/lambda/db-setup/bootstrap`): build it with "
              "`cargo lambda build --release --arm64 --features vendored-openssl`, or pass `--package` |")
        w(f"| process start to ready (first `GET /runtime/invocation/next`) | {cell(fn['ready'])} ms (IQR {iqr(fn['ready'])}) |")
        w(f"| no-op invoke (Update, nothing to apply), first in the process | {cell(fn['cold_noop'])} ms |")
        w(f"| no-op invoke, later in the same process | {cell(fn['warm_noop'])} ms |")
        w(f"| Create on an empty database (the 12 embedded migrations) | {cell(fn['create'])} ms |")
        w(f"| peak RSS (VmHWM), no-op processes | {mib(max(fn['hwm_noop'], default=None))} (max of "
          f"{len(fn['hwm_noop'])}) |")
        w(f"| peak RSS (VmHWM), Create processes | {mib(max(fn['hwm_create'], default=None))} (max of "
          f"{len(fn['hwm_create'])}) |")
        w("")
        w("The no-op invoke is a CloudFormation Update (no `MigrationsHash`, no application users configured): "
          "read the admin secret, connect, lock, read the history, unlock, PUT the response. Create on an empty "
          "database applies the embedded migrations.\n")
        w("How: the host release binary runs as a process against a local Lambda Runtime API written in Python "
          "(bench/lambda_api.py, not `cargo lambda watch`), in the default direct response mode: an invoke is "
          "timed from the moment the event is handed over (`/next` answers) to the moment the CloudFormation "
          "response PUT arrives at the local ResponseURL. The admin secret is in moto (Secrets Manager "
          "emulator); each invoke reads it, so moto's latency is in the figures: a `GetSecretValue` from Python "
          f"takes {cell(fn.get('moto_get_secret'))} ms here. Peak RSS is the process's `VmHWM` from "
          "`/proc/PID/status`, read after its last invoke.\n")

    w("## Where the time goes\n")
    w("db-setup-cli's own report (`total_ms`: from taking the lock to the report) against the whole process:\n")
    w(_breakdown(r) + "\n")
    n = r.get("gen_meta", {}).get("count", "?")
    w("CPU time during the timed runs: the tool's own process (getrusage of the child) and the whole machine "
      "(busy time of all cores from `/proc/stat`, so the PostgreSQL backend, the tool, and anything else running; "
      "10 ms resolution; with the delay line, its Python threads count too). When the machine's CPU time is close to the wall time, one core was busy throughout: "
      "the run is bound by the server's CPU, not by waiting on round trips.\n")
    w(_cpu_table(r, [("gen", f"{n} migrations"), ("gen_latency", f"{n}, delay line")]) + "\n")
    w(profile_notes(r))

    w("## Not measured, and caveats\n")
    w("- The function runs on this x86_64 host, not in Lambda's Firecracker sandbox and not on arm64 (the "
      "deployed architecture): start time and RSS there will differ somewhat; sizes of the arm64 package are "
      "given when it has been built.")
    w("- Database and tools share one 2-core machine over loopback, where a round trip costs tens of "
      "microseconds; against RDS (a round trip of 0.5–1 ms inside a VPC, more across AZs) round trips weigh "
      "far more, which favours the tool with fewer of them.")
    w("- TLS is off for every tool (verify-full to RDS adds a handshake to each connection, the same for all).")
    w("- Timings move with disk state between runs; compare tools within one run.")
    w("- Observations from building the harness, not re-measured by each run (the lock-table limit of very large "
      "batches, what the function's start-to-ready time is made of): bench/README.md.\n")
    return "\n".join(out) + "\n", console(r)


def _cli_parts(v):
    """(process ms, in-run ms, server-execution ms) medians of a db-setup-cli entry."""
    wall = v["summary"]["median"] * 1000
    total = summary([c["total_ms"] for c in v["cli"]])["median"]
    ex = summary([c["execution_ms"] for c in v["cli"]])["median"]
    return wall, total, ex


def _cpu_table(r, keys):
    rows = ["| scenario | tool | process, median ms | CPU of the tool's process, median ms | CPU of the whole machine during the run (all cores), median ms |",
            "|---|---|---:|---:|---:|"]
    for key, name in keys:
        for k, v in (r.get(key) or {}).items():
            if "summary" not in v or not v.get("client_cpu_summary"):
                continue
            mc = v.get("machine_cpu_summary")
            rows.append(f"| {name} | {v['label']} | {ms(v['summary']['median'])} | "
                        f"{ms(v['client_cpu_summary']['median'])} | {ms(mc and mc['median'])} |")
    return "\n".join(rows)


def profile_notes(r):
    """Plain sentences from the figures: where db-setup's time goes, and for
    each missed target, what the figures say about it."""
    out = []
    w = out.append
    base = _s(r, "noop_baselines", "psql-select-1")
    node = _s(r, "noop_baselines", "node-start")
    nodepg = _s(r, "noop_baselines", "node-pg-select-1")
    noop_cli, noop_npm = _s(r, "noop", "db-setup-batch"), _s(r, "noop", "node-pg-migrate")
    if noop_cli and noop_npm and node:
        w(f"- **No-op.** node-pg-migrate's {ms(noop_npm['median'])} ms is mostly Node.js itself: starting node "
          f"costs {ms(node['median'])} ms, node + pg connecting and sending one query "
          f"{ms(nodepg and nodepg['median'])} ms. db-setup-cli's whole process takes {ms(noop_cli['median'])} ms, "
          f"against {ms(base and base['median'])} ms for psql to connect and run `SELECT 1`: what is left is "
          "process start and the connection (SCRAM), not the three round trips.")
    n = r.get("gen_meta", {}).get("count", "?")
    for key, label in (("full", "Full schema"), ("full_tx", "Full schema, transactional variant"),
                       ("gen", f"{n} migrations")):
        v = r.get(key, {}).get("db-setup-batch")
        ft = _s(r, key, "floor-tracking")
        fl = _s(r, key, "floor")
        if not v or not v.get("cli") or not ft:
            continue
        wall, total, ex = _cli_parts(v)
        c = _counts(r, key, "db-setup-batch")
        cf = _counts(r, key, "floor-tracking")
        w(f"- **{label}.** db-setup-cli: {wall:.0f} ms for the process; {total:.0f} ms of it in the run, where "
          f"the migrations themselves take {ex:.0f} ms (Σ `execution_ms`: in a transaction of several files, "
          "the gaps between the server's answers to consecutive files; of a lone file, measured by the server "
          "with its history row; of a no-transaction file, by the client); "
          f"{wall - total:.0f} ms outside the run (process start, reading and checksumming the files, "
          f"connecting, unlocking). The floor with tracking: {ft['median'] * 1000:.0f} ms"
          + (f", the floor without tracking {fl['median'] * 1000:.0f} ms" if fl else "")
          + (f", for {cf['round_trips']} round trips against db-setup's {c['round_trips']}" if c and cf else "")
          + "." + (" The server's work dominates every tool here; on loopback a round trip costs tens of "
                   "microseconds, so the round trips db-setup saves are worth little on this machine."
                   if key == "full" else ""))
    e = r.get("gen", {}).get("db-setup-each")
    b = r.get("gen", {}).get("db-setup-batch")
    if e and b and e.get("cli") and b.get("cli"):
        we, _, _ = _cli_parts(e)
        wb, _, _ = _cli_parts(b)
        w(f"- **`each` against `batch`, {n} migrations.** {we:.0f} ms against {wb:.0f} ms: `each` adds a "
          f"round trip and a commit (a WAL flush, fsync on) per migration, {(we - wb) / int(n):.2f} ms each "
          "here." if str(n).isdigit() else "")
    lat = r.get("gen_latency", {})
    lb, ln, lf = (lat.get(k, {}).get("summary") for k in ("db-setup-batch", "node-pg-migrate", "floor-tracking"))
    cb = _counts(r, "gen", "db-setup-batch")
    if lb and ln and lf:
        w(f"- **With a network.** Through the delay line ({2 * r['latency_meta']['one_way_ms']:.1f} ms per round "
          f"trip), {n} migrations take db-setup-cli (batch) {ms(lb['median'])} ms, the floor with tracking "
          f"{ms(lf['median'])} ms ({fmt_ratio(ratio(lb, lf))}), node-pg-migrate {ms(ln['median'])} ms "
          f"(node-pg-migrate ÷ db-setup = {fmt_ratio(ratio(ln, lb), 1)}): each round trip a tool sends now costs "
          "what it would cost against a remote server"
          + (f", while db-setup's batch makes {cb['round_trips']} round trips after connecting (as counted above)."
             if cb else "."))
    for text, figure, ok in targets(r):
        if ok is False:
            w(f"- **Missed: {text}** ({figure}). " + _missed_hint(r, text))
    return "\n".join(x for x in out if x) + "\n"


def _missed_hint(r, text):
    if text.startswith("Full schema <= 1.1x"):
        v = r.get("full", {}).get("db-setup-batch")
        ft = _s(r, "full", "floor-tracking")
        if v and v.get("cli") and ft:
            wall, total, ex = _cli_parts(v)
            return (f"Of db-setup's {wall:.0f} ms, {ex:.0f} ms are the migrations executing and {wall - total:.0f} ms "
                    f"the process outside the run; the floor with tracking needs {ft['median'] * 1000:.0f} ms in all. "
                    "Compare the spread: when the ranges overlap, the difference is the machine's noise, not the "
                    "tool.")
    if "floor with tracking" in text:
        v = r.get("gen", {}).get("db-setup-batch")
        f = r.get("gen", {}).get("floor-tracking")
        f0 = _s(r, "gen", "floor")
        if v and v.get("cli") and f:
            wall, total, ex = _cli_parts(v)
            ft = f["summary"]
            text = (f"db-setup's {wall:.0f} ms are {ex:.0f} ms of server execution (the CREATE TABLEs, timed by the "
                    f"gaps between the server's answers), {total - ex:.0f} ms of the rest of the run (the history "
                    f"rows in one INSERT, COMMIT, the lock), and "
                    f"{wall - total:.0f} ms outside it; the floor with tracking takes {ft['median'] * 1000:.0f} ms "
                    f"[{ms(ft['min'])}–{ms(ft['max'])}] against db-setup's [{ms(v['summary']['min'])}–"
                    f"{ms(v['summary']['max'])}].")
            mv, mf = v.get("machine_cpu_summary"), f.get("machine_cpu_summary")
            if mv and mf:
                text += (f" The machine's CPUs were busy {ms(mv['median'])} ms during db-setup's runs and "
                         f"{ms(mf['median'])} ms during the floor's (medians): about the wall time in both, so both "
                         "are bound by one busy core, the PostgreSQL backend doing the catalog work for each table, "
                         "not by waiting.")
            if f0:
                n = r.get("gen_meta", {}).get("count", "?")
                text += (f" All the tracking costs psql here ({n} INSERTs, each its own round trip) is the gap "
                         f"between the two floors, {(ft['median'] - f0['median']) * 1000:.0f} ms; db-setup writes "
                         "the same history rows in one INSERT sent with the COMMIT. Through the delay line, where "
                         "a round trip costs what it costs on a network, the difference is large (above).")
            return text
    if "faster than node-pg-migrate" in text and text.startswith(str(r.get("gen_meta", {}).get("count"))):
        v = r.get("gen", {}).get("db-setup-batch")
        fl, npm = _s(r, "gen", "floor"), _s(r, "gen", "node-pg-migrate")
        if v and v.get("cli") and fl and npm:
            wall, total, ex = _cli_parts(v)
            n = r.get("gen_meta", {}).get("count", "?")
            node_cpu = r.get("gen", {}).get("node-pg-migrate", {}).get("client_cpu_summary")
            need = npm["median"] * 500
            if need < ex:
                head = (f"To be 2x faster db-setup would need {need:.0f} ms: less than the server alone spends "
                        f"executing these migrations in db-setup's run ({ex:.0f} ms, Σ `execution_ms`)")
            else:
                head = (f"To be 2x faster db-setup would need {need:.0f} ms, of which the server alone spends "
                        f"{ex:.0f} ms executing these migrations (Σ `execution_ms`): that leaves {need - ex:.0f} ms "
                        f"for everything else (process start, reading and checking {n} files, connecting, the "
                        f"lock, the history rows, COMMIT), where db-setup spends {wall - ex:.0f} ms")
            return (head + f"; psql needs {fl['median'] * 1000:.0f} ms to run the bare files in one transaction with "
                    f"no bookkeeping at all (node-pg-migrate ÷ that floor = {fmt_ratio(ratio(npm, fl), 1)}). "
                    f"On loopback the time is the server's catalog work for {n} tables, one busy core, which no "
                    "client can skip. node-pg-migrate's own costs (Node.js starting, JavaScript per migration, its "
                    "verbose log, two round trips per migration"
                    + (f": {ms(node_cpu['median'])} ms of CPU in its process" if node_cpu else "")
                    + ") run largely on the machine's second core, beside the server, so they add less than "
                    "their sum to the wall time. The target is reached where round trips cost what they cost on "
                    "a network: see the delay-line figures.")
    if "faster than node-pg-migrate" in text:
        return "See the tables: node-pg-migrate's time is mostly Node.js starting and its round trips."
    if text.startswith("Peak RSS"):
        return "See section 4: the peak is the process's VmHWM."
    if text.startswith("Release zip"):
        return "See section 4: the package's size is mostly the statically linked OpenSSL and the AWS SDK."
    return ""
