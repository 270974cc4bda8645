//! Drift: the checked-in catalog (src/verify/catalog.json) is what the
//! embedded migrations make today, and `verify` reports every object that
//! differs on a live database.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use common::TestDb;
use common::lambda::{Deployment, StackSpec};
use db_setup::migrate::MigrationSet;
use db_setup::verify::catalog::{self, CATALOG, Change};
use serde_json::{Value, json};

static N: AtomicU32 = AtomicU32::new(0);

fn prefix() -> String {
    format!(
        "cat{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A fresh database built as `make catalog` builds it; returns it, its prefix and the catalog.
async fn reference(hint: &str) -> (TestDb, String, catalog::Snapshot) {
    let db = TestDb::new(hint).await;
    let prefix = prefix();
    let c = db.connect().await;
    let snapshot = catalog::reference(
        c.client(),
        &MigrationSet::embedded().unwrap(),
        &prefix,
        &db.name,
        &common::env("DB_SETUP_TEST_PG_USER"),
    )
    .await
    .expect("reference catalog");
    (db, prefix, snapshot)
}

#[tokio::test]
async fn the_checked_in_catalog_is_up_to_date() {
    let (_db, _, snapshot) = reference("catalog_fresh").await;
    let checked_in = catalog::embedded().expect("catalog.json parses");
    let stale = catalog::diff(
        &checked_in,
        &catalog::Captured {
            snapshot: snapshot.clone(),
            groups: ["readwrite", "readonly", "tablecreator"]
                .map(|t| format!("{}_{t}", catalog::MANAGED))
                .into(),
        },
    );
    assert!(
        stale.is_empty() && catalog::to_file(&snapshot) == CATALOG,
        "src/verify/catalog.json is out of date with migrations/ (or the capture changed): run `make catalog` \
         and commit the file. Differences (found = what the migrations make now): {stale:#?}"
    );
}

#[tokio::test]
async fn each_hand_change_is_reported_and_a_fresh_database_has_none() {
    let (db, prefix, _) = reference("catalog_drift").await;
    let c = db.connect().await;
    let live = catalog::capture(c.client(), &prefix).await.unwrap();
    let reference = catalog::embedded().unwrap();
    assert_eq!(
        catalog::diff(&reference, &live),
        vec![],
        "a fresh database drifts"
    );

    db.query(&format!(
        "ALTER TABLE tenants ADD COLUMN note text; \
         CREATE INDEX idx_by_hand ON tenants (name); \
         DROP INDEX idx_ai_dialogue_created_at; \
         ALTER TABLE tenants ALTER COLUMN settings SET DEFAULT '{{\"a\": 1}}'; \
         REVOKE SELECT ON tenants FROM {prefix}_readonly"
    ))
    .await;
    let live = catalog::capture(c.client(), &prefix).await.unwrap();
    let drift = catalog::diff(&reference, &live);
    let found: Vec<(&str, &str, Change)> = drift
        .iter()
        .map(|d| (d.kind.as_str(), d.name.as_str(), d.change))
        .collect();
    assert_eq!(
        found,
        vec![
            ("column", "public.tenants.note", Change::Added),
            ("column", "public.tenants.settings", Change::Altered),
            (
                "grant",
                "<managed>_readonly TABLE public.tenants",
                Change::Dropped
            ),
            (
                "index",
                "public.idx_ai_dialogue_created_at",
                Change::Dropped
            ),
            ("index", "public.idx_by_hand", Change::Added),
        ]
    );
    let settings = &drift[1];
    assert_eq!(
        settings.expected.as_deref(),
        Some("jsonb NOT NULL DEFAULT '{}'::jsonb")
    );
    assert_eq!(
        settings.found.as_deref(),
        Some("jsonb NOT NULL DEFAULT '{\"a\": 1}'::jsonb")
    );
    assert!(
        drift[4]
            .found
            .as_deref()
            .unwrap()
            .contains("USING btree (name)")
    );
}

fn drift_names(report: &Value) -> Vec<String> {
    report["drift"]
        .as_array()
        .unwrap_or_else(|| panic!("no drift list in {report}"))
        .iter()
        .map(|d| {
            format!(
                "{} {} {}",
                d["change"].as_str().unwrap(),
                d["kind"].as_str().unwrap(),
                d["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn the_verify_action_reports_drift_after_a_real_deploy_with_users() {
    let d = Deployment::new(StackSpec {
        users: &[("rw", "readwrite"), ("ro", "readonly")],
        ..StackSpec::new("catalog_fn")
    })
    .await;
    let set = MigrationSet::embedded().unwrap();
    let (_, put) = d
        .request("Create", json!({"MigrationsHash": set.hash()}))
        .await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    let verify = d.invoke(&json!({"action": "verify"})).await;
    let r = verify.response();
    assert_eq!(drift_names(r), Vec::<String>::new(), "{r}");
    assert_eq!(r["ok"], true, "{r}");

    d.db.query("ALTER TABLE plugin_registry ADD COLUMN hand_made int; DROP TRIGGER update_tenants_updated_at ON tenants")
        .await;
    let verify = d.invoke(&json!({"action": "verify"})).await;
    let r = verify.response();
    assert_eq!(r["ok"], false);
    assert_eq!(
        drift_names(r),
        [
            "added column public.plugin_registry.hand_made",
            "dropped trigger public.tenants.update_tenants_updated_at",
        ]
    );
    // The declared items are still all there: drift is what tells.
    assert_eq!(
        (r["missing"].as_u64(), r["different"].as_u64()),
        (Some(0), Some(0))
    );
}
