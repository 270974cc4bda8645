//! Fleets: many databases on the local server migrated with a bound on
//! concurrency (the library's fan-out and `db-setup-cli fleet`), one failing
//! database reported by name without stopping the others.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Fixture, TestDb, admin_target, plain, quick_options};
use db_setup::db::ConnectOptions;
use db_setup::fleet::{self, Status};
use serde_json::{Value, json};

const FILES: &[(&str, &str)] = &[
    ("001_a.sql", "CREATE TABLE a (id int);"),
    (
        "002_b.sql",
        "CREATE TABLE b (id int); SELECT pg_sleep(0.02);",
    ),
];

#[tokio::test]
async fn fan_out_migrates_every_database_within_the_bound() {
    let fixture = Fixture::new(FILES);
    let set = fixture.set();
    let mut dbs = Vec::new();
    for _ in 0..9 {
        dbs.push(TestDb::new("fleet").await);
    }
    // A database that does not exist: it fails, the others still run.
    let mut names: Vec<String> = dbs.iter().map(|d| d.name.clone()).collect();
    names.insert(4, "fleet_missing_database".into());

    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (tls, options) = (plain(), ConnectOptions::default());
    let report = fleet::run_bounded(names.clone(), 3, |name| {
        let (running, peak, set, tls, options) = (&running, &peak, &set, &tls, &options);
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let target = admin_target(&name);
            let outcome =
                fleet::migrate_one(name, &target, tls, options, set, quick_options()).await;
            running.fetch_sub(1, Ordering::SeqCst);
            outcome
        }
    })
    .await;

    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "never more than 3 at once, and 3 used"
    );
    assert_eq!(report.status, Status::Failed);
    assert_eq!(report.databases, 10);
    assert_eq!(report.failed, 1);
    let failed = &report.outcomes[4];
    assert_eq!(failed.name, "fleet_missing_database");
    assert!(failed.applied.is_empty());
    assert!(
        report
            .summary()
            .starts_with("1 of 10 databases failed: fleet_missing_database: "),
        "{}",
        report.summary()
    );
    for (db, outcome) in dbs.iter().zip(
        report
            .outcomes
            .iter()
            .filter(|o| o.status == Status::Success),
    ) {
        assert_eq!(outcome.name, db.name, "outcomes keep the input's order");
        assert_eq!(outcome.applied, ["001_a", "002_b"]);
        assert_eq!(db.history().await, ["001_a", "002_b"]);
    }

    // Again: nothing pending anywhere; the missing database still fails.
    let again = fleet::run_bounded(names, 3, |name| {
        let (set, tls, options) = (&set, &tls, &options);
        async move {
            let target = admin_target(&name);
            fleet::migrate_one(name, &target, tls, options, set, quick_options()).await
        }
    })
    .await;
    assert_eq!(again.failed, 1);
    assert!(again.outcomes.iter().all(|o| o.applied.is_empty()));
}

#[tokio::test]
async fn cli_fleet_reports_each_database_and_exits_1_when_one_failed() {
    let fixture = Fixture::new(FILES);
    let (a, b) = (TestDb::new("fleetcli").await, TestDb::new("fleetcli").await);
    let url = |name: &str| {
        let t = admin_target(name);
        format!(
            "postgresql://{}:{}@{}:{}/{}?sslmode=disable",
            t.user,
            t.password.expose(),
            t.host,
            t.port,
            name
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.json");
    let entries = json!([
        {"name": "tenant-a", "url": url(&a.name)},
        {"name": "tenant-gone", "url": url("fleet_cli_missing")},
        {"name": "tenant-b", "url": url(&b.name)},
    ]);
    std::fs::write(&file, entries.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_db-setup-cli"))
        .args(["fleet", "--concurrency", "2", "--dir"])
        .arg(fixture.path())
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "FAILED");
    assert_eq!(report["failed"], 1);
    assert_eq!(report["outcomes"][1]["name"], "tenant-gone");
    assert_eq!(report["outcomes"][2]["applied"], json!(["001_a", "002_b"]));
    let text = String::from_utf8_lossy(&out.stdout);
    let password = admin_target("x").password.expose().to_string();
    assert!(
        password.is_empty() || !text.contains(&password),
        "no password in the report"
    );
    assert_eq!(b.history().await, ["001_a", "002_b"]);
}
