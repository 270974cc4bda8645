//! `db-setup-cli` as a shell user runs it, against the real server: `--help`,
//! the environment fallbacks, the exit codes (`status --exit-code`) and the
//! plan as JSON and as Markdown.

mod common;

use std::process::Output;

use common::{Fixture, PLAN_KEYS, TestDb, sorted_keys};
use serde_json::Value;

const A: (&str, &str) = ("001_a.sql", "CREATE TABLE a (id int);");
const B: (&str, &str) = ("002_b.sql", "CREATE TABLE b (id int);");
const C: (&str, &str) = (
    "003_c.sql",
    "-- db-setup: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS b_id ON b (id);",
);

fn url(db: &TestDb) -> String {
    format!("{}?sslmode=disable", db.url())
}

/// Runs the CLI with `args`, `DATABASE_URL` set to `database_url` when given
/// and no other DB_SETUP_* variable from this environment.
fn cli(args: &[&str], database_url: Option<&str>) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_db-setup-cli"));
    cmd.args(args).env_remove("DATABASE_URL");
    for (name, _) in std::env::vars() {
        if name.starts_with("DB_SETUP_") {
            cmd.env_remove(name);
        }
    }
    if let Some(u) = database_url {
        cmd.env("DATABASE_URL", u);
    }
    cmd.output().expect("run db-setup-cli")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(out), stderr(out)))
}

#[test]
fn help_tells_the_commands_and_exit_codes_and_hides_the_url() {
    let secret_url = "postgresql://me:s3cret-pw@db.example/app";
    for args in [&["--help"][..], &["status", "--help"][..]] {
        let out = cli(args, Some(secret_url));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let help = stdout(&out);
        for needle in [
            "Exit codes:",
            "3  `status --exit-code`: migrations are pending",
            "4  `status --exit-code`: problems",
        ] {
            assert!(help.contains(needle), "{needle} not in {help}");
        }
        assert!(!help.contains("s3cret-pw"), "the URL leaked: {help}");
    }
    let out = cli(&["status", "--help"], Some(secret_url));
    let help = stdout(&out);
    for needle in [
        "--exit-code",
        "--database-url",
        "[env: DATABASE_URL]",
        "--ca-file",
    ] {
        assert!(help.contains(needle), "{needle} not in {help}");
    }
    let out = cli(&["plan", "--help"], None);
    assert!(stdout(&out).contains("markdown"), "{}", stdout(&out));
}

#[test]
fn a_bad_command_line_exits_2_and_a_failure_1() {
    let out = cli(&["drop"], Some("postgresql://x@localhost/x"));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = cli(&["status"], None);
    assert_eq!(code(&out), 2, "no database: {}", stderr(&out));
    assert!(stderr(&out).contains("--database-url"), "{}", stderr(&out));
    let out = cli(
        &["plan", "--format", "html"],
        Some("postgresql://x@localhost/x"),
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    // A migrations directory that does not exist: the command fails.
    let out = cli(
        &["status", "--dir", "/nonexistent/migrations"],
        Some("postgresql://x@localhost/x?sslmode=disable"),
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("db-setup-cli: ")
            && stderr(&out).contains("/nonexistent/migrations"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn status_exit_code_says_pending_then_up_to_date_then_problems() {
    let db = TestDb::new("cli_exit").await;
    let fx = Fixture::new(&[A, B]);
    let dir = fx.path().to_str().unwrap();
    let url = url(&db);

    // The URL from the flag, no DATABASE_URL.
    let out = cli(
        &[
            "status",
            "--dir",
            dir,
            "--exit-code",
            "--database-url",
            &url,
        ],
        None,
    );
    assert_eq!(code(&out), 3, "pending: {}", stderr(&out));
    assert_eq!(json(&out)["pending"].as_array().unwrap().len(), 2);
    // Without --exit-code, a read that worked is a success.
    let out = cli(&["status", "--dir", dir], Some(&url));
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // DATABASE_URL from the environment.
    let out = cli(&["migrate", "--dir", dir], Some(&url));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["applied"].as_array().unwrap().len(), 2);
    assert_eq!(db.history().await, ["001_a", "002_b"]);

    let out = cli(&["status", "--dir", dir, "--exit-code"], Some(&url));
    assert_eq!(code(&out), 0, "up to date: {}", stderr(&out));

    // An applied file edited: a migrate would refuse.
    fx.write("001_a.sql", "CREATE TABLE a (id bigint);");
    let out = cli(&["status", "--dir", dir, "--exit-code"], Some(&url));
    assert_eq!(code(&out), 4, "problems: {}", stderr(&out));
    assert_eq!(json(&out)["problems"][0]["kind"], "checksum_drift");
    let out = cli(&["migrate", "--dir", dir], Some(&url));
    assert_eq!(code(&out), 1, "a refused migrate fails");
    assert!(stderr(&out).contains("001_a"), "{}", stderr(&out));
}

#[tokio::test]
async fn plan_is_one_report_as_json_or_markdown() {
    let db = TestDb::new("cli_plan").await;
    let fx = Fixture::new(&[A, B, C]);
    let dir = fx.path().to_str().unwrap();
    let url = url(&db);

    let out = cli(&["plan", "--dir", dir, "--to", "002_b"], Some(&url));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let plan = json(&out);
    assert_eq!(
        sorted_keys(&plan),
        PLAN_KEYS,
        "the Lambda's plan report: {plan}"
    );
    assert_eq!(
        plan["would_run"],
        serde_json::json!([{"kind": "transaction", "migrations": ["001_a", "002_b"]}])
    );
    assert_eq!(plan["held_back"], serde_json::json!(["003_c"]));

    let out = cli(&["plan", "--dir", dir, "--format", "markdown"], Some(&url));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let md = stdout(&out);
    for needle in [
        "### db-setup plan",
        "**3 migrations would run**, in 2 steps:",
        "| 1 | one transaction for all | `001_a`, `002_b` |",
        "| 2 | no transaction: each statement commits | `003_c` |",
    ] {
        assert!(md.contains(needle), "{needle} not in\n{md}");
    }
    assert!(!md.contains("Refused"), "{md}");

    // What is refused, and why.
    let out = cli(&["migrate", "--dir", dir, "--mode", "each"], Some(&url));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    fx.remove("002_b.sql");
    let out = cli(&["plan", "--dir", dir, "--format", "markdown"], Some(&url));
    assert_eq!(
        code(&out),
        0,
        "a plan that reads is a success: {}",
        stderr(&out)
    );
    let md = stdout(&out);
    for needle in [
        "**A migrate would refuse to run**",
        "**Refused** (1 problem):",
        "- migration 002_b is recorded in pgmigrations but has no file",
    ] {
        assert!(md.contains(needle), "{needle} not in\n{md}");
    }
}
