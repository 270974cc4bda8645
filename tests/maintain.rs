//! Day-2 history actions against the real server: recognizing other tools'
//! history tables, `baseline` (adopting a database whose schema was built
//! another way) and `repair` (through the CLI with `--dir`, since the
//! embedded set cannot change in a test).

mod common;

use std::process::Output;

use common::{Fixture, TestDb, node_pg_migrate, repo_root, text};
use db_setup::migrate::foreign::Tool;
use db_setup::migrate::{MigrateError, MigrationSet, Migrator, RunOptions};
use db_setup::verify::Spec;
use serde_json::Value;

/// One table per tool, built as the tool builds it, with a few rows.
const TOOLS: [(Tool, &str, &str, i64, &str); 5] = [
    (
        Tool::Prisma,
        "public._prisma_migrations",
        r#"CREATE TABLE "_prisma_migrations" ("id" VARCHAR(36) PRIMARY KEY NOT NULL, "checksum" VARCHAR(64) NOT NULL,
             "finished_at" TIMESTAMPTZ, "migration_name" VARCHAR(255) NOT NULL, "logs" TEXT, "rolled_back_at" TIMESTAMPTZ,
             "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(), "applied_steps_count" INTEGER NOT NULL DEFAULT 0);
           INSERT INTO "_prisma_migrations" (id, checksum, finished_at, migration_name, started_at, applied_steps_count) VALUES
             ('a1', 'c1', '2024-03-01 10:00:05+00', '0001_enable_pgvector', '2024-03-01 10:00:00+00', 1),
             ('a2', 'c2', '2024-03-02 10:00:05+00', '0002_create_tables', '2024-03-02 10:00:00+00', 1),
             ('a3', 'c3', NULL, '0003_create_vector_indexes', '2024-03-03 10:00:00+00', 0);"#,
        2,
        "0002_create_tables",
    ),
    (
        Tool::Drizzle,
        "drizzle.__drizzle_migrations",
        r#"CREATE SCHEMA IF NOT EXISTS "drizzle";
           CREATE TABLE IF NOT EXISTS "drizzle"."__drizzle_migrations" (id SERIAL PRIMARY KEY, hash text NOT NULL, created_at bigint);
           INSERT INTO "drizzle"."__drizzle_migrations" (hash, created_at) VALUES
             ('9f1e', 1709287200000), ('77ab', 1709373600000), ('c0de', 1709460000000);"#,
        3,
        "c0de",
    ),
    (
        Tool::Knex,
        "public.knex_migrations",
        r#"create table "knex_migrations" ("id" serial primary key, "name" varchar(255), "batch" integer, "migration_time" timestamptz);
           create table "knex_migrations_lock" ("index" serial primary key, "is_locked" integer);
           insert into "knex_migrations" ("name", "batch", "migration_time") values
             ('20240211000001_initial_setup.ts', 1, '2024-02-11 10:00:00+00'),
             ('20240211000004_create_evaluation_tables.ts', 2, '2024-02-12 10:00:00+00');"#,
        2,
        "20240211000004_create_evaluation_tables.ts",
    ),
    (
        Tool::NodePgMigrate,
        "legacy.pgmigrations",
        r#"CREATE SCHEMA legacy;
           CREATE TABLE "legacy"."pgmigrations" (id SERIAL PRIMARY KEY, name varchar(255) NOT NULL, run_on timestamp NOT NULL);
           INSERT INTO legacy.pgmigrations (name, run_on) VALUES ('000_initial_schema', '2024-01-01 09:00'),
             ('001_add_users', '2024-01-05 09:00');"#,
        2,
        "001_add_users",
    ),
    (
        Tool::CustomRunner,
        "public.migrations",
        r#"CREATE TABLE migrations (id UUID PRIMARY KEY, version VARCHAR(10) UNIQUE, name VARCHAR(255), checksum VARCHAR(64),
             applied_at TIMESTAMP, execution_time INTEGER, success BOOLEAN, error TEXT, rolled_back_at TIMESTAMP);
           INSERT INTO migrations VALUES
             ('00000000-0000-0000-0000-000000000001', '0001', 'initial', 'x', '2024-04-01 08:00', 12, true, NULL, NULL),
             ('00000000-0000-0000-0000-000000000002', '0002', 'user_tables', 'y', '2024-04-02 08:00', 30, true, NULL, NULL),
             ('00000000-0000-0000-0000-000000000003', '0003', 'broken', 'z', '2024-04-03 08:00', 5, false, 'boom', NULL);"#,
        2,
        "0002_user_tables",
    ),
];

fn small_set() -> Fixture {
    Fixture::new(&[("001_a.sql", "CREATE TABLE a (id int);")])
}

#[tokio::test]
async fn status_recognizes_each_tools_history_and_says_how_to_adopt() {
    let fx = small_set();
    for (tool, table, ddl, count, last) in TOOLS {
        let db = TestDb::new("foreign").await;
        db.query(ddl).await;
        let conn = db.connect().await;
        let status = Migrator::new(conn.client(), RunOptions::default())
            .status(&fx.set())
            .await
            .unwrap();
        assert_eq!(status.other_histories.len(), 1, "{tool:?}: {status:?}");
        let found = &status.other_histories[0];
        assert_eq!(
            (found.tool, found.table.as_str(), found.applied),
            (tool, table, count)
        );
        assert_eq!(found.last.as_deref(), Some(last), "{tool:?}");
        assert!(found.last_at.is_some(), "{tool:?}: {found:?}");
        let advice = status.advice.join("\n");
        assert!(
            advice.contains(&format!("{count} migration(s) applied, the last {last}")),
            "{advice}"
        );
        assert!(advice.contains("\"action\": \"baseline\""), "{advice}");
    }
}

#[tokio::test]
async fn tables_that_only_share_a_name_are_not_taken_for_a_history() {
    let db = TestDb::new("foreign_no").await;
    db.query(
        "CREATE TABLE migrations (id int, note text); CREATE TABLE public.pgmigrations_x (id int)",
    )
    .await;
    let conn = db.connect().await;
    let status = Migrator::new(conn.client(), RunOptions::default())
        .status(&small_set().set())
        .await
        .unwrap();
    assert!(status.other_histories.is_empty(), "{status:?}");
    assert!(status.advice.is_empty(), "{:?}", status.advice);
}

/// Runs the embedded files up to `to` by hand, as a team without our
/// history did: each file as one script, a no-transaction file statement
/// by statement.
async fn build_by_hand(db: &TestDb, set: &MigrationSet, to: &str) {
    let conn = db.connect().await;
    for m in set.migrations() {
        if m.directives.no_transaction {
            for (_, statement) in m.statement_texts() {
                conn.client()
                    .simple_query(statement)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", m.name));
            }
        } else {
            conn.client()
                .simple_query(m.sql())
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", m.name));
        }
        if m.name == to {
            return;
        }
    }
    panic!("no migration {to}");
}

#[tokio::test]
async fn baseline_adopts_a_hand_built_database_and_a_deploy_then_runs_only_the_rest() {
    let db = TestDb::new("baseline").await;
    let set = MigrationSet::embedded().unwrap();
    let spec = Spec::embedded().unwrap();
    let to = "007_mued_rag_metrics_and_provenance";
    build_by_hand(&db, &set, to).await;
    let conn = db.connect().await;
    let migrator = Migrator::new(conn.client(), RunOptions::default());

    // Without confirm: what it would do, and nothing changed.
    let dry = migrator
        .baseline(&set, &spec, to, false, false)
        .await
        .unwrap();
    assert!(!dry.confirmed && !dry.changed, "{dry:?}");
    assert_eq!(dry.recorded.len(), 7);
    assert!(dry.missing_objects.is_empty(), "{dry:?}");
    assert!(!db.table_exists("pgmigrations").await);

    let done = migrator
        .baseline(&set, &spec, to, false, true)
        .await
        .unwrap();
    assert!(done.confirmed && done.changed && !done.forced, "{done:?}");
    let expected: Vec<(String, String)> = set.migrations()[..7]
        .iter()
        .map(|m| (m.name.clone(), m.checksum.clone()))
        .collect();
    let rows = db
        .query("SELECT name || ' ' || checksum || ' ' || (execution_ms IS NULL) FROM pgmigrations ORDER BY id")
        .await;
    assert_eq!(
        rows,
        expected
            .iter()
            .map(|(n, c)| format!("{n} {c} true"))
            .collect::<Vec<_>>()
    );

    // A second baseline refuses: the history exists now.
    let again = migrator
        .baseline(&set, &spec, to, false, true)
        .await
        .unwrap_err();
    assert!(
        again
            .to_string()
            .contains("is already recorded in pgmigrations"),
        "{again}"
    );

    let report = migrator.migrate(&set).await.unwrap();
    let applied: Vec<&str> = report.applied.iter().map(|s| s.name.as_str()).collect();
    let rest: Vec<&str> = set.migrations()[7..]
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(applied, rest);
    assert_eq!(report.already_applied, 7);

    // node-pg-migrate agrees: every file is applied.
    let out = node_pg_migrate(&db, &repo_root().join("migrations"), &["up"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("No migrations to run!"), "{log}");
}

#[tokio::test]
async fn baseline_refuses_when_objects_are_missing_and_force_says_so() {
    let db = TestDb::new("baseline_missing").await;
    let set = MigrationSet::embedded().unwrap();
    let spec = Spec::embedded().unwrap();
    // Only the extensions: the tables of 002 are missing.
    build_by_hand(&db, &set, "001_extensions").await;
    let conn = db.connect().await;
    let migrator = Migrator::new(conn.client(), RunOptions::default());
    let err = migrator
        .baseline(&set, &spec, "002_educore_tables", false, true)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(
        err,
        MigrateError::Refused {
            action: "baseline",
            ..
        }
    ));
    assert!(message.contains("table tenants"), "{message}");
    assert!(!message.contains("extension vector"), "{message}");
    assert!(!db.table_exists("pgmigrations").await);

    // Up to 001 the objects are there.
    let ok = migrator
        .baseline(&set, &spec, "001_extensions", false, false)
        .await
        .unwrap();
    assert!(ok.missing_objects.is_empty(), "{ok:?}");

    let forced = migrator
        .baseline(&set, &spec, "002_educore_tables", true, true)
        .await
        .unwrap();
    assert!(forced.forced && forced.changed, "{forced:?}");
    assert!(forced.missing_objects.iter().any(|o| o.name == "tenants"));
    assert!(forced.message.contains("forced"), "{}", forced.message);
    assert_eq!(db.history().await, ["001_extensions", "002_educore_tables"]);
}

fn cli(db: &TestDb, dir: &Fixture, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_db-setup-cli"))
        .args(args)
        .arg("--dir")
        .arg(dir.path())
        .env("DATABASE_URL", format!("{}?sslmode=disable", db.url()))
        .output()
        .expect("run db-setup-cli")
}

/// The command failed, saying `needle`.
fn failed_with(out: &Output, needle: &str) {
    assert!(!out.status.success(), "{}", text(out));
    assert!(text(out).contains(needle), "{}", text(out));
}

fn report(out: &Output) -> Value {
    assert!(out.status.success(), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

async fn checksums(db: &TestDb) -> Vec<String> {
    db.query("SELECT name || '=' || coalesce(checksum, '') FROM pgmigrations ORDER BY id")
        .await
}

#[tokio::test]
async fn repair_accepts_named_checksums_and_forgets_named_rows_only() {
    let db = TestDb::new("repair").await;
    let fx = Fixture::new(&[
        ("001_a.sql", "CREATE TABLE a (id int);"),
        ("002_b.sql", "CREATE TABLE b (id int);"),
        ("003_c.sql", "CREATE TABLE c (id int);"),
        ("004_d.sql", "CREATE TABLE d (id int);"),
    ]);
    report(&cli(&db, &fx, &["migrate"]));
    // Harmless edits of 001 and 002 (comments), and 003, 004 deleted.
    fx.write("001_a.sql", "-- who owns a\nCREATE TABLE a (id int);");
    fx.write("002_b.sql", "-- b holds bees\nCREATE TABLE b (id int);");
    fx.remove("003_c.sql");
    fx.remove("004_d.sql");
    let before = checksums(&db).await;

    let status = report(&cli(&db, &fx, &["plan"]));
    assert_eq!(
        status["repair"]["accept_checksums"],
        serde_json::json!(["001_a", "002_b"])
    );
    assert!(status["plan"].is_null(), "a migrate would refuse: {status}");

    // Without --confirm: the changes shown, none made.
    let dry = report(&cli(
        &db,
        &fx,
        &["repair", "--accept-checksum", "002_b", "--forget", "003_c"],
    ));
    assert_eq!(dry["changed"], false);
    assert_eq!(dry["accept_checksums"][0]["name"], "002_b");
    assert_eq!(checksums(&db).await, before);

    // Naming something that needs no repair changes nothing.
    let refused = cli(
        &db,
        &fx,
        &[
            "repair",
            "--accept-checksum",
            "002_b",
            "--forget",
            "001_a",
            "--confirm",
        ],
    );
    failed_with(&refused, "001_a still has a file");
    assert_eq!(checksums(&db).await, before);

    let done = report(&cli(
        &db,
        &fx,
        &[
            "repair",
            "--accept-checksum",
            "002_b",
            "--forget",
            "003_c",
            "--confirm",
        ],
    ));
    assert_eq!(done["changed"], true);
    let new_b = fx.set().migrations()[1].checksum.clone();
    assert_eq!(done["accept_checksums"][0]["new"], new_b.as_str());
    assert_eq!(
        done["accept_checksums"][0]["old"].as_str(),
        before[1].strip_prefix("002_b=")
    );
    assert_eq!(done["forget"][0]["name"], "003_c");
    let after = checksums(&db).await;
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(after[0], before[0], "001_a was not named: untouched");
    assert_eq!(after[1], format!("002_b={new_b}"));
    assert_eq!(after[2], before[3], "004_d was not named: kept");

    // What was not named still stops a migrate.
    let out = cli(&db, &fx, &["migrate"]);
    assert!(!out.status.success());
    let log = text(&out);
    assert!(
        log.contains("001_a was edited") && log.contains("004_d"),
        "{log}"
    );
    assert!(!log.contains("002_b"), "{log}");
}

#[tokio::test]
async fn repair_waits_for_the_migration_lock_and_changes_nothing_without_it() {
    let db = TestDb::new("repair_lock").await;
    let fx = Fixture::new(&[("001_a.sql", "CREATE TABLE a (id int);")]);
    report(&cli(&db, &fx, &["migrate"]));
    fx.write("001_a.sql", "-- edited\nCREATE TABLE a (id int);");
    let before = checksums(&db).await;
    let holder = db.connect().await;
    holder
        .client()
        .simple_query(&format!(
            "SELECT pg_advisory_lock({})",
            db_setup::migrate::lock::KEY
        ))
        .await
        .unwrap();
    let out = cli(
        &db,
        &fx,
        &[
            "repair",
            "--accept-checksum",
            "001_a",
            "--confirm",
            "--lock-wait",
            "1s",
        ],
    );
    failed_with(&out, "another migration is already running");
    assert_eq!(checksums(&db).await, before);
}

/// The same actions through the function: a dry run changes nothing, a
/// confirmed baseline records, a deploy then runs only the rest, and a
/// repair that names nothing is refused.
#[tokio::test]
async fn the_function_baselines_on_a_manual_invoke_and_the_deploy_runs_the_rest() {
    use common::lambda::{Deployment, StackSpec};
    use serde_json::json;
    let d = Deployment::new(StackSpec::new("baseline_fn")).await;
    let set = MigrationSet::embedded().unwrap();
    let to = "007_mued_rag_metrics_and_provenance";
    build_by_hand(&d.db, &set, to).await;

    let dry = d.invoke(&json!({"action": "baseline", "to": to})).await;
    assert_eq!(dry.response()["changed"], false, "{}", dry.text());
    assert_eq!(dry.response()["recorded"].as_array().unwrap().len(), 7);
    assert!(!d.db.table_exists("pgmigrations").await);

    let done = d
        .invoke(&json!({"action": "baseline", "to": to, "confirm": true}))
        .await;
    assert_eq!(done.response()["changed"], true, "{}", done.text());
    assert_eq!(done.response()["forced"], false);

    let refused = d
        .invoke(&json!({"action": "repair", "confirm": true}))
        .await;
    assert!(
        refused.error()["errorMessage"]
            .as_str()
            .unwrap()
            .contains("repair refused, nothing was changed: name what to repair"),
        "{}",
        refused.text()
    );

    let (_, put) = d
        .request(
            "Create",
            json!({"MigrationsHash": set.hash(), "ManageUsers": "false"}),
        )
        .await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert_eq!(
        put.body["Data"]["Applied"],
        (set.migrations().len() - 7).to_string()
    );
    assert_eq!(put.body["Data"]["AlreadyApplied"], "7");
    d.scan().await;
}

/// A role that may not read the other tool's table still gets a status,
/// the table named and the reason given.
#[tokio::test]
async fn another_tools_table_the_role_cannot_read_is_reported_not_fatal() {
    let db = TestDb::new("foreign_denied").await;
    let (_, _, knex, _, _) = TOOLS[2];
    db.query(knex).await;
    let role = format!("reader_{}", std::process::id());
    db.query(&format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD 'reader-pw'; \
         REVOKE ALL ON knex_migrations FROM PUBLIC"
    ))
    .await;
    let mut target = db.target();
    target.user = role.clone();
    target.password = db_setup::redacted::SecretString::new("reader-pw".to_string());
    let conn = common::connect(&target).await;
    let status = Migrator::new(conn.client(), RunOptions::default())
        .status(&small_set().set())
        .await
        .unwrap();
    drop(conn);
    db.query(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await;
    assert_eq!(status.other_histories.len(), 1, "{status:?}");
    let found = &status.other_histories[0];
    assert_eq!(found.tool, Tool::Knex);
    assert!(
        found
            .unreadable
            .as_deref()
            .is_some_and(|u| u.contains("42501")),
        "{found:?}"
    );
    assert!(
        status.advice[0].contains("its rows could not be read"),
        "{:?}",
        status.advice
    );
}
