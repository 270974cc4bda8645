//! The reliability suite: concurrent invocations, faults in the middle of a
//! migration, and the deadline: FAILED always reaches CloudFormation before
//! the invocation's deadline, whatever the database does.

mod common;

use std::time::{Duration, Instant};

use common::lambda::{
    Deployment, Receiver, StackSpec, cfn_event, create_secret, secret_name, secrets_client,
};
use common::scripted::epoch_ms;
use common::{Fixture, TestDb, column};
use db_setup::config::Config;
use db_setup::db::{Tls, TlsMode};
use db_setup::handler::Handler;
use db_setup::migrate::{MigrateError, MigrationSet, Migrator, RunOptions, TransactionFate};
use db_setup::respond::Responder;
use db_setup::secrets::SecretsManager;
use db_setup::verify::Spec;
use db_setup::work::LiveWork;
use serde_json::{Value, json};

fn props() -> Value {
    json!({"MigrationsHash": MigrationSet::embedded().unwrap().hash()})
}

/// Waits up to 2 s for no advisory lock to be held in the database.
async fn advisory_locks_gone(db: &TestDb) -> bool {
    for _ in 0..20 {
        // pg_locks spans the cluster: count this database's only.
        let sql = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
        if db.query(sql).await == ["0"] {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

// ---- concurrency -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_creates_apply_each_migration_exactly_once() {
    let d = Deployment::new(StackSpec {
        users: &[("rw", "readwrite")],
        ..StackSpec::new("conc8")
    })
    .await;
    let mut runtimes = vec![d.runtime.clone()];
    for _ in 1..8 {
        runtimes.push(d.another_instance().await);
    }
    let requests = runtimes
        .iter()
        .map(|rt| d.request_via(rt, "Create", props()));
    let results = futures_util::future::join_all(requests).await;
    let mut rotated = 0;
    for (_, put) in &results {
        assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
        rotated += put.body["Data"]["UsersRotated"]
            .as_str()
            .unwrap()
            .parse::<u32>()
            .unwrap();
    }
    let applied: u32 = results
        .iter()
        .map(|(_, p)| {
            p.body["Data"]["Applied"]
                .as_str()
                .unwrap()
                .parse::<u32>()
                .unwrap()
        })
        .sum();
    let set = MigrationSet::embedded().unwrap();
    assert_eq!(
        applied as usize,
        set.migrations().len(),
        "each migration applied by exactly one invocation"
    );
    assert_eq!(
        rotated, 1,
        "the password was set once; the others found it working"
    );
    let names = d.db.history().await;
    assert_eq!(names.len(), set.migrations().len());
    let mut unique = names.clone();
    unique.dedup();
    assert_eq!(unique, names, "no migration recorded twice");
    assert!(advisory_locks_gone(&d.db).await);
    d.scan().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_another_run_holds_the_lock_every_invocation_answers_in_time() {
    let d = Deployment::new(StackSpec {
        env: vec![("DB_SETUP_LOCK_WAIT", "1s".into())],
        ..StackSpec::new("conclock")
    })
    .await;
    let holder = d.db.connect().await;
    holder
        .client()
        .simple_query(
            "SET application_name = 'another-deploy'; SELECT pg_advisory_lock(7241865325823964)",
        )
        .await
        .unwrap();
    let mut runtimes = vec![d.runtime.clone()];
    for _ in 1..8 {
        runtimes.push(d.another_instance().await);
    }
    let started = Instant::now();
    let results = futures_util::future::join_all(
        runtimes
            .iter()
            .map(|rt| d.request_via(rt, "Create", props())),
    )
    .await;
    for (_, put) in &results {
        assert_eq!(put.body["Status"], "FAILED");
        let reason = put.body["Reason"].as_str().unwrap();
        assert!(
            reason.starts_with("another migration is already running"),
            "{reason}"
        );
        assert!(reason.contains("application 'another-deploy'"), "{reason}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !d.db.table_exists("tenants").await,
        "nothing ran beside the holder"
    );
    holder
        .client()
        .simple_query("SELECT pg_advisory_unlock(7241865325823964)")
        .await
        .unwrap();
    let (_, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
}

// ---- faults in the middle of a migration ----------------------------------------

#[tokio::test]
async fn a_backend_killed_mid_migration_leaves_nothing_and_the_next_run_succeeds() {
    let db = TestDb::new("killed").await;
    let fx = Fixture::new(&[
        ("001_a.sql", "CREATE TABLE a (id int);"),
        (
            "002_slow.sql",
            "CREATE TABLE b (id int);\nINSERT INTO b VALUES (1);\nSELECT pg_sleep(30);\nCREATE TABLE c (id int);",
        ),
    ]);
    let conn = db.connect().await;
    let pid = column(
        &conn
            .client()
            .simple_query("SELECT pg_backend_pid()")
            .await
            .unwrap(),
    )
    .remove(0);
    let killer = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        db.query(&format!("SELECT pg_terminate_backend({pid})"))
            .await
    };
    let migrator = Migrator::new(conn.client(), RunOptions::default());
    let set = fx.set();
    let (result, killed) = tokio::join!(migrator.migrate(&set), killer);
    assert_eq!(killed, ["t"]);
    let failure = match result.unwrap_err() {
        MigrateError::Migration(f) => f,
        other => panic!("expected a migration failure, got {other}"),
    };
    assert_eq!(failure.migration.as_deref(), Some("002_slow"));
    assert!(
        failure.error.code.as_deref() == Some("57P01") || failure.error.code.is_none(),
        "terminated by an administrator, or the connection lost: {failure}"
    );
    // The whole batch is gone: no history, no table from either file; no lock left.
    assert!(!db.table_exists("pgmigrations").await || db.history().await.is_empty());
    for t in ["a", "b", "c"] {
        assert!(!db.table_exists(t).await, "{t} remains");
    }
    // The server releases the lock as the terminated backend exits (asynchronously).
    assert!(
        advisory_locks_gone(&db).await,
        "the advisory lock outlived its session"
    );

    fx.write(
        "002_slow.sql",
        "CREATE TABLE b (id int);\nINSERT INTO b VALUES (1);\nCREATE TABLE c (id int);",
    );
    let conn = db.connect().await;
    let report = Migrator::new(conn.client(), RunOptions::default())
        .migrate(&fx.set())
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 2);
}

#[tokio::test]
async fn a_statement_timeout_in_the_middle_of_a_batch_leaves_nothing() {
    let db = TestDb::new("midtimeout").await;
    let fx = Fixture::new(&[
        ("001_a.sql", "CREATE TABLE a (id int);"),
        (
            "002_slow.sql",
            "CREATE TABLE b (id int);\nSELECT pg_sleep(2);",
        ),
        ("003_c.sql", "CREATE TABLE c (id int);"),
    ]);
    let conn = db.connect().await;
    let options = RunOptions {
        statement_timeout: Duration::from_millis(300),
        ..RunOptions::default()
    };
    let err = Migrator::new(conn.client(), options)
        .migrate(&fx.set())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("57014"), "{err}");
    for t in ["a", "b", "c"] {
        assert!(!db.table_exists(t).await, "{t} remains");
    }
    let report = Migrator::new(conn.client(), RunOptions::default())
        .migrate(&fx.set())
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 3);
}

// ---- a transaction ended inside a batch (the batch marker) --------------------------

/// A file whose COMMIT the statement splitter cannot see: with
/// `standard_conforming_strings = off` (set on the database, as an old
/// application might) `'x\''` is the string `x'`, so the server runs the
/// `COMMIT` that the splitter reads as part of a string literal.
const HIDDEN_COMMIT: &str =
    "CREATE TABLE b (id int);\nSELECT 'x\\''; COMMIT; --';\nCREATE TABLE b2 (id int);\n";

async fn database_without_standard_strings(hint: &str) -> TestDb {
    let db = TestDb::new(hint).await;
    let admin = common::connect(&common::admin_target("postgres")).await;
    admin
        .client()
        .simple_query(&format!(
            "ALTER DATABASE {} SET standard_conforming_strings = off",
            db.name
        ))
        .await
        .unwrap();
    db
}

#[tokio::test]
async fn a_commit_hidden_from_the_splitter_is_caught_and_reported_truthfully() {
    let db = database_without_standard_strings("hiddencommit").await;
    let fx = Fixture::new(&[
        ("001_a.sql", "CREATE TABLE a (id int);"),
        ("002_hidden.sql", HIDDEN_COMMIT),
        ("003_c.sql", "CREATE TABLE c (id int);"),
        // Fails: today's report would then claim that nothing of the batch was kept.
        (
            "004_d.sql",
            "CREATE TABLE d (id int);\nINSERT INTO nope VALUES (1);",
        ),
    ]);
    let conn = db.connect().await;
    let err = Migrator::new(conn.client(), RunOptions::default())
        .migrate(&fx.set())
        .await
        .unwrap_err();
    let text = err.to_string();
    // What the server did: the COMMIT kept 001_a and the start of 002_hidden; the rest
    // (after the COMMIT, and the later files) was rolled back by the marker's guard.
    assert!(db.table_exists("a").await && db.table_exists("b").await);
    for t in ["b2", "c", "d"] {
        assert!(!db.table_exists(t).await, "{t} remains: {text}");
    }
    assert!(db.history().await.is_empty(), "{text}");
    // What the report says: exactly that, and never that nothing was kept.
    assert!(!text.contains("Nothing of"), "{text}");
    let f = match err {
        MigrateError::Migration(f) => f,
        other => panic!("expected a migration failure, got {other}"),
    };
    assert_eq!(f.migration.as_deref(), Some("002_hidden"), "{text}");
    assert_eq!(f.ended_inside.as_deref(), Some("002_hidden"));
    assert_eq!(f.transaction, Some(TransactionFate::Committed));
    assert_eq!(f.committed, ["001_a"]);
    assert_eq!(f.rolled_back, ["003_c", "004_d"]);
    assert!(
        text.contains("committed by a statement inside 002_hidden")
            && text.contains(
                "001_a and 002_hidden (up to that statement) stay applied WITHOUT history rows"
            )
            && text.contains("003_c and 004_d left nothing")
            && text.contains("Remove the transaction control from 002_hidden"),
        "{text}"
    );

    // Fixed (the COMMIT removed, the file made re-runnable), the next run applies the batch.
    fx.write("001_a.sql", "CREATE TABLE IF NOT EXISTS a (id int);");
    fx.write(
        "002_hidden.sql",
        "CREATE TABLE IF NOT EXISTS b (id int);\nCREATE TABLE b2 (id int);\n",
    );
    fx.write("004_d.sql", "CREATE TABLE d (id int);");
    let report = Migrator::new(conn.client(), RunOptions::default())
        .migrate(&fx.set())
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 4);
}

#[tokio::test]
async fn a_hidden_commit_in_a_lone_file_and_a_hidden_rollback_are_caught() {
    let db = database_without_standard_strings("hiddenone").await;
    let conn = db.connect().await;
    let each = RunOptions {
        mode: db_setup::migrate::TransactionMode::Each,
        ..RunOptions::default()
    };
    // One file in its own transaction: its history row is written in the same query.
    let fx = Fixture::new(&[("001_hidden.sql", HIDDEN_COMMIT)]);
    let err = Migrator::new(conn.client(), each.clone())
        .migrate(&fx.set())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(db.table_exists("b").await, "{text}");
    assert!(!db.table_exists("b2").await, "{text}");
    assert!(db.history().await.is_empty(), "{text}");
    assert!(!text.contains("Nothing of"), "{text}");
    assert!(
        text.contains("committed by a statement inside 001_hidden"),
        "{text}"
    );

    // A hidden ROLLBACK: the batch's start is undone and the rest must not run unguarded.
    let db = database_without_standard_strings("hiddenrollback").await;
    let conn = db.connect().await;
    let fx = Fixture::new(&[
        ("001_a.sql", "CREATE TABLE a (id int);"),
        (
            "002_hidden.sql",
            "SELECT 'x\\''; ROLLBACK; --';\nCREATE TABLE b2 (id int);\n",
        ),
        ("003_c.sql", "CREATE TABLE c (id int);"),
    ]);
    let err = Migrator::new(conn.client(), RunOptions::default())
        .migrate(&fx.set())
        .await
        .unwrap_err();
    let text = err.to_string();
    for t in ["a", "b2", "c"] {
        assert!(!db.table_exists(t).await, "{t} remains: {text}");
    }
    assert!(
        !db.table_exists("pgmigrations").await || db.history().await.is_empty(),
        "{text}"
    );
    assert!(text.contains("ended inside 002_hidden"), "{text}");
    assert!(
        text.contains("checked: the server rolled it back"),
        "{text}"
    );
}

// ---- the deadline ------------------------------------------------------------------

/// Sends a Create with a deadline `seconds` away and checks FAILED arrived before it.
async fn failed_before_the_deadline(d: &Deployment, seconds: u64) -> String {
    let url = d.receiver.url();
    let deadline = epoch_ms() + seconds * 1000;
    let event = cfn_event("Create", &url, props());
    let outcome = d
        .runtime
        .invoke_with_deadline(
            serde_json::to_vec(&event).unwrap(),
            deadline,
            Duration::from_secs(seconds + 30),
        )
        .await;
    let put = d.receiver.wait_for(&url, Duration::from_secs(5)).await;
    assert!(
        put.at_ms < deadline,
        "FAILED came {} ms after the deadline",
        put.at_ms - deadline
    );
    assert_eq!(put.body["Status"], "FAILED", "{}", put.body);
    assert!(put.raw_len <= 4096);
    assert_eq!(outcome.response()["Status"], "FAILED");
    put.body["Reason"].as_str().unwrap().to_string()
}

fn deadline_env() -> Vec<(&'static str, String)> {
    vec![("DB_SETUP_DEADLINE_MARGIN", "2s".into())]
}

#[tokio::test]
async fn an_unreachable_database_gets_failed_before_the_deadline() {
    // A port nothing listens on, and many attempts: the retries would outlast the deadline.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut env = deadline_env();
    env.extend([
        ("DB_SETUP_DB_PORT", port.to_string()),
        ("DB_SETUP_CONNECT_ATTEMPTS", "50".into()),
    ]);
    let d = Deployment::new(StackSpec {
        env,
        ..StackSpec::new("deadline_refused")
    })
    .await;
    let reason = failed_before_the_deadline(&d, 6).await;
    assert!(reason.starts_with("timed out after "), "{reason}");
    assert!(
        reason.contains(&format!("s while connecting to 127.0.0.1:{port}")),
        "{reason}"
    );
}

#[tokio::test]
async fn a_port_that_accepts_but_never_answers_gets_failed_before_the_deadline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket); // never read, never answered
        }
    });
    let mut env = deadline_env();
    env.extend([
        ("DB_SETUP_DB_PORT", port.to_string()),
        ("DB_SETUP_CONNECT_TIMEOUT", "60s".into()),
    ]);
    let d = Deployment::new(StackSpec {
        env,
        ..StackSpec::new("deadline_blackhole")
    })
    .await;
    let reason = failed_before_the_deadline(&d, 6).await;
    assert!(reason.contains("while connecting to"), "{reason}");
    held.abort();
}

#[tokio::test]
async fn a_held_lock_gets_failed_before_the_deadline() {
    let mut env = deadline_env();
    env.push(("DB_SETUP_LOCK_WAIT", "10min".into()));
    let d = Deployment::new(StackSpec {
        env,
        ..StackSpec::new("deadline_lock")
    })
    .await;
    let holder = d.db.connect().await;
    holder
        .client()
        .simple_query("SELECT pg_advisory_lock(7241865325823964)")
        .await
        .unwrap();
    let reason = failed_before_the_deadline(&d, 6).await;
    assert!(
        reason.starts_with("timed out after ") && reason.contains("s while migrating"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_statement_stuck_behind_a_table_lock_is_cancelled_and_failed_before_the_deadline() {
    let mut env = deadline_env();
    env.extend([
        ("DB_SETUP_LOCK_TIMEOUT", "0".into()),
        ("DB_SETUP_STATEMENT_TIMEOUT", "0".into()),
    ]);
    let d = Deployment::new(StackSpec {
        env,
        ..StackSpec::new("deadline_stuck")
    })
    .await;
    // Migrated up to 009; 010 adds foreign keys to user_profiles, which another session locks.
    let conn = d.db.connect().await;
    let options = RunOptions {
        up_to: Some("009_mued_optimized_indexes".into()),
        ..RunOptions::default()
    };
    Migrator::new(conn.client(), options)
        .migrate(&MigrationSet::embedded().unwrap())
        .await
        .unwrap();
    let blocker = d.db.connect().await;
    blocker
        .client()
        .simple_query("BEGIN; LOCK TABLE user_profiles IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let reason = failed_before_the_deadline(&d, 7).await;
    assert!(
        reason.starts_with("timed out after ") && reason.contains("s while migrating"),
        "{reason}"
    );
    // The stuck statement was cancelled and the session ended: no waiter, no advisory lock.
    let mut left = Vec::new();
    for _ in 0..20 {
        left = d
            .db
            .query("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'db-setup' AND wait_event_type = 'Lock'")
            .await;
        if left == ["0"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, ["0"], "the blocked statement is still waiting");
    assert!(
        advisory_locks_gone(&d.db).await,
        "the advisory lock outlived its session"
    );
    blocker.client().simple_query("ROLLBACK").await.unwrap();
    assert!(
        !d.db
            .history()
            .await
            .contains(&"010_mued_foreign_keys".to_string())
    );
}

/// Runs a Create through a handler over `setup` (margin 2 s) with a deadline 5 s
/// away; checks FAILED arrived before it and returns its Reason.
async fn failed_in_five_seconds(setup: impl db_setup::handler::Work) -> String {
    let mut responder = Responder::new().unwrap();
    responder.allow_local = true;
    let handler = Handler::new(
        setup,
        db_setup::config::ResponseMode::Direct,
        responder,
        Duration::from_secs(2),
        Duration::from_secs(300),
    );
    let receiver = Receiver::start().await;
    let url = receiver.url();
    let deadline = epoch_ms() + 5_000;
    handler
        .handle(cfn_event("Create", &url, json!({})), deadline)
        .await
        .unwrap();
    let put = receiver.wait_for(&url, Duration::from_secs(1)).await;
    assert!(put.at_ms < deadline);
    assert_eq!(put.body["Status"], "FAILED", "{}", put.body);
    put.body["Reason"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_sleeping_statement_gets_failed_before_the_deadline_and_is_cancelled() {
    // The real work (LiveWork) with a migration that sleeps, in-process.
    let db = TestDb::new("deadline_sleep").await;
    let sm = secrets_client().await;
    let admin = secret_name("sleep-admin");
    let t = db.target();
    create_secret(
        &sm,
        &admin,
        &json!({"host": t.host, "port": t.port, "dbname": t.dbname, "username": t.user, "password": t.password.expose()}),
    )
    .await;
    let fx = Fixture::new(&[(
        "001_sleep.sql",
        "CREATE TABLE slept (id int);\nSELECT pg_sleep(600);",
    )]);
    let config = Config::from_env(|k| match k {
        "DB_SETUP_ADMIN_SECRET_ID" => Some(admin.clone()),
        "DB_SETUP_TLS" => Some("disable".into()),
        "DB_SETUP_STATEMENT_TIMEOUT" => Some("0".into()),
        _ => None,
    })
    .unwrap();
    let setup = LiveWork::new(
        config,
        SecretsManager::new(sm),
        Tls::new(TlsMode::Disable, None).unwrap(),
        fx.set(),
        Spec::default(),
    );
    let reason = failed_in_five_seconds(setup).await;
    assert!(
        reason.starts_with("timed out after ") && reason.contains("s while migrating"),
        "{reason}"
    );
    let mut sleeping = Vec::new();
    for _ in 0..20 {
        sleeping = db.query("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()").await;
        if sleeping == ["0"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sleeping,
        ["0"],
        "the sleeping statement was cancelled on the server"
    );
    assert!(!db.table_exists("slept").await);
}

// ---- a cancel that always lands ------------------------------------------------------

/// A work that runs a pipeline of long sleeps outside any transaction, on a
/// connection the deadline guard watches: a cancel stops the running one, and
/// the queued ones would start next.
struct PipelinedSleeps {
    target: db_setup::db::Target,
    options: db_setup::db::ConnectOptions,
}

impl PipelinedSleeps {
    async fn run(
        &self,
        progress: db_setup::handler::Progress,
    ) -> Result<(), db_setup::error::SetupError> {
        progress.step("migrating");
        let conn = db_setup::db::connect(&self.target, &common::plain(), &self.options)
            .await
            .expect("connect");
        progress.watch(conn.canceller());
        let sleeps = vec!["SELECT pg_sleep(60)".to_string(); 4];
        db_setup::db::pipeline(conn.client(), &sleeps).await;
        Ok(())
    }
}

impl db_setup::handler::Work for PipelinedSleeps {
    async fn deploy(
        &self,
        _request: db_setup::event::CfnRequest,
        _chain: db_setup::continuation::Chain,
        progress: db_setup::handler::Progress,
    ) -> Result<db_setup::handler::Deployed, db_setup::error::SetupError> {
        self.run(progress)
            .await
            .map(|()| db_setup::handler::Deployed::Done(db_setup::respond::Data::default()))
    }

    async fn action(
        &self,
        _action: db_setup::event::Action,
        progress: db_setup::handler::Progress,
    ) -> Result<Value, db_setup::error::SetupError> {
        self.run(progress).await.map(|()| Value::Null)
    }
}

/// A TCP proxy to the test server that forwards the first connection (the
/// work's) and, of the later ones (cancel requests), swallows the first
/// `swallowed`: a cancel that cancels nothing, as one that lands between two
/// queued statements. Closing the client side closes the server side.
async fn proxy(swallowed: usize) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = format!(
        "{}:{}",
        common::env("DB_SETUP_TEST_PG_HOST"),
        common::env("DB_SETUP_TEST_PG_PORT")
    );
    let task = tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut client, _)) = listener.accept().await {
            n += 1;
            if n > 1 && n - 1 <= swallowed {
                drop(client);
                continue;
            }
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (port, task)
}

/// Runs the pipelined sleeps into a 5 s deadline, through [`proxy`], and
/// returns how many backends of `application` are still there once FAILED
/// went out, after a bounded poll (10 s; each sleep lasts 60 s).
async fn backends_left_after_failed(
    application: &str,
    check_interval: Option<Duration>,
    swallowed: usize,
) -> String {
    // Unique per run: a backend left by an earlier run must not count.
    let application = format!("{application}-{}", std::process::id());
    let db = TestDb::new("pipesleep").await;
    let (port, proxy) = proxy(swallowed).await;
    let mut target = db.target();
    target.port = port;
    let options = db_setup::db::ConnectOptions {
        application_name: application.clone(),
        client_check_interval: check_interval,
        ..db_setup::db::ConnectOptions::default()
    };
    let reason = failed_in_five_seconds(PipelinedSleeps { target, options }).await;
    // The budget is the 5 s deadline less the 2 s margin, less what the
    // handler's clock had already used: about 3 s.
    assert!(
        reason.starts_with("timed out after ") && reason.contains("s while migrating"),
        "{reason}"
    );
    let watcher = TestDb::new("pipewatch").await;
    let sql =
        format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{application}'");
    let mut left = String::new();
    for _ in 0..100 {
        left = watcher.query(&sql).await.remove(0);
        if left == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.abort();
    left
}

#[tokio::test]
async fn a_cancel_that_cancels_nothing_leaves_no_statement_running_after_failed() {
    // Every cancel is lost. PostgreSQL 14+ still ends the backend: it checks the
    // connection while a statement runs, and the function closed it.
    let left = backends_left_after_failed(
        "db-setup-pipeline-checked",
        Some(Duration::from_secs(1)),
        usize::MAX,
    )
    .await;
    assert_eq!(left, "0", "a queued pg_sleep kept running after FAILED");
}

#[tokio::test]
async fn without_the_server_side_check_the_cancel_is_repeated_until_it_lands() {
    // An older server (no client_connection_check_interval), and the first cancel
    // lost: the next ones stop the statement, and the backend ends.
    let left = backends_left_after_failed("db-setup-pipeline-cancels", None, 1).await;
    assert_eq!(left, "0", "a queued pg_sleep kept running after FAILED");
}

#[tokio::test]
async fn connections_ask_the_server_to_watch_for_a_gone_client() {
    let db = TestDb::new("checkinterval").await;
    let conn = db.connect().await;
    let shown = common::column(
        &conn
            .client()
            .simple_query("SHOW client_connection_check_interval")
            .await
            .unwrap(),
    );
    assert_eq!(shown, ["1s"]);
}
