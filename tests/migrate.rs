//! The migration engine against a real PostgreSQL 16 + pgvector.

mod common;

use std::time::Duration;

use common::{Fixture, TestDb, connect, quick_options};
use db_setup::migrate::{MigrateError, Migrator, Problem, RunOptions, TransactionMode};

const A: (&str, &str) = ("001_a.sql", "CREATE TABLE a (id int PRIMARY KEY);");
const B: (&str, &str) = (
    "002_b.sql",
    "CREATE TABLE b (id int);\nINSERT INTO b VALUES (1), (2);",
);
const C: (&str, &str) = ("003_c.sql", "-- Up Migration\nCREATE TABLE c (id int);\n");

fn failure(err: MigrateError) -> Box<db_setup::migrate::MigrationFailure> {
    match err {
        MigrateError::Migration(f) => f,
        other => panic!("expected a migration failure, got: {other}"),
    }
}

#[tokio::test]
async fn fresh_database_gets_every_migration_then_a_second_run_is_a_no_op() {
    let db = TestDb::new("fresh").await;
    let fx = Fixture::new(&[A, B, C]);
    let conn = db.connect().await;
    let migrator = Migrator::new(conn.client(), RunOptions::default());

    let report = migrator.migrate(&fx.set()).await.unwrap();
    let names: Vec<_> = report.applied.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["001_a", "002_b", "003_c"]);
    assert_eq!(report.already_applied, 0);
    assert_eq!(report.last_migration.as_deref(), Some("003_c"));
    assert!(report.applied.iter().all(|s| s.execution_ms >= 0.0));
    assert_eq!(db.history().await, ["001_a", "002_b", "003_c"]);
    // One batch: one run_on for all, ids in order, checksums recorded.
    assert_eq!(
        db.query("SELECT count(DISTINCT run_on) FROM pgmigrations")
            .await,
        ["1"]
    );
    assert_eq!(db.query("SELECT count(*) FROM pgmigrations WHERE checksum ~ '^[0-9a-f]{64}$' AND execution_ms >= 0").await, ["3"]);
    assert_eq!(db.query("SELECT count(*) FROM b").await, ["2"]);

    let again = migrator.migrate(&fx.set()).await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.already_applied, 3);
    assert_eq!(again.last_migration.as_deref(), Some("003_c"));
    assert_eq!(db.history().await.len(), 3);
}

#[tokio::test]
async fn history_table_is_created_exactly_as_node_pg_migrate_creates_it() {
    let db = TestDb::new("table").await;
    let conn = db.connect().await;
    Migrator::new(conn.client(), RunOptions::default())
        .migrate(&Fixture::new(&[A]).set())
        .await
        .unwrap();
    let columns = db
        .query(
            "SELECT column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '-') \
             FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'pgmigrations' ORDER BY ordinal_position",
        )
        .await;
    assert_eq!(
        columns,
        [
            "id integer NO nextval('pgmigrations_id_seq'::regclass)",
            "name character varying NO -",
            "run_on timestamp without time zone NO -",
            "checksum character varying YES -",
            "execution_ms double precision YES -",
        ]
    );
    assert_eq!(
        db.query("SELECT count(*) FROM information_schema.table_constraints WHERE table_name = 'pgmigrations' AND constraint_type = 'PRIMARY KEY'").await,
        ["1"]
    );
}

#[tokio::test]
async fn batch_mode_failure_leaves_nothing_of_the_batch() {
    let db = TestDb::new("batchfail").await;
    let fx = Fixture::new(&[A]);
    let conn = db.connect().await;
    let migrator = Migrator::new(conn.client(), RunOptions::default());
    migrator.migrate(&fx.set()).await.unwrap();

    fx.write(B.0, B.1);
    fx.write(
        "003_bad.sql",
        "CREATE TABLE bad1 (id int);\n\nINSERT INTO nope VALUES (1);\n",
    );
    fx.write("004_d.sql", "CREATE TABLE d (id int);");
    let f = failure(migrator.migrate(&fx.set()).await.unwrap_err());
    assert_eq!(f.migration.as_deref(), Some("003_bad"));
    assert_eq!(f.error.code.as_deref(), Some("42P01"));
    assert_eq!(f.error.message, "relation \"nope\" does not exist");
    let loc = f.location.expect("position");
    assert_eq!((loc.line, loc.column), (3, 13));
    assert_eq!(f.rolled_back, ["002_b", "003_bad", "004_d"]);
    let text = f.to_string();
    assert!(
        text.starts_with(
            "migration 003_bad failed at line 3, column 13: 42P01 relation \"nope\" does not exist."
        ),
        "{text}"
    );
    assert!(text.contains("Nothing of its batch was kept"), "{text}");

    // Earlier runs stay; nothing of this batch remains, later ones never ran.
    assert_eq!(db.history().await, ["001_a"]);
    for t in ["b", "bad1", "d"] {
        assert!(!db.table_exists(t).await, "{t} must not exist");
    }
    // The lock was released on the error path: another session takes it at once.
    let other = db.connect().await;
    assert_eq!(
        common::column(
            &other
                .client()
                .simple_query("SELECT pg_try_advisory_lock(7241865325823964)")
                .await
                .unwrap()
        ),
        ["t"]
    );
}

#[tokio::test]
async fn each_mode_keeps_earlier_migrations_and_nothing_of_the_failing_one() {
    let db = TestDb::new("eachfail").await;
    let fx = Fixture::new(&[
        A,
        B,
        ("003_bad.sql", "CREATE TABLE bad1 (id int);\nSELECT 1/0;"),
        ("004_d.sql", "CREATE TABLE d (id int);"),
    ]);
    let conn = db.connect().await;
    let options = RunOptions {
        mode: TransactionMode::Each,
        ..RunOptions::default()
    };
    let f = failure(
        Migrator::new(conn.client(), options)
            .migrate(&fx.set())
            .await
            .unwrap_err(),
    );
    assert_eq!(f.migration.as_deref(), Some("003_bad"));
    assert_eq!(f.error.code.as_deref(), Some("22012"));
    assert_eq!(f.kept, ["001_a", "002_b"]);
    assert!(
        f.to_string()
            .contains("Applied earlier in this run and kept: 001_a, 002_b.")
    );
    assert_eq!(db.history().await, ["001_a", "002_b"]);
    assert!(db.table_exists("b").await);
    assert!(!db.table_exists("bad1").await);
    assert!(!db.table_exists("d").await);
    // Each migration had its own transaction: distinct run_on values.
    assert_eq!(
        db.query("SELECT count(DISTINCT run_on) FROM pgmigrations")
            .await,
        ["2"]
    );
}

#[tokio::test]
async fn a_syntax_error_is_located_in_the_file_after_the_up_marker() {
    let db = TestDb::new("syntax").await;
    let fx = Fixture::new(&[(
        "001_x.sql",
        "-- a header\n-- Up Migration\nCREATE TABLE ok (id int);\nCREATE TABLE ( broken;\n",
    )]);
    let conn = db.connect().await;
    let f = failure(
        Migrator::new(conn.client(), RunOptions::default())
            .migrate(&fx.set())
            .await
            .unwrap_err(),
    );
    assert_eq!(f.error.code.as_deref(), Some("42601"));
    let loc = f.location.expect("syntax errors have a position");
    assert_eq!((loc.line, loc.column), (4, 14));
}

#[tokio::test]
async fn no_transaction_migration_builds_an_index_concurrently_and_splits_the_batch() {
    let db = TestDb::new("notx").await;
    let fx = Fixture::new(&[
        (
            "001_items.sql",
            "CREATE EXTENSION IF NOT EXISTS vector;\nCREATE TABLE items (id bigint PRIMARY KEY, embedding vector(3));\nINSERT INTO items SELECT g, ARRAY[g, g, g]::vector FROM generate_series(1, 50) g;",
        ),
        (
            "002_items_hnsw.sql",
            "-- db-setup: no-transaction\n-- db-setup: statement-timeout=10min\nDROP INDEX CONCURRENTLY IF EXISTS items_embedding_hnsw;\nCREATE INDEX CONCURRENTLY items_embedding_hnsw ON items USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);",
        ),
        ("003_after.sql", "CREATE TABLE after_index (id int);"),
    ]);
    let conn = db.connect().await;
    let report = Migrator::new(conn.client(), RunOptions::default())
        .migrate(&fx.set())
        .await
        .unwrap();
    let flags: Vec<_> = report
        .applied
        .iter()
        .map(|s| (s.name.as_str(), s.no_transaction))
        .collect();
    assert_eq!(
        flags,
        [
            ("001_items", false),
            ("002_items_hnsw", true),
            ("003_after", false)
        ]
    );
    assert_eq!(
        db.query("SELECT am.amname || ' ' || i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam WHERE c.relname = 'items_embedding_hnsw'").await,
        ["hnsw true"]
    );
    // Three steps, three transactions: the no-transaction file split the batch.
    assert_eq!(
        db.query("SELECT count(DISTINCT run_on) FROM pgmigrations")
            .await,
        ["3"]
    );
}

#[tokio::test]
async fn a_failed_concurrent_build_is_reported_by_name_and_the_next_run_recovers() {
    let db = TestDb::new("invalid").await;
    // A unique index over duplicate values fails after creating the index entry,
    // leaving it INVALID, exactly as a failed concurrent pgvector build would.
    let fx = Fixture::new(&[
        (
            "001_t.sql",
            "CREATE TABLE t (x int);\nINSERT INTO t VALUES (1), (1);",
        ),
        (
            "002_idx.sql",
            "-- db-setup: no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS t_x_key;\nCREATE UNIQUE INDEX CONCURRENTLY t_x_key ON t (x);",
        ),
    ]);
    let conn = db.connect().await;
    let migrator = Migrator::new(conn.client(), RunOptions::default());
    let f = failure(migrator.migrate(&fx.set()).await.unwrap_err());
    assert_eq!(f.migration.as_deref(), Some("002_idx"));
    assert_eq!(f.statement, Some(2));
    assert_eq!(f.ran_as, db_setup::migrate::RanAs::NoTransaction);
    assert_eq!(f.error.code.as_deref(), Some("23505"));
    assert_eq!(f.invalid_indexes, ["public.t_x_key"]);
    let text = f.to_string();
    assert!(
        text.contains("Invalid index(es) left: public.t_x_key"),
        "{text}"
    );
    assert!(
        text.contains("runs again from its first statement"),
        "{text}"
    );
    assert_eq!(db.history().await, ["001_t"]);

    // Fix the cause; the migration drops its invalid leftover and succeeds.
    db.query("DELETE FROM t WHERE ctid = (SELECT max(ctid) FROM t)")
        .await;
    let report = migrator.migrate(&fx.set()).await.unwrap();
    assert_eq!(report.applied[0].name, "002_idx");
    assert_eq!(
        db.query("SELECT indisvalid::text FROM pg_index WHERE indexrelid = 't_x_key'::regclass")
            .await,
        ["true"]
    );
}

#[tokio::test]
async fn if_not_exists_over_an_invalid_index_is_caught_not_recorded() {
    let db = TestDb::new("ifnotexists").await;
    let fx = Fixture::new(&[
        (
            "001_t.sql",
            "CREATE TABLE t (x int);\nINSERT INTO t VALUES (1), (1);",
        ),
        (
            "002_idx.sql",
            "-- db-setup: no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_x_key ON t (x);",
        ),
    ]);
    let conn = db.connect().await;
    let migrator = Migrator::new(conn.client(), RunOptions::default());
    failure(migrator.migrate(&fx.set()).await.unwrap_err());
    db.query("DELETE FROM t WHERE ctid = (SELECT max(ctid) FROM t)")
        .await;
    // IF NOT EXISTS now skips the build and the index stays invalid: refused.
    match migrator.migrate(&fx.set()).await.unwrap_err() {
        MigrateError::InvalidIndexes { migration, indexes } => {
            assert_eq!(migration, "002_idx");
            assert_eq!(indexes, ["public.t_x_key"]);
        }
        other => panic!("expected InvalidIndexes, got {other}"),
    }
    assert_eq!(db.history().await, ["001_t"]);
}

/// Polls (up to 10 s) until `sql`, run on `db`, answers `want`.
async fn until(db: &TestDb, sql: &str, want: &str) {
    for _ in 0..100 {
        if db.query(sql).await == [want] {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{sql} never answered {want}");
}

const OWN_INDEX: (&str, &str) = (
    "002_idx.sql",
    "-- db-setup: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS mine_x ON mine (x);",
);

#[tokio::test]
async fn an_unrelated_invalid_index_does_not_stop_a_no_transaction_migration() {
    let db = TestDb::new("otherinvalid").await;
    // Someone else's failed concurrent build, in another schema, before the run.
    db.query(
        "CREATE SCHEMA other; CREATE TABLE other.t (x int); INSERT INTO other.t VALUES (1), (1)",
    )
    .await;
    let conn = db.connect().await;
    let err = conn
        .client()
        .simple_query("CREATE UNIQUE INDEX CONCURRENTLY t_x_key ON other.t (x)")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23505"));

    let fx = Fixture::new(&[("001_mine.sql", "CREATE TABLE mine (x int);"), OWN_INDEX]);
    let report = Migrator::new(conn.client(), RunOptions::default())
        .migrate(&fx.set())
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 2);
    assert_eq!(db.history().await, ["001_mine", "002_idx"]);
    // Still listed by status, as it is still there.
    let status = Migrator::new(conn.client(), RunOptions::default())
        .status(&fx.set())
        .await
        .unwrap();
    assert_eq!(status.invalid_indexes, ["other.t_x_key"]);
}

#[tokio::test]
async fn an_index_another_session_is_building_concurrently_is_not_blamed() {
    let db = TestDb::new("otherbuild").await;
    db.query("CREATE TABLE theirs (x int)").await;
    let conn = db.connect().await;
    // The migration waits on an advisory lock the test holds, so the other build starts mid-file.
    let gate = db.connect().await;
    gate.client()
        .simple_query("SELECT pg_advisory_lock(4242)")
        .await
        .unwrap();
    let fx = Fixture::new(&[
        ("001_mine.sql", "CREATE TABLE mine (x int);"),
        (
            "002_idx.sql",
            "-- db-setup: no-transaction\nSELECT pg_advisory_lock(4242);\nSELECT pg_advisory_unlock(4242);\nCREATE INDEX CONCURRENTLY IF NOT EXISTS mine_x ON mine (x);",
        ),
    ]);
    let set = fx.set();
    let migrator = Migrator::new(conn.client(), RunOptions::default());
    let run = migrator.migrate(&set);
    let other = async {
        until(
            &db,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'",
            "1",
        )
        .await;
        // Another session's CREATE INDEX CONCURRENTLY, held in its first wait by an open writer:
        // its index exists, INVALID, while the migration runs.
        let writer = db.connect().await;
        writer
            .client()
            .simple_query("BEGIN; INSERT INTO theirs VALUES (1)")
            .await
            .unwrap();
        let builder = db.connect().await;
        let build = tokio::spawn(async move {
            builder
                .client()
                .simple_query("CREATE INDEX CONCURRENTLY theirs_x ON theirs (x)")
                .await
                .map(|_| ())
        });
        until(
            &db,
            "SELECT count(*) FROM pg_stat_progress_create_index WHERE relid = 'theirs'::regclass",
            "1",
        )
        .await;
        until(
            &db,
            "SELECT count(*) FROM pg_index WHERE indexrelid = 'theirs_x'::regclass AND NOT indisvalid",
            "1",
        )
        .await;
        gate.client()
            .simple_query("SELECT pg_advisory_unlock(4242)")
            .await
            .unwrap();
        (writer, build)
    };
    let (result, (writer, build)) = tokio::join!(run, other);
    let report = result.unwrap();
    assert_eq!(report.applied.len(), 2);
    assert_eq!(db.history().await, ["001_mine", "002_idx"]);
    writer.client().simple_query("COMMIT").await.unwrap();
    build.await.unwrap().unwrap();
}

#[tokio::test]
async fn lock_held_by_another_session_makes_the_run_wait_then_fail_naming_the_holder() {
    let db = TestDb::new("lockheld").await;
    let holder = db.connect().await;
    holder
        .client()
        .simple_query(
            "SET application_name = 'other-deploy'; SELECT pg_advisory_lock(7241865325823964)",
        )
        .await
        .unwrap();
    let holder_pid = common::column(
        &holder
            .client()
            .simple_query("SELECT pg_backend_pid()")
            .await
            .unwrap(),
    );

    let conn = db.connect().await;
    let options = RunOptions {
        lock_wait: Duration::from_millis(1500),
        ..RunOptions::default()
    };
    let started = std::time::Instant::now();
    let err = Migrator::new(conn.client(), options)
        .migrate(&Fixture::new(&[A]).set())
        .await
        .unwrap_err();
    let waited = started.elapsed();
    match &err {
        MigrateError::LockTimeout { holder, .. } => {
            let h = holder.as_ref().expect("holder visible to a superuser");
            assert_eq!(h.pid.to_string(), holder_pid[0]);
            assert_eq!(h.application_name.as_deref(), Some("other-deploy"));
        }
        other => panic!("expected LockTimeout, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.starts_with("another migration is already running"),
        "{text}"
    );
    assert!(
        text.contains(&format!("backend pid {}", holder_pid[0])),
        "{text}"
    );
    assert!(
        waited >= Duration::from_millis(1500),
        "it waited {waited:?}"
    );
    assert!(
        !db.table_exists("a").await,
        "it must never run beside the holder"
    );
    assert!(!db.table_exists("pgmigrations").await);
}

#[tokio::test]
async fn the_run_proceeds_once_the_holder_releases_the_lock() {
    let db = TestDb::new("lockwait").await;
    let holder = db.connect().await;
    holder
        .client()
        .simple_query("SELECT pg_advisory_lock(7241865325823964)")
        .await
        .unwrap();
    let release = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        holder
            .client()
            .simple_query("SELECT pg_advisory_unlock(7241865325823964)")
            .await
            .unwrap();
    };
    let conn = db.connect().await;
    let migrator = Migrator::new(conn.client(), quick_options());
    let set = Fixture::new(&[A]).set();
    let (report, ()) = tokio::join!(migrator.migrate(&set), release);
    let report = report.unwrap();
    assert_eq!(report.applied.len(), 1);
    assert!(report.lock_wait_ms >= 300, "{}", report.lock_wait_ms);
}

#[tokio::test]
async fn lock_timeout_is_retried_with_backoff_then_fails_clearly() {
    let db = TestDb::new("locktimeout").await;
    let fx = Fixture::new(&[A]);
    let conn = db.connect().await;
    Migrator::new(conn.client(), RunOptions::default())
        .migrate(&fx.set())
        .await
        .unwrap();

    let blocker = db.connect().await;
    blocker
        .client()
        .simple_query("BEGIN; LOCK TABLE a IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    fx.write("002_alter.sql", "ALTER TABLE a ADD COLUMN note text;");
    let options = RunOptions {
        lock_timeout: Duration::from_millis(200),
        lock_retries: 2,
        retry_pause: Duration::from_millis(50),
        ..RunOptions::default()
    };
    let f = failure(
        Migrator::new(conn.client(), options.clone())
            .migrate(&fx.set())
            .await
            .unwrap_err(),
    );
    assert_eq!(f.error.code.as_deref(), Some("55P03"));
    assert_eq!(f.attempts, 3);
    let text = f.to_string();
    assert!(
        text.contains("(after 3 attempts)") && text.contains("lock_timeout (200ms)"),
        "{text}"
    );
    assert_eq!(db.history().await, ["001_a"]);

    // The blocker goes away during the retries: the run succeeds.
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        blocker.client().simple_query("COMMIT").await.unwrap();
    };
    let options = RunOptions {
        lock_retries: 5,
        retry_pause: Duration::from_millis(100),
        ..options
    };
    blocker
        .client()
        .simple_query("BEGIN; LOCK TABLE a IN ACCESS EXCLUSIVE MODE")
        .await
        .ok();
    let migrator = Migrator::new(conn.client(), options);
    let set = fx.set();
    let (report, ()) = tokio::join!(migrator.migrate(&set), release);
    assert_eq!(report.unwrap().applied[0].name, "002_alter");
}

#[tokio::test]
async fn statement_timeout_stops_a_slow_migration_and_a_directive_lifts_it() {
    let db = TestDb::new("stmttimeout").await;
    let fx = Fixture::new(&[(
        "001_slow.sql",
        "CREATE TABLE slow (id int);\nSELECT pg_sleep(1);",
    )]);
    let conn = db.connect().await;
    let options = RunOptions {
        statement_timeout: Duration::from_millis(300),
        ..RunOptions::default()
    };
    let f = failure(
        Migrator::new(conn.client(), options.clone())
            .migrate(&fx.set())
            .await
            .unwrap_err(),
    );
    assert_eq!(f.error.code.as_deref(), Some("57014"));
    assert!(f.to_string().contains("statement_timeout (300ms)"));
    assert!(!db.table_exists("slow").await);

    fx.write(
        "001_slow.sql",
        "-- db-setup: statement-timeout=5s\nCREATE TABLE slow (id int);\nSELECT pg_sleep(1);",
    );
    let report = Migrator::new(conn.client(), options)
        .migrate(&fx.set())
        .await
        .unwrap();
    assert!(
        report.applied[0].execution_ms >= 1000.0,
        "{:?}",
        report.applied
    );
}

#[tokio::test]
async fn an_edited_applied_migration_is_refused_as_drift() {
    let db = TestDb::new("drift").await;
    let fx = Fixture::new(&[A, B]);
    let conn = db.connect().await;
    let migrator = Migrator::new(conn.client(), RunOptions::default());
    migrator.migrate(&fx.set()).await.unwrap();
    fx.write(B.0, "CREATE TABLE b (id int, edited bool);");
    fx.write(C.0, C.1);
    match migrator.migrate(&fx.set()).await.unwrap_err() {
        MigrateError::Plan(e) => {
            assert!(
                matches!(&e.0[..], [Problem::ChecksumDrift { name, .. }] if name == "002_b"),
                "{e}"
            );
            assert!(
                e.to_string()
                    .contains("002_b was edited after it was applied")
            );
        }
        other => panic!("expected drift, got {other}"),
    }
    assert!(!db.table_exists("c").await);
}

#[tokio::test]
async fn a_recorded_migration_without_its_file_is_refused() {
    let db = TestDb::new("missing").await;
    let fx = Fixture::new(&[A, B, C]);
    let conn = db.connect().await;
    let migrator = Migrator::new(conn.client(), RunOptions::default());
    migrator.migrate(&fx.set()).await.unwrap();
    fx.remove(B.0);
    let err = migrator.migrate(&fx.set()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("migration 002_b is recorded in pgmigrations but has no file"),
        "{err}"
    );
}

#[tokio::test]
async fn history_newer_than_every_file_is_reported_as_the_database_being_ahead() {
    let db = TestDb::new("ahead").await;
    let fx = Fixture::new(&[A, B, C]);
    let conn = db.connect().await;
    let migrator = Migrator::new(conn.client(), RunOptions::default());
    migrator.migrate(&fx.set()).await.unwrap();
    fx.remove(C.0);
    match migrator.migrate(&fx.set()).await.unwrap_err() {
        MigrateError::Plan(e) => {
            assert!(e.is_database_ahead(), "{e}");
            assert!(
                e.to_string()
                    .contains("the database is ahead of these migrations: 003_c"),
                "{e}"
            );
        }
        other => panic!("expected a plan error, got {other}"),
    }
}

#[tokio::test]
async fn a_new_file_numbered_before_applied_ones_is_refused() {
    let db = TestDb::new("order").await;
    let fx = Fixture::new(&[
        ("010_a.sql", "select 1"),
        ("020_b.sql", "select 1"),
        ("030_c.sql", "select 1"),
    ]);
    let conn = db.connect().await;
    let migrator = Migrator::new(conn.client(), RunOptions::default());
    migrator.migrate(&fx.set()).await.unwrap();
    fx.write("015_mid.sql", "CREATE TABLE mid (id int);");
    let err = migrator.migrate(&fx.set()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Not run migration 015_mid is preceding already run migration 020_b: give 015_mid a number after the last applied migration"
    );
    assert!(!db.table_exists("mid").await);
}

#[tokio::test]
async fn migrate_up_to_a_target_then_the_rest() {
    let db = TestDb::new("target").await;
    let fx = Fixture::new(&[A, B, C]);
    let conn = db.connect().await;
    let options = RunOptions {
        up_to: Some("002_b".into()),
        ..RunOptions::default()
    };
    let report = Migrator::new(conn.client(), options)
        .migrate(&fx.set())
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 2);
    assert_eq!(report.pending, ["003_c"]);
    assert_eq!(db.history().await, ["001_a", "002_b"]);
    let rest = Migrator::new(conn.client(), RunOptions::default())
        .migrate(&fx.set())
        .await
        .unwrap();
    assert_eq!(rest.applied[0].name, "003_c");
}

#[tokio::test]
async fn status_reports_history_pending_drift_and_the_lock_holder_without_writing() {
    let db = TestDb::new("status").await;
    let fx = Fixture::new(&[A, B]);
    let conn = db.connect().await;

    let empty = Migrator::new(conn.client(), RunOptions::default())
        .status(&fx.set())
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(empty.history_table).unwrap(),
        "missing"
    );
    assert_eq!(empty.pending.len(), 2);
    assert!(
        !db.table_exists("pgmigrations").await,
        "status must not create the table"
    );

    Migrator::new(conn.client(), RunOptions::default())
        .migrate(&fx.set())
        .await
        .unwrap();
    fx.write(A.0, "CREATE TABLE a (id int PRIMARY KEY, edited int);");
    fx.write(C.0, C.1);
    let holder = db.connect().await;
    holder
        .client()
        .simple_query("SELECT pg_advisory_lock(7241865325823964)")
        .await
        .unwrap();
    let status = Migrator::new(conn.client(), RunOptions::default())
        .status(&fx.set())
        .await
        .unwrap();
    assert_eq!(status.applied.len(), 2);
    assert!(
        status
            .applied
            .iter()
            .all(|r| !r.run_on.is_empty() && r.execution_ms.is_some())
    );
    assert_eq!(
        status
            .pending
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["003_c"]
    );
    assert!(
        matches!(&status.problems[..], [Problem::ChecksumDrift { name, .. }] if name == "001_a")
    );
    assert!(status.plan.is_none());
    assert!(status.lock_holder.is_some());
}

#[tokio::test]
async fn rows_written_without_checksum_are_adopted() {
    let db = TestDb::new("adopt").await;
    let fx = Fixture::new(&[A, B, C]);
    // A history written the way node-pg-migrate writes it.
    db.query(
        "CREATE TABLE public.pgmigrations (id SERIAL PRIMARY KEY, name varchar(255) NOT NULL, run_on timestamp NOT NULL); \
         CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int); \
         INSERT INTO pgmigrations (name, run_on) VALUES ('001_a', NOW()), ('002_b', NOW())",
    )
    .await;
    let conn = db.connect().await;
    let report = Migrator::new(conn.client(), RunOptions::default())
        .migrate(&fx.set())
        .await
        .unwrap();
    assert_eq!(
        report
            .applied
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["003_c"]
    );
    assert_eq!(report.adopted_checksums, ["001_a", "002_b"]);
    assert_eq!(
        db.query("SELECT count(*) FROM pgmigrations WHERE checksum IS NULL")
            .await,
        ["0"]
    );
}

#[tokio::test]
async fn the_embedded_set_applies_to_a_fresh_database() {
    let db = TestDb::new("embedded").await;
    let set = db_setup::migrate::MigrationSet::embedded().unwrap();
    let conn = connect(&db.target()).await;
    let report = Migrator::new(conn.client(), RunOptions::default())
        .migrate(&set)
        .await
        .unwrap();
    assert_eq!(report.applied.len(), set.migrations().len());
    assert_eq!(report.last_migration.as_deref(), set.last());
}
