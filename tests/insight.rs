//! `insight` against the real server, as the admin of an RDS instance would
//! run it: a role that is not a superuser, owns the database and has
//! `pg_monitor`. Each category is provoked and found; another session's
//! query text never appears in the report.

mod common;

use std::time::Duration;

use common::TestDb;
use common::lambda::{Deployment, StackSpec};
use db_setup::db::{self, Connection, Target};
use db_setup::insight::{InsightOptions, InsightReport, insight};
use db_setup::redacted::SecretString;
use serde_json::{Value, json};

const SECRET_A: &str = "sk_live_holder_0123456789";
const SECRET_B: &str = "sk_live_waiter_9876543210";

/// A login role (password `pw-<name>`) on the test server.
async fn role(db: &TestDb, name: &str, extra: &str) -> Target {
    db.query(&format!(
        "CREATE ROLE {name} LOGIN PASSWORD 'pw-{name}' {extra}"
    ))
    .await;
    Target {
        user: name.into(),
        password: SecretString::new(format!("pw-{name}")),
        ..db.target()
    }
}

async fn connect(target: &Target) -> Connection {
    db::connect(target, &common::plain(), &Default::default())
        .await
        .expect("connect")
}

async fn run(c: &Connection, sql: &str) {
    c.client()
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", common::db_message(&e)));
}

/// An RDS-like admin (owner of the database and of `public`, `pg_monitor`,
/// not a superuser) and a database with one instance of each problem.
async fn troubled_database(hint: &str, monitor: bool) -> (TestDb, Target) {
    let db = TestDb::new(hint).await;
    let grant = if monitor { "IN ROLE pg_monitor" } else { "" };
    let admin = role(
        &db,
        &format!("{}_adm", db.name),
        &format!("NOSUPERUSER CREATEROLE {grant}"),
    )
    .await;
    db.query(&format!(
        "ALTER DATABASE {0} OWNER TO {0}_adm; ALTER SCHEMA public OWNER TO {0}_adm; CREATE EXTENSION vector",
        db.name
    ))
    .await;
    let c = connect(&admin).await;
    run(
        &c,
        "CREATE TABLE items (id serial PRIMARY KEY, v text, emb vector(3)) WITH (autovacuum_enabled = false); \
         INSERT INTO items (v, emb) SELECT 'v' || i, ARRAY[i, 1, 1]::vector FROM generate_series(1, 5000) i; \
         DELETE FROM items WHERE id > 1000; \
         CREATE INDEX idx_items_v ON items (v); \
         CREATE INDEX idx_items_ivf ON items USING ivfflat (emb vector_cosine_ops) WITH (lists = 100); \
         CREATE INDEX idx_items_hnsw ON items USING hnsw (emb vector_l2_ops) WITH (m = 4, ef_construction = 32); \
         ANALYZE items; \
         CREATE TABLE nopk (x int); INSERT INTO nopk VALUES (1), (2); \
         CREATE TABLE dup (x int); INSERT INTO dup VALUES (1), (1); \
         CREATE SEQUENCE seq_hot AS integer START 2100000000; SELECT nextval('seq_hot')",
    )
    .await;
    // A failed concurrent build leaves an INVALID index behind.
    let err = c
        .client()
        .simple_query("CREATE UNIQUE INDEX CONCURRENTLY idx_dup_x ON dup (x)")
        .await
        .unwrap_err();
    assert!(common::db_message(&err).contains("could not create unique index"));
    // The statistics reach shared memory before the next ReadyForQuery.
    run(&c, "SELECT pg_stat_force_next_flush()").await;
    run(&c, "SELECT 1").await;
    (db, admin)
}

fn names<T>(list: &[T], name: impl Fn(&T) -> &str) -> Vec<String> {
    list.iter().map(|x| name(x).to_string()).collect()
}

#[tokio::test]
async fn an_rds_like_admin_with_pg_monitor_sees_every_category() {
    let (db, admin) = troubled_database("insight", true).await;
    // Another role holds a lock in an open transaction; a third session waits for it.
    let app = role(&db, &format!("{}_app", db.name), "").await;
    db.query(&format!("GRANT SELECT ON nopk TO {}", app.user))
        .await;
    let holder = connect(&app).await;
    let holder_pid = common::column(
        &holder
            .client()
            .simple_query("SELECT pg_backend_pid()")
            .await
            .unwrap(),
    )[0]
    .parse::<i32>()
    .unwrap();
    run(
        &holder,
        &format!("BEGIN; LOCK TABLE nopk IN ACCESS SHARE MODE; SELECT '{SECRET_A}'"),
    )
    .await;
    db.query(&format!("GRANT ALL ON nopk TO {}_adm", db.name))
        .await;
    let waiter = connect(&admin).await;
    let waiting = tokio::spawn(async move {
        let result = waiter
            .client()
            .simple_query(&format!(
                "LOCK TABLE nopk IN ACCESS EXCLUSIVE MODE; SELECT '{SECRET_B}'"
            ))
            .await;
        drop(waiter);
        result.is_ok()
    });
    let mut seen = false;
    for _ in 0..200 {
        if db
            .query("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
            .await
            == ["1"]
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the waiting session never waited for the lock");

    let c = connect(&admin).await;
    let options = InsightOptions {
        top: 50,
        long_running: Duration::ZERO,
    };
    let report: InsightReport = insight(c.client(), &options).await.expect("insight");
    let text = serde_json::to_string(&report).unwrap();
    assert!(
        !text.contains("sk_live"),
        "another session's query text leaked: {text}"
    );
    assert!(report.sees_all_sessions);
    assert_eq!(report.database, db.name);

    let items = report
        .tables
        .iter()
        .find(|t| t.table == "items")
        .expect("items listed");
    assert_eq!(items.rows_estimate, 1000);
    assert!(items.total_bytes > 0 && items.index_bytes > 0);
    assert!(names(&report.unused_indexes, |i| &i.index).contains(&"idx_items_v".to_string()));
    assert!(
        !names(&report.unused_indexes, |i| &i.index).contains(&"items_pkey".to_string()),
        "a primary key is never unused"
    );
    assert_eq!(names(&report.invalid_indexes, |i| &i.index), ["idx_dup_x"]);
    let m = report
        .maintenance
        .iter()
        .find(|t| t.table == "items")
        .expect("items vacuum");
    assert!(m.dead >= 1000, "{m:?}");
    assert!(m.last_analyze.is_some() && m.last_autovacuum.is_none());

    let ivf = report
        .vector_indexes
        .iter()
        .find(|v| v.index == "idx_items_ivf")
        .unwrap();
    assert_eq!(
        (ivf.method.as_str(), ivf.lists, ivf.suggested_lists),
        ("ivfflat", Some(100), Some(1))
    );
    let hnsw = report
        .vector_indexes
        .iter()
        .find(|v| v.index == "idx_items_hnsw")
        .unwrap();
    assert_eq!(
        (hnsw.m, hnsw.ef_construction, hnsw.lists),
        (Some(4), Some(32), None)
    );

    let seq = &report.sequences[0];
    assert_eq!(
        (seq.sequence.as_str(), seq.data_type.as_str()),
        ("seq_hot", "integer")
    );
    assert!(
        seq.used_percent > 97.0 && seq.used_percent < 98.0,
        "{seq:?}"
    );
    let no_pk = names(&report.tables_without_primary_key, |t| &t.table);
    assert!(
        no_pk.contains(&"nopk".into())
            && no_pk.contains(&"dup".into())
            && !no_pk.contains(&"items".into())
    );

    assert_eq!(report.blocked.len(), 1, "{:?}", report.blocked);
    assert_eq!(report.blocked[0].blocked_by, vec![holder_pid]);
    assert_eq!(report.blocked[0].wait_event_type.as_deref(), Some("Lock"));
    assert_eq!(
        names(&report.blocking, |s| s.user.as_deref().unwrap_or("")),
        vec![app.user.to_string()]
    );
    assert_eq!(report.blocking[0].pid, holder_pid);
    let holder_row = report
        .long_running
        .iter()
        .find(|s| s.pid == holder_pid)
        .expect("holder is long-running");
    assert_eq!(holder_row.state.as_deref(), Some("idle in transaction"));
    let app_conns = report
        .connections
        .by_role
        .iter()
        .find(|r| r.role.as_deref() == Some(app.user.as_str()))
        .expect("the app role's connections");
    assert_eq!((app_conns.total, app_conns.idle_in_transaction), (1, 1));
    assert!(report.connections.max_connections > 0 && report.connections.total >= 3);

    let categories: Vec<&str> = report.findings.iter().map(|f| f.category).collect();
    for c in [
        "unused_index",
        "invalid_index",
        "vacuum",
        "vector_index",
        "sequence",
        "no_primary_key",
        "blocked",
        "idle_in_transaction",
        "long_running",
    ] {
        assert!(categories.contains(&c), "no {c} finding in {categories:?}");
    }
    assert!(!categories.contains(&"visibility"));

    // top bounds every category.
    let small = insight(c.client(), &InsightOptions { top: 1, ..options })
        .await
        .unwrap();
    assert!(
        small.tables.len() == 1
            && small.indexes.len() == 1
            && small.tables_without_primary_key.len() == 1
    );
    assert_eq!(small.tables[0].table, report.tables[0].table);

    run(&holder, "ROLLBACK").await;
    assert!(
        waiting.await.unwrap(),
        "the waiter got its lock after the holder ended"
    );
}

#[tokio::test]
async fn without_pg_monitor_other_sessions_are_hidden_and_the_report_says_so() {
    let (db, admin) = troubled_database("insightnomon", false).await;
    let other = connect(&db.target()).await;
    run(&other, "BEGIN; SELECT 1").await;
    let c = connect(&admin).await;
    let report = insight(
        c.client(),
        &InsightOptions {
            top: 5,
            long_running: Duration::ZERO,
        },
    )
    .await
    .expect("insight works without pg_monitor");
    assert!(!report.sees_all_sessions);
    let visibility = report
        .findings
        .iter()
        .find(|f| f.category == "visibility")
        .expect("visibility finding");
    assert!(
        visibility.advice.contains("GRANT pg_monitor"),
        "{visibility:?}"
    );
    // What the catalog says is still there.
    assert_eq!(names(&report.invalid_indexes, |i| &i.index), ["idx_dup_x"]);
    assert_eq!(report.sequences[0].sequence, "seq_hot");
    run(&other, "ROLLBACK").await;
}

#[tokio::test]
async fn the_cli_prints_the_report_bounded_by_top() {
    let (db, _) = troubled_database("insightcli", true).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_db-setup-cli"))
        .args(["insight", "--top", "2", "--database-url"])
        .arg(format!("{}?sslmode=disable", db.url()))
        .output()
        .expect("run db-setup-cli");
    assert!(out.status.success(), "{}", common::text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["options"]["top"], 2);
    assert_eq!(report["tables"].as_array().unwrap().len(), 2);
    assert_eq!(report["invalid_indexes"][0]["index"], "idx_dup_x");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_db-setup-cli"))
        .args(["insight", "--top", "none"])
        .output()
        .unwrap();
    assert!(!bad.status.success() && common::text(&bad).contains("--top must be a whole number"));
}

#[tokio::test]
async fn the_function_answers_the_insight_action() {
    let d = Deployment::new(StackSpec::new("insightfn")).await;
    d.db.query("CREATE TABLE nopk (x int)").await;
    let out = d
        .invoke(&json!({"action": "insight", "top": "3", "long_running": "10min"}))
        .await;
    let report = out.response();
    assert_eq!(report["options"]["top"], 3, "{}", out.text());
    assert_eq!(report["options"]["long_running"], 600.0);
    assert_eq!(report["tables_without_primary_key"][0]["table"], "nopk");
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["category"] == "no_primary_key")
    );
    let bad = d.invoke(&json!({"action": "insight", "top": 0})).await;
    assert!(
        bad.text()
            .contains("top must be a whole number from 1 to 1000"),
        "{}",
        bad.text()
    );
    d.scan().await;
}
