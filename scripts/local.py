#!/usr/bin/env python3
"""The local loop: the function under `cargo lambda watch` against a local
PostgreSQL 16 + pgvector and a local Secrets Manager (moto), with a small
receiver standing in for CloudFormation's pre-signed response URL.

  local.py up        start the servers, the secrets and the receiver (state in /tmp/db-setup-local-UID)
  local.py env       print the function's environment as shell exports (for `cargo lambda watch`)
  local.py down      stop them
  local.py demo      the whole flow end to end, in a directory of its own, then stop
                     (its last section is the two-phase deploy below)
  local.py demo-phases [--migrations DIR | --self-check]
                     the two-phase deploy alone, on a PostgreSQL of its own: an "old
                     application" keeps working after the expand step and stops only after
                     the contract step, the "new application" works from the expand step on
                     (examples/two-phase; --migrations: another migration set, same apps;
                     --self-check: each broken set of tests/fixtures/two-phase must fail)

Run it with the project's virtualenv Python (the Makefile does): it uses boto3,
which moto brings.
"""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.dont_write_bytecode = True  # no __pycache__ in scripts/
sys.path.insert(0, str(ROOT / "scripts"))
from lambda_local import RuntimeApi, cfn_event  # noqa: E402  (the receiver, shared with bench/)

SERVERS = ROOT / "scripts" / "servers.sh"
# Under /tmp: as root, PostgreSQL runs as `postgres`, which cannot enter a 0700 home.
LOCAL = Path(tempfile.gettempdir()) / f"db-setup-local-{os.getuid()}"
RECEIVER_PORT = int(os.environ.get("LOCAL_RECEIVER_PORT", "9002"))
INVOKE_PORT = int(os.environ.get("LOCAL_INVOKE_PORT", "9009"))
DBNAME = "app"
# The two-phase deploy section: a migration set of its own (not the product's migrations/),
# the old and new application's queries, and a fresh database of the demo's server.
TWO_PHASE = ROOT / "examples" / "two-phase"
PHASES_DBNAME = "two_phase"
ADMIN_SECRET = "db-setup/local/admin"
USER_SECRET = "db-setup/local/app_rw"
USERNAME = "app_rw"


def say(text):
    print(f"\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"==> {text}", flush=True)


def read_env(state):
    env = {}
    for line in (state / "env").read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    sys.exit(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


# --- the environment ------------------------------------------------------------

def start_environment(state, receiver_port):
    state.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(SERVERS), "start", str(state), "pg16", "moto"], check=True)
    env = read_env(state)
    psql = Path(env["DB_SETUP_TEST_PG_BIN"]) / "psql"
    subprocess.run([str(psql), "-X", "-q", env["DB_SETUP_TEST_PG_URL"], "-c", f"CREATE DATABASE {DBNAME}"], check=True)
    import boto3  # from the virtualenv (moto depends on it)

    sm = boto3.client("secretsmanager", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    admin = {"engine": "postgres", "host": env["DB_SETUP_TEST_PG_HOST"], "port": int(env["DB_SETUP_TEST_PG_PORT"]),
             "dbname": DBNAME, "username": env["DB_SETUP_TEST_PG_USER"], "password": env["DB_SETUP_TEST_PG_PASSWORD"]}
    sm.create_secret(Name=ADMIN_SECRET, SecretString=json.dumps(admin))
    # What the CDK stack creates for an application user: a value the database does not know yet.
    placeholder = {"username": USERNAME, "password": os.urandom(12).hex()}
    sm.create_secret(Name=USER_SECRET, SecretString=json.dumps(placeholder))
    function_env = {
        "DB_SETUP_ADMIN_SECRET_ID": ADMIN_SECRET,
        "DB_SETUP_USERS": json.dumps([{"username": USERNAME, "role": "readwrite", "secretId": USER_SECRET}]),
        "DB_SETUP_TLS": "disable",
        "DB_SETUP_RESPONSE_MODE": "direct",
        # The response receiver is local (production answers only https on AWS hosts).
        "DB_SETUP_ALLOW_LOCAL_RESPONSE_URL": "true",
        "DB_SETUP_LOG_FORMAT": "text",
        "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
        "AWS_REGION": env["AWS_REGION"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    (state / "lambda.sh").write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in function_env.items()))
    (state / "receiver.port").write_text(str(receiver_port))
    return env, function_env, sm


def stop_environment(state):
    pid_file = state / "receiver.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass
    if (state / "env").exists():
        subprocess.run([str(SERVERS), "stop", str(state)], check=False)
    shutil.rmtree(state, ignore_errors=True)


def cmd_up():
    if (LOCAL / "env").exists():
        say(f"already up (state in {LOCAL}); `make down` stops it")
        return
    start_environment(LOCAL, RECEIVER_PORT)
    # Detached from the terminal and from any pipe the caller reads to its end.
    with open(LOCAL / "receiver.log", "w") as out:
        receiver = subprocess.Popen([sys.executable, __file__, "receiver", str(RECEIVER_PORT), str(LOCAL / "responses.jsonl")],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    (LOCAL / "receiver.pid").write_text(str(receiver.pid))
    wait_port(RECEIVER_PORT, "the response receiver", 10)
    say(f"up: PostgreSQL + pgvector, moto, response receiver on 127.0.0.1:{RECEIVER_PORT} "
        f"(responses in {LOCAL / 'responses.jsonl'})")


def cmd_env():
    print((LOCAL / "lambda.sh").read_text(), end="")


def cmd_down():
    stop_environment(LOCAL)
    say("down")


def cmd_receiver(port, log_path):
    RuntimeApi(int(port), log_path)
    threading.Event().wait()


# --- the demo -----------------------------------------------------------------------

def invoke(event, port):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(event, f)
    out = subprocess.run(["cargo", "lambda", "invoke", "db-setup", "--invoke-address", "127.0.0.1",
                          "--invoke-port", str(port), "--data-file", f.name],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    os.unlink(f.name)
    if out.returncode != 0:
        sys.exit(f"cargo lambda invoke failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout)


def cmd_demo():
    state = Path(tempfile.mkdtemp(prefix="db-setup-demo-"))
    os.chmod(state, 0o755)
    kept_log = ROOT / ".tmp" / "demo-watch.log"
    kept_log.parent.mkdir(exist_ok=True)
    watch = None
    receiver = None
    try:
        say("starting PostgreSQL 16 + pgvector and Secrets Manager (moto)")
        receiver_port, invoke_port = free_port(), free_port()
        env, function_env, sm = start_environment(state, receiver_port)
        say(f"admin secret {ADMIN_SECRET} created; application user {USERNAME} has a placeholder secret {USER_SECRET}")

        received = []
        arrived = threading.Event()

        def on_put(record):
            received.append(record)
            arrived.set()

        receiver = RuntimeApi(receiver_port, str(state / "responses.jsonl"), on_put)

        say("starting the function under `cargo lambda watch` (it builds on the first invoke)")
        watch_env = dict(os.environ, **function_env)
        watch = subprocess.Popen(["cargo", "lambda", "watch", "--invoke-address", "127.0.0.1", "--invoke-port", str(invoke_port)],
                                 cwd=ROOT, env=watch_env, stdout=open(state / "watch.log", "w"), stderr=subprocess.STDOUT,
                                 start_new_session=True)
        wait_port(invoke_port, "cargo lambda watch")

        events = ROOT / "events"
        for kind in ("create", "update"):
            event = json.loads((events / f"{kind}.json").read_text())
            event["ResponseURL"] = f"http://127.0.0.1:{receiver_port}/cloudformation/{kind}"
            arrived.clear()
            say(f"CloudFormation sends {event['RequestType']} (events/{kind}.json)")
            started = time.time()
            invoke(event, invoke_port)
            if not arrived.wait(30):
                sys.exit("no response reached the receiver")
            body = json.loads(received[-1]["body"])
            say(f"what CloudFormation received ({time.time() - started:.1f}s, Content-Type {received[-1]['content_type']!r}):")
            print(json.dumps(body, indent=2))
            if body.get("Status") != "SUCCESS":
                sys.exit("the request failed: see the Reason above")

        say(f"the application user logs in with its secret ({USER_SECRET})")
        secret = json.loads(sm.get_secret_value(SecretId=USER_SECRET, VersionStage="AWSCURRENT")["SecretString"])
        psql = Path(env["DB_SETUP_TEST_PG_BIN"]) / "psql"
        login = subprocess.run([str(psql), "-X", "-A", "-t", "-h", secret["host"], "-p", str(secret["port"]),
                                "-U", secret["username"], "-d", secret["dbname"],
                                "-c", "SELECT current_user || ' can read ' || count(*) || ' tenant(s)' FROM tenants"],
                               env=dict(os.environ, PGPASSWORD=secret["password"]), capture_output=True, text=True)
        if login.returncode != 0:
            sys.exit(f"the application user could not log in: {login.stderr}")
        print(f"  {login.stdout.strip()}; its secret holds: {', '.join(sorted(k for k in secret if k != 'password'))} and a password")

        say("troubleshooting: {\"action\": \"verify\"}")
        report = invoke({"action": "verify"}, invoke_port)
        print(f"  ok={report['ok']} present={report['present']} missing={report['missing']} different={report['different']}")

        try:
            chain_section(env, function_env, sm)
        except ChainFailed as e:
            sys.exit(f"work longer than one invocation: FAILED: {e}")

        try:
            phases_section(env, build_cli())
        except PhasesFailed as e:
            sys.exit(f"two-phase deploy: FAILED: {e}")
        say(f"done; the function's log is kept in {kept_log.relative_to(ROOT)}")
    finally:
        if watch:
            os.killpg(watch.pid, signal.SIGTERM)
            watch.wait(timeout=30)
        if receiver:
            receiver.stop()
        if (state / "watch.log").exists():
            shutil.copy(state / "watch.log", kept_log)
        stop_environment(state)


# --- work longer than one invocation ---------------------------------------------------

class ChainFailed(Exception):
    """The chain of invocations did not do what it promises."""


CHAIN_DBNAME = "chain"
CHAIN_ADMIN_SECRET = "db-setup/local/chain-admin"


def chain_section(env, function_env, sm, invocation_s=20):
    """A Create on a fresh database `chain` that needs one invocation per migration: the
    function (its debug binary) runs against the local Runtime API with 20 s invocations and
    a 20 s reserve, so after each unit of work it stops, hands the turn over and invokes
    itself asynchronously through the stand-in's Invoke API. Checked: one answer, SUCCESS,
    every migration applied once, as many invocations as migrations. (`cargo lambda watch`
    cannot show this: its Invoke API runs one invocation at a time and waits for it, so a
    function invoking itself waits on itself.)"""
    psql = Path(env["DB_SETUP_TEST_PG_BIN"]) / "psql"
    subprocess.run([str(psql), "-X", "-q", env["DB_SETUP_TEST_PG_URL"], "-c", f"CREATE DATABASE {CHAIN_DBNAME}"],
                   check=True)
    admin = {"engine": "postgres", "host": env["DB_SETUP_TEST_PG_HOST"], "port": int(env["DB_SETUP_TEST_PG_PORT"]),
             "dbname": CHAIN_DBNAME, "username": env["DB_SETUP_TEST_PG_USER"],
             "password": env["DB_SETUP_TEST_PG_PASSWORD"]}
    sm.create_secret(Name=CHAIN_ADMIN_SECRET, SecretString=json.dumps(admin))
    subprocess.run(["cargo", "build", "--quiet", "--locked", "--bin", "db-setup"], cwd=ROOT, check=True)
    api = RuntimeApi()
    api.async_timeout = invocation_s
    proc = None
    try:
        proc_env = dict(os.environ, **function_env)
        proc_env.update({
            "DB_SETUP_ADMIN_SECRET_ID": CHAIN_ADMIN_SECRET,
            "DB_SETUP_USERS": "[]",
            "DB_SETUP_CONTINUE": "true",
            "DB_SETUP_TRANSACTION_MODE": "each",
            "DB_SETUP_CONTINUE_RESERVE": f"{invocation_s}s",
            **api.lambda_env(),
        })
        log = open(ROOT / ".tmp" / "demo-chain.log", "w")
        proc = subprocess.Popen([str(ROOT / "target" / "debug" / "db-setup")], env=proc_env, stdout=log,
                                stderr=subprocess.STDOUT)
        url = api.response_url()
        event = cfn_event("Create", url, {"ServiceTimeout": "600"})
        say(f"work longer than one invocation: a Create on a fresh database {CHAIN_DBNAME}, "
            f"{invocation_s} s invocations with a {invocation_s} s reserve (one migration each)")
        started = time.time()
        first = api.invoke(event, timeout=invocation_s)
        first_body = json.loads(first["body"] or b"{}")
        print(f"  invocation 1 (CloudFormation's): {json.dumps(first_body)}")
        path = url.split(f":{api.port}", 1)[-1]
        end = time.monotonic() + 120
        with api.lock:
            while path not in api.puts and time.monotonic() < end:
                api.done.wait(0.5)
            answer = api.puts.get(path) or first["put"]
            sent = len(api.async_events)
        if answer is None:
            raise ChainFailed("no answer reached CloudFormation's URL within 120 s (log: .tmp/demo-chain.log)")
        body = json.loads(answer[1])
        data = body.get("Data", {})
        print(f"  the last invocation answered ({time.time() - started:.1f}s): Status {body.get('Status')}, "
              f"Invocations {data.get('Invocations')}, Applied {data.get('Applied')}; "
              f"the function invoked itself {sent} time(s)")
        if body.get("Status") != "SUCCESS":
            raise ChainFailed(f"the chain answered {body.get('Status')}: {body.get('Reason')}")
        history = subprocess.run([str(psql), "-X", "-A", "-t", "-d", env["DB_SETUP_TEST_PG_URL"].rsplit("/", 1)[0]
                                  + f"/{CHAIN_DBNAME}", "-c", "SELECT count(*), count(DISTINCT name) FROM pgmigrations"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        total = len(list((ROOT / "migrations").glob("*.sql")))
        if history != f"{total}|{total}" or data.get("Applied") != str(total):
            raise ChainFailed(f"expected {total} migrations applied once each, the history holds {history}")
        if data.get("Invocations") != str(total) or sent != total - 1:
            raise ChainFailed(f"expected {total} invocations ({total - 1} started by the function), "
                              f"got {data.get('Invocations')} ({sent})")
        print(f"  one answer, {total} migrations each applied once: the chain works")
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=30)
        api.stop()


# --- the two-phase deploy -------------------------------------------------------------

class PhasesFailed(Exception):
    """The two-phase section saw what a two-phase deploy must prevent (or must do)."""


def app_queries(name):
    """One query per line of examples/two-phase/NAME (blank lines and `--` comments skipped)."""
    lines = (TWO_PHASE / name).read_text().splitlines()
    queries = [q.strip() for q in lines if q.strip() and not q.strip().startswith("--")]
    if not queries:
        raise PhasesFailed(f"examples/two-phase/{name} holds no query: an application without queries proves nothing")
    return queries


def run_app(psql, url, queries):
    """Runs each query in a transaction that is rolled back; None, or the first error."""
    for query in queries:
        out = subprocess.run([str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url,
                              "-c", "BEGIN", "-c", query, "-c", "ROLLBACK"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            lines = out.stderr.splitlines()
            error = next((line[line.find("ERROR:"):] for line in lines if "ERROR:" in line), out.stderr)
            return f"{query}: {' '.join(error.split())}"
    return None


def cli_migrate(cli, url, migrations, *options):
    """`db-setup-cli migrate --dir MIGRATIONS OPTIONS...`: its run report."""
    out = subprocess.run([str(cli), "migrate", "--database-url", f"{url}?sslmode=disable", "--dir", str(migrations),
                          *options], capture_output=True, text=True)
    if out.returncode != 0:
        raise PhasesFailed(f"db-setup-cli migrate {' '.join(options)} failed:\n{out.stderr.strip()}")
    return json.loads(out.stdout)


def build_cli():
    """The debug db-setup-cli (built if needed, as `cargo build` does it)."""
    subprocess.run(["cargo", "build", "--quiet", "--locked", "--bin", "db-setup-cli"], cwd=ROOT, check=True)
    return ROOT / "target" / "debug" / "db-setup-cli"


def phases_section(env, cli, migrations=TWO_PHASE / "migrations", dbname=PHASES_DBNAME):
    """The two-phase deploy on a fresh database `dbname` of the demo's server, checked: raises
    PhasesFailed when the old application breaks after the expand step, or still works after
    the contract step, or the new application does not work after the expand step (or after
    the contract step). Release 1 is the first migration of the set."""
    psql = Path(env["DB_SETUP_TEST_PG_BIN"]) / "psql"
    admin = env["DB_SETUP_TEST_PG_URL"]
    subprocess.run([str(psql), "-X", "-q", "-d", admin, "-c", f"CREATE DATABASE {dbname}"], check=True)
    url = admin.rsplit("/", 1)[0] + f"/{dbname}"
    old_app, new_app = app_queries("old-app.sql"), app_queries("new-app.sql")

    def names(report):
        return ", ".join(step["name"] for step in report["applied"]) or "nothing"

    def expect(app, queries, works, when):
        error = run_app(psql, url, queries)
        if works and error:
            raise PhasesFailed(f"the {app} application broke {when}: {error}")
        if not works and not error:
            raise PhasesFailed(f"the {app} application still works {when}: the contract step did not remove "
                               "what it uses")
        print(f"  {app} application: " + (f"works ({len(queries)} queries)" if works else f"fails, as it must: {error}"))

    shown = migrations.relative_to(ROOT) if migrations.is_relative_to(ROOT) else migrations
    say(f"two-phase deploy: {shown} on a fresh database {dbname}")
    first = min(p.stem for p in migrations.glob("*.sql"))
    report = cli_migrate(cli, url, migrations, "--to", first)
    print(f"  release 1 (db-setup-cli migrate --to {first}): applied {names(report)}")
    expect("old", old_app, True, "on release 1")

    report = cli_migrate(cli, url, migrations, "--phase", "expand")
    waits = ", ".join(report["waits_for_contract"]) or "nothing"
    print(f"  expand step (--phase expand, before the new application): applied {names(report)}; "
          f"waits for the contract step: {waits}")
    expect("old", old_app, True, "after the expand step")
    expect("new", new_app, True, "after the expand step")

    report = cli_migrate(cli, url, migrations, "--phase", "contract")
    print(f"  contract step (--phase contract, after the new application): applied {names(report)}")
    expect("new", new_app, True, "after the contract step")
    expect("old", old_app, False, "after the contract step")
    say("two-phase deploy: the old application worked until the contract step, the new one from the expand step on")


# Migration sets that must make the section fail, with what it must say (the self-check).
BROKEN_SETS = {
    "drops-column-in-expand": "the old application broke after the expand step",
    "expand-misses-new-column": "the new application broke after the expand step",
    "contract-keeps-old-column": "the old application still works after the contract step",
}


def phases_self_check(env, cli):
    """Runs the section on each set of tests/fixtures/two-phase: each must fail, saying why."""
    for i, (case, expected) in enumerate(BROKEN_SETS.items()):
        try:
            phases_section(env, cli, ROOT / "tests" / "fixtures" / "two-phase" / case, f"{PHASES_DBNAME}_broken_{i}")
        except PhasesFailed as e:
            if expected not in str(e):
                raise PhasesFailed(f"self-check {case}: expected \"{expected}\", got: {e}") from e
            print(f"  self-check {case}: refused, as it must: {e}")
            continue
        raise PhasesFailed(f"self-check {case}: the section passed a migration set that breaks an application")
    say(f"two-phase self-check: all {len(BROKEN_SETS)} broken migration sets were refused")


def cmd_demo_phases(args):
    migrations, self_check = TWO_PHASE / "migrations", False
    if args[:1] == ["--migrations"] and len(args) == 2:
        migrations = Path(args[1]).resolve()
    elif args == ["--self-check"]:
        self_check = True
    elif args:
        sys.exit(__doc__)
    state = Path(tempfile.mkdtemp(prefix="db-setup-phases-"))
    os.chmod(state, 0o755)
    try:
        cli = build_cli()
        subprocess.run([str(SERVERS), "start", str(state), "pg16"], check=True)
        env = read_env(state)
        if self_check:
            phases_self_check(env, cli)
        else:
            phases_section(env, cli, migrations)
    except PhasesFailed as e:
        sys.exit(f"two-phase deploy: FAILED: {e}")
    finally:
        stop_environment(state)


def main():
    args = sys.argv[1:]
    commands = {"up": cmd_up, "env": cmd_env, "down": cmd_down, "demo": cmd_demo}
    if args and args[0] == "receiver" and len(args) == 3:
        cmd_receiver(args[1], args[2])
    elif args and args[0] == "demo-phases":
        cmd_demo_phases(args[1:])
    elif len(args) == 1 and args[0] in commands:
        commands[args[0]]()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
