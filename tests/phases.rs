//! Expand/contract deploy phases against a real PostgreSQL 16: the expand
//! step stops before the first pending contract migration, the contract step
//! runs the rest, and an "old application" keeps working until the contract
//! step while the "new application" works from the expand step on.

mod common;

use common::lambda::{Deployment, StackSpec};
use common::{Fixture, TestDb};
use db_setup::migrate::options::Phase;
use db_setup::migrate::report::PlanReport;
use db_setup::migrate::{MigrationSet, Migrator, RunOptions};
use serde_json::{Value, json};

/// The two-phase example (`examples/two-phase`), which `make demo` runs too.
macro_rules! example {
    ($file:literal) => {
        (
            $file,
            include_str!(concat!("../examples/two-phase/migrations/", $file)),
        )
    };
}

/// Release 1: the application reads `customers.name`.
const R1: (&str, &str) = example!("001_customers.sql");
/// Release 2, expand: the new column, filled and kept in step with the old one.
const R2_EXPAND: (&str, &str) = example!("002_customers_full_name.sql");
/// Release 2, contract: the old column goes once no old application runs.
const R2_CONTRACT: (&str, &str) = example!("003_drop_customers_name.sql");
/// An expand migration numbered after the contract one: never runs before it.
const R2_LATER: (&str, &str) = example!("004_orders.sql");

/// An application's queries: one per line of the example's file (`--` lines are comments).
fn queries(file: &str) -> Vec<&str> {
    let queries: Vec<_> = file
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("--"))
        .collect();
    assert!(
        !queries.is_empty(),
        "an application without queries proves nothing"
    );
    queries
}

/// The old application's queries (release 1's schema).
fn old_app() -> Vec<&'static str> {
    queries(include_str!("../examples/two-phase/old-app.sql"))
}

/// The new application's queries (release 2's schema).
fn new_app() -> Vec<&'static str> {
    queries(include_str!("../examples/two-phase/new-app.sql"))
}

/// Runs each query in a transaction that is rolled back; the first error, if any.
async fn app_works(db: &TestDb, queries: &[&str]) -> Result<(), String> {
    let conn = db.connect().await;
    for q in queries {
        let sql = format!("BEGIN; {q}; ROLLBACK");
        if let Err(e) = conn.client().simple_query(&sql).await {
            return Err(format!("{q}: {}", common::db_message(&e)));
        }
    }
    Ok(())
}

fn options(phase: Option<Phase>) -> RunOptions {
    RunOptions {
        phase,
        ..RunOptions::default()
    }
}

#[tokio::test]
async fn expand_keeps_the_old_application_working_and_contract_runs_the_rest_in_order() {
    let db = TestDb::new("phases").await;
    let conn = db.connect().await;
    // Release 1 is deployed and its application runs.
    Migrator::new(conn.client(), options(None))
        .migrate(&Fixture::new(&[R1]).set())
        .await
        .unwrap();
    app_works(&db, &old_app()).await.unwrap();

    let fx = Fixture::new(&[R1, R2_EXPAND, R2_CONTRACT, R2_LATER]);
    let set = fx.set();

    // The plan of the expand step says what waits for the contract step.
    let plan = PlanReport::from(
        Migrator::new(conn.client(), options(Some(Phase::Expand)))
            .status(&set)
            .await
            .unwrap(),
    );
    assert_eq!(plan.phase, Some(Phase::Expand));
    let would_run: Vec<_> = plan
        .would_run
        .clone()
        .unwrap()
        .into_iter()
        .flat_map(|s| s.migrations)
        .collect();
    assert_eq!(would_run, ["002_customers_full_name"]);
    assert_eq!(
        plan.waits_for_contract,
        ["003_drop_customers_name", "004_orders"]
    );

    // Expand: before the application is updated.
    let expand = Migrator::new(conn.client(), options(Some(Phase::Expand)))
        .migrate(&set)
        .await
        .unwrap();
    let applied: Vec<_> = expand.applied.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(applied, ["002_customers_full_name"]);
    assert_eq!(expand.phase, Some(Phase::Expand));
    assert_eq!(
        expand.waits_for_contract,
        ["003_drop_customers_name", "004_orders"]
    );
    assert_eq!(
        db.history().await,
        ["001_customers", "002_customers_full_name"]
    );
    app_works(&db, &old_app()).await.unwrap();
    app_works(&db, &new_app()).await.unwrap();
    // A second expand step runs nothing more (the contract file still blocks the later one).
    let again = Migrator::new(conn.client(), options(Some(Phase::Expand)))
        .migrate(&set)
        .await
        .unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.waits_for_contract.len(), 2);

    // Contract: after the application is updated; the rest, in number order.
    let contract = Migrator::new(conn.client(), options(Some(Phase::Contract)))
        .migrate(&set)
        .await
        .unwrap();
    let applied: Vec<_> = contract.applied.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(applied, ["003_drop_customers_name", "004_orders"]);
    assert!(contract.waits_for_contract.is_empty());
    assert_eq!(
        db.history().await,
        [
            "001_customers",
            "002_customers_full_name",
            "003_drop_customers_name",
            "004_orders"
        ]
    );
    app_works(&db, &new_app()).await.unwrap();
    let old = app_works(&db, &old_app()).await.unwrap_err();
    assert!(old.contains("column \"name\" does not exist"), "{old}");
}

fn props(phase: &str) -> Value {
    json!({"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:db-setup",
           "MigrationsHash": MigrationSet::embedded().unwrap().hash(),
           "ManageUsers": "false",
           "Phase": phase})
}

#[tokio::test]
async fn the_phase_property_reaches_the_run_and_the_data() {
    let d = Deployment::new(StackSpec::new("phaseprop")).await;
    let embedded = MigrationSet::embedded().unwrap();
    let contract_files = embedded
        .migrations()
        .iter()
        .position(|m| m.directives.phase == Phase::Contract);

    let (_, put) = d.request("Create", props("expand")).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert_eq!(put.body["Data"]["Phase"], "expand");
    let expected_applied = contract_files.unwrap_or(embedded.migrations().len());
    assert_eq!(put.body["Data"]["Applied"], expected_applied.to_string());
    assert_eq!(d.db.history().await.len(), expected_applied);

    let (_, put) = d.request("Create", props("contract")).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert_eq!(put.body["Data"]["Phase"], "contract");
    assert_eq!(put.body["Data"]["WaitsForContract"], "");
    assert_eq!(d.db.history().await.len(), embedded.migrations().len());

    // An unknown phase is refused before anything runs.
    let (_, put) = d.request("Update", props("cleanup")).await;
    assert_eq!(put.body["Status"], "FAILED", "{}", put.body);
    let reason = put.body["Reason"].as_str().unwrap();
    assert!(reason.contains("property Phase: unknown phase"), "{reason}");
}

#[tokio::test]
async fn plan_lists_every_breaking_change_override_with_its_reason() {
    let db = TestDb::new("phaseallow").await;
    let conn = db.connect().await;
    let fx = Fixture::new(&[
        R1,
        (
            "002_drop_staging.sql",
            "-- db-setup: allow-breaking=staging_import was only read by the one-off loader\n\
             CREATE TABLE staging_import (id int);\n\
             DROP TABLE staging_import;\n",
        ),
    ]);
    let set = fx.set();
    let before = PlanReport::from(
        Migrator::new(conn.client(), options(Some(Phase::Expand)))
            .status(&set)
            .await
            .unwrap(),
    );
    // Listed while pending, and still listed once applied.
    Migrator::new(conn.client(), options(Some(Phase::Expand)))
        .migrate(&set)
        .await
        .unwrap();
    let after = PlanReport::from(
        Migrator::new(conn.client(), options(Some(Phase::Expand)))
            .status(&set)
            .await
            .unwrap(),
    );
    for plan in [before, after] {
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(
            json["breaking_allowed"],
            json!([{"migration": "002_drop_staging",
                    "reason": "staging_import was only read by the one-off loader"}])
        );
        assert!(
            plan.to_markdown().contains(
                "- `002_drop_staging`: staging_import was only read by the one-off loader"
            )
        );
    }
    assert!(!db.table_exists("staging_import").await);
}
