//! Interop with the real node-pg-migrate 9.0.0 on the same database: the six
//! cases of shared/reference/node-pg-migrate-compat.md, in both directions.

mod common;

use std::time::Duration;

use common::{Fixture, TestDb, node_pg_migrate, text};
use db_setup::migrate::{MigrateError, Migrator, RunOptions, TransactionMode};

const A: (&str, &str) = ("001_a.sql", "CREATE TABLE a (id int);");
const B: (&str, &str) = ("002_b.sql", "CREATE TABLE b (id int);");
const C: (&str, &str) = ("003_c.sql", "CREATE TABLE c (id int);");

/// Case 1: a table node-pg-migrate wrote (same run_on for 001 and 002):
/// only 003 runs, and the old rows get their checksums.
#[tokio::test]
async fn case1_history_written_by_node_pg_migrate_is_adopted() {
    let db = TestDb::new("np_case1").await;
    let fx = Fixture::new(&[A, B]);
    let out = node_pg_migrate(&db, fx.path(), &["up"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        db.query("SELECT count(DISTINCT run_on) FROM pgmigrations")
            .await,
        ["1"]
    );
    assert_eq!(
        db.query(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'pgmigrations'"
        )
        .await,
        ["3"]
    );

    fx.write(C.0, C.1);
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
    assert_eq!(report.already_applied, 2);
    assert_eq!(report.adopted_checksums, ["001_a", "002_b"]);
    assert_eq!(db.history().await, ["001_a", "002_b", "003_c"]);
}

/// Case 2: a table this tool wrote, then `node-pg-migrate up` on the same
/// directory: "No migrations to run!" and no DDL on the table.
#[tokio::test]
async fn case2_node_pg_migrate_sees_nothing_to_run_after_this_tool() {
    let db = TestDb::new("np_case2").await;
    let fx = Fixture::new(&[A, B, C]);
    let conn = db.connect().await;
    Migrator::new(conn.client(), RunOptions::default())
        .migrate(&fx.set())
        .await
        .unwrap();
    // Any DDL on the table rewrites its pg_class row (a new xmin) or its columns.
    let shape = "SELECT (SELECT xmin::text FROM pg_class WHERE oid = 'public.pgmigrations'::regclass) || ' ' || \
                 string_agg(column_name || ':' || data_type, ',' ORDER BY ordinal_position) \
                 FROM information_schema.columns WHERE table_name = 'pgmigrations'";
    let before = db.query(shape).await;

    let out = node_pg_migrate(&db, fx.path(), &["up"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("No migrations to run!"), "{log}");
    assert_eq!(
        db.query(shape).await,
        before,
        "node-pg-migrate changed the table"
    );
    assert_eq!(db.history().await.len(), 3);
}

/// Case 3: a new file numbered between applied ones is refused by both tools,
/// with messages naming both migrations.
#[tokio::test]
async fn case3_a_file_inserted_between_applied_ones_is_refused_by_both() {
    let db = TestDb::new("np_case3").await;
    let fx = Fixture::new(&[("010_a.sql", A.1), ("020_b.sql", B.1), ("030_c.sql", C.1)]);
    let conn = db.connect().await;
    let migrator = Migrator::new(conn.client(), RunOptions::default());
    migrator.migrate(&fx.set()).await.unwrap();
    fx.write("015_mid.sql", "CREATE TABLE mid (id int);");

    let ours = migrator.migrate(&fx.set()).await.unwrap_err().to_string();
    assert!(
        ours.contains("Not run migration 015_mid is preceding already run migration 020_b"),
        "{ours}"
    );
    let out = node_pg_migrate(&db, fx.path(), &["up"]);
    let theirs = text(&out);
    assert!(!out.status.success());
    assert!(
        theirs.contains("Not run migration 015_mid is preceding already run migration 020_b"),
        "{theirs}"
    );
    assert!(!db.table_exists("mid").await);
}

/// The numeric order is the same in both tools: `0015` is 15 and runs after 003.
#[tokio::test]
async fn both_tools_order_files_by_number_the_same_way() {
    let ours_db = TestDb::new("np_order_a").await;
    let theirs_db = TestDb::new("np_order_b").await;
    let fx = Fixture::new(&[
        ("2_b.sql", "select 1"),
        ("10_c.sql", "select 1"),
        ("0001_a.sql", "select 1"),
        ("0015_d.sql", "select 1"),
        ("20200513070724505_e.sql", "select 1"),
    ]);
    let conn = ours_db.connect().await;
    Migrator::new(conn.client(), RunOptions::default())
        .migrate(&fx.set())
        .await
        .unwrap();
    let out = node_pg_migrate(&theirs_db, fx.path(), &["up"]);
    assert!(out.status.success(), "{}", text(&out));
    let theirs: Vec<String> = theirs_db
        .query("SELECT name FROM pgmigrations ORDER BY id")
        .await;
    assert_eq!(
        ours_db
            .query("SELECT name FROM pgmigrations ORDER BY id")
            .await,
        theirs
    );
    assert_eq!(
        theirs,
        ["0001_a", "2_b", "10_c", "0015_d", "20200513070724505_e"]
    );
}

/// Case 4, both ways: while one tool holds the lock the other never runs.
#[tokio::test]
async fn case4_the_shared_lock_keeps_the_tools_apart() {
    let db = TestDb::new("np_case4").await;
    // A session holding node-pg-migrate's lock: this tool waits, then fails clearly.
    let holder = db.connect().await;
    holder
        .client()
        .simple_query("SELECT pg_advisory_lock(7241865325823964)")
        .await
        .unwrap();
    let conn = db.connect().await;
    let options = RunOptions {
        lock_wait: Duration::from_millis(800),
        ..RunOptions::default()
    };
    let fx = Fixture::new(&[A]);
    let err = Migrator::new(conn.client(), options)
        .migrate(&fx.set())
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::LockTimeout { .. }), "{err}");
    assert!(!db.table_exists("a").await);
    holder
        .client()
        .simple_query("SELECT pg_advisory_unlock(7241865325823964)")
        .await
        .unwrap();

    // This tool running a slow migration: node-pg-migrate refuses to start.
    let fx = Fixture::new(&[A, ("002_slow.sql", "SELECT pg_sleep(3);")]);
    let set = fx.set();
    let migrator = Migrator::new(conn.client(), RunOptions::default());
    let run = migrator.migrate(&set);
    let node = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let path = fx.path().to_path_buf();
        let db_name = db.name.clone();
        tokio::task::spawn_blocking(move || {
            node_pg_migrate(&TestDb { name: db_name }, &path, &["up"])
        })
        .await
        .unwrap()
    };
    let (ours, out) = tokio::join!(run, node);
    ours.unwrap();
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("Another migration is already running"),
        "{log}"
    );
    assert_eq!(db.history().await, ["001_a", "002_slow"]);
}

/// Case 5: a failing migration in a run: what ran before it in earlier runs
/// (and, in `each` mode, earlier in the same run) stays recorded; the failing
/// one leaves no row and no partial DDL; later ones do not run. Same outcome
/// as node-pg-migrate's.
#[tokio::test]
async fn case5_a_failing_migration_leaves_no_row_and_no_partial_ddl() {
    let files = [
        A,
        B,
        (
            "003_bad.sql",
            "CREATE TABLE partial (id int);\nINSERT INTO missing VALUES (1);",
        ),
        ("004_d.sql", "CREATE TABLE d (id int);"),
    ];
    for mode in [TransactionMode::Batch, TransactionMode::Each] {
        let ours = TestDb::new("np_case5_ours").await;
        let theirs = TestDb::new("np_case5_theirs").await;
        let first = Fixture::new(&files[..1]);
        let all = Fixture::new(&files);
        let conn = ours.connect().await;
        let options = RunOptions {
            mode,
            ..RunOptions::default()
        };
        Migrator::new(conn.client(), options.clone())
            .migrate(&first.set())
            .await
            .unwrap();
        Migrator::new(conn.client(), options)
            .migrate(&all.set())
            .await
            .unwrap_err();
        let np_first = node_pg_migrate(&theirs, first.path(), &["up"]);
        assert!(np_first.status.success(), "{}", text(&np_first));
        let mode_flag = match mode {
            TransactionMode::Batch => "--single-transaction",
            TransactionMode::Each => "--no-single-transaction",
        };
        let np = node_pg_migrate(&theirs, all.path(), &["up", mode_flag]);
        assert!(!np.status.success(), "{}", text(&np));

        let expected: &[&str] = match mode {
            TransactionMode::Batch => &["001_a"],
            TransactionMode::Each => &["001_a", "002_b"],
        };
        for db in [&ours, &theirs] {
            assert_eq!(db.history().await, expected, "{mode:?}");
            assert!(!db.table_exists("partial").await, "{mode:?}");
            assert!(!db.table_exists("d").await, "{mode:?}");
        }
    }
}

/// Case 6: this tool's nullable columns leave node-pg-migrate working: it
/// applies a new migration on our table, and we adopt its row afterwards.
#[tokio::test]
async fn case6_node_pg_migrate_keeps_working_on_our_table() {
    let db = TestDb::new("np_case6").await;
    let fx = Fixture::new(&[A, B]);
    let conn = db.connect().await;
    let migrator = Migrator::new(conn.client(), RunOptions::default());
    migrator.migrate(&fx.set()).await.unwrap();

    fx.write(C.0, C.1);
    let out = node_pg_migrate(&db, fx.path(), &["up"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(db.table_exists("c").await);
    assert_eq!(
        db.query("SELECT coalesce(checksum, 'null') FROM pgmigrations WHERE name = '003_c'")
            .await,
        ["null"]
    );

    let report = migrator.migrate(&fx.set()).await.unwrap();
    assert!(report.applied.is_empty());
    assert_eq!(report.adopted_checksums, ["003_c"]);
    assert_eq!(
        db.query("SELECT count(*) FROM pgmigrations WHERE checksum IS NULL")
            .await,
        ["0"]
    );
}
