//! Support for the integration tests: real servers started by `make test`
//! (scripts/servers.sh), a fresh database per test, migration fixtures.
#![allow(dead_code)]

pub mod lambda;
pub mod scripted;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use db_setup::db::{self, ConnectOptions, Connection, Target, Tls, TlsMode};
use db_setup::migrate::{MigrationSet, RunOptions};
use db_setup::redacted::SecretString;
use tokio_postgres::SimpleQueryMessage;

/// Reads a variable `make test` exports; a missing one is a failure, not a skip.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the integration tests through `make test`, which starts PostgreSQL and moto")
    })
}

/// The admin target on the PostgreSQL 16 + pgvector server.
pub fn admin_target(dbname: &str) -> Target {
    Target {
        host: env("DB_SETUP_TEST_PG_HOST"),
        port: env("DB_SETUP_TEST_PG_PORT").parse().expect("port"),
        dbname: dbname.into(),
        user: env("DB_SETUP_TEST_PG_USER"),
        password: SecretString::new(env("DB_SETUP_TEST_PG_PASSWORD")),
    }
}

pub fn plain() -> Tls {
    Tls::new(TlsMode::Disable, None).expect("tls")
}

pub async fn connect(target: &Target) -> Connection {
    let options = ConnectOptions {
        application_name: "db-setup-test".into(),
        ..ConnectOptions::default()
    };
    db::connect(target, &plain(), &options)
        .await
        .expect("connect")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A database of its own for one test.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub async fn new(hint: &str) -> TestDb {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("t_{}_{}_{}", hint, std::process::id(), n);
        let admin = connect(&admin_target("postgres")).await;
        admin
            .client()
            .simple_query(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        TestDb { name }
    }

    pub fn target(&self) -> Target {
        admin_target(&self.name)
    }

    pub async fn connect(&self) -> Connection {
        connect(&self.target()).await
    }

    pub fn url(&self) -> String {
        format!(
            "postgresql://{}:{}@{}:{}/{}",
            env("DB_SETUP_TEST_PG_USER"),
            env("DB_SETUP_TEST_PG_PASSWORD"),
            env("DB_SETUP_TEST_PG_HOST"),
            env("DB_SETUP_TEST_PG_PORT"),
            self.name
        )
    }

    /// Runs SQL on a new connection and returns the first column of every row.
    pub async fn query(&self, sql: &str) -> Vec<String> {
        let c = self.connect().await;
        column(
            &c.client()
                .simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        )
    }

    /// The history, as `name` list in node-pg-migrate's order.
    pub async fn history(&self) -> Vec<String> {
        self.query("SELECT name FROM public.pgmigrations ORDER BY run_on, id")
            .await
    }

    pub async fn table_exists(&self, table: &str) -> bool {
        self.query(&format!("SELECT to_regclass('public.{table}') IS NOT NULL"))
            .await
            == ["t"]
    }
}

/// The server's message of a failed query (tokio-postgres's Display says only "db error").
pub fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

pub fn column(messages: &[SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .collect()
}

/// A directory of migration files, removed when dropped.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new(files: &[(&str, &str)]) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("db-setup-mig")
            .tempdir()
            .expect("tempdir");
        let f = Fixture { dir };
        for (name, content) in files {
            f.write(name, content);
        }
        f
    }

    pub fn write(&self, name: &str, content: &str) {
        std::fs::write(self.dir.path().join(name), content).expect("write fixture");
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).expect("remove fixture");
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn set(&self) -> MigrationSet {
        MigrationSet::from_dir(self.path()).expect("valid fixture")
    }
}

/// Options with short waits, so failure paths are quick.
pub fn quick_options() -> RunOptions {
    RunOptions {
        lock_wait: Duration::from_secs(2),
        lock_timeout: Duration::from_millis(500),
        retry_pause: Duration::from_millis(100),
        ..RunOptions::default()
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs node-pg-migrate 9.0.0 (installed by `make test` under tests/interop).
pub fn node_pg_migrate(db: &TestDb, dir: &Path, args: &[&str]) -> Output {
    let bin = repo_root().join("tests/interop/node_modules/node-pg-migrate/bin/node-pg-migrate.js");
    assert!(
        bin.exists(),
        "{} is missing: run `make test` (it installs tests/interop)",
        bin.display()
    );
    std::process::Command::new("node")
        .arg(bin)
        .args(args)
        .arg("-m")
        .arg(dir)
        .arg("--ignore-pattern")
        .arg("(\\..*|README.*)")
        .env("DATABASE_URL", db.url())
        .output()
        .expect("run node-pg-migrate")
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The keys of a `plan` report, from the function or the CLI (one
/// `PlanReport`), in order.
pub const PLAN_KEYS: [&str; 10] = [
    "advice",
    "breaking_allowed",
    "checksums_to_record",
    "held_back",
    "lock_holder",
    "phase",
    "problems",
    "repair",
    "waits_for_contract",
    "would_run",
];

/// A JSON object's keys, sorted.
pub fn sorted_keys(v: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}
