//! The snapshot before migrating, through the real deploy path (the
//! function's binary, the local Runtime API, a response receiver), against
//! PostgreSQL 16 and moto's RDS (whose snapshots are `available` at once):
//! a snapshot only when migrations are pending, named in `Data`, reused by a
//! retry of the same request, and a failure that migrates nothing.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::lambda::{Deployment, StackSpec, cfn_event};
use db_setup::snapshot::snapshot_id;
use serde_json::{Value, json};

static IDS: AtomicU64 = AtomicU64::new(1);

/// A unique RDS identifier for this test process.
fn unique(kind: &str) -> String {
    format!(
        "{kind}-{}-{}",
        std::process::id(),
        IDS.fetch_add(1, Ordering::SeqCst)
    )
}

/// RDS (moto) for the tests.
async fn rds() -> aws_sdk_rds::Client {
    common::env("AWS_ENDPOINT_URL");
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_rds::Client::new(&config)
}

/// Creates a DB instance in moto; returns its identifier.
async fn create_instance(rds: &aws_sdk_rds::Client) -> String {
    let id = unique("db");
    rds.create_db_instance()
        .db_instance_identifier(&id)
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .master_username("admin")
        .master_user_password("not-a-real-password")
        .allocated_storage(20)
        .send()
        .await
        .expect("create the DB instance in moto");
    id
}

/// Creates an Aurora cluster in moto; returns its identifier.
async fn create_cluster(rds: &aws_sdk_rds::Client) -> String {
    let id = unique("aurora");
    rds.create_db_cluster()
        .db_cluster_identifier(&id)
        .engine("aurora-postgresql")
        .master_username("admin")
        .master_user_password("not-a-real-password")
        .send()
        .await
        .expect("create the DB cluster in moto");
    id
}

/// The manual snapshots of an instance (moto also keeps an automated one).
async fn instance_snapshots(rds: &aws_sdk_rds::Client, instance: &str) -> Vec<(String, String)> {
    let out = rds
        .describe_db_snapshots()
        .db_instance_identifier(instance)
        .send()
        .await
        .expect("describe the instance's snapshots");
    out.db_snapshots()
        .iter()
        .filter(|s| s.snapshot_type() == Some("manual"))
        .map(|s| {
            (
                s.db_snapshot_identifier().unwrap_or_default().to_string(),
                s.status().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The manual snapshots of a cluster.
async fn cluster_snapshots(rds: &aws_sdk_rds::Client, cluster: &str) -> Vec<(String, String)> {
    let out = rds
        .describe_db_cluster_snapshots()
        .db_cluster_identifier(cluster)
        .send()
        .await
        .expect("describe the cluster's snapshots");
    out.db_cluster_snapshots()
        .iter()
        .filter(|s| s.snapshot_type() == Some("manual"))
        .map(|s| {
            (
                s.db_cluster_snapshot_identifier()
                    .unwrap_or_default()
                    .to_string(),
                s.status().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A CloudFormation event with a request id unique to this process (moto is
/// shared by every test binary of the run) and the snapshot name it implies.
fn event(request_type: &str, properties: Value) -> (Value, String) {
    let mut e = cfn_event(request_type, "", properties);
    e["RequestId"] = json!(unique("request"));
    let name = snapshot_id(
        e["StackId"].as_str().unwrap(),
        e["RequestId"].as_str().unwrap(),
    );
    (e, name)
}

/// Every embedded migration's name, in order.
fn embedded() -> Vec<String> {
    db_setup::migrate::MigrationSet::embedded()
        .unwrap()
        .migrations()
        .iter()
        .map(|m| m.name.clone())
        .collect()
}

#[tokio::test]
async fn pending_migrations_get_an_instance_snapshot_named_in_data_then_run() {
    let rds = rds().await;
    let instance = create_instance(&rds).await;
    let d = Deployment::new(StackSpec::new("snap_pending")).await;
    let (e, name) = event("Create", json!({"SnapshotDbInstance": instance}));
    let (_, put) = d.request_event(e).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert_eq!(put.body["Data"]["Snapshot"], name.as_str(), "{}", put.body);
    assert_eq!(
        instance_snapshots(&rds, &instance).await,
        [(name.clone(), "available".to_string())]
    );
    assert_eq!(d.db.history().await, embedded(), "then migrated");
    assert_eq!(
        put.body["Data"]["Applied"],
        embedded().len().to_string().as_str()
    );
    assert!(
        d.function.logs().contains("snapshot available: migrating"),
        "{}",
        d.function.logs()
    );
    d.scan().await;
}

#[tokio::test]
async fn a_cluster_gets_a_cluster_snapshot() {
    let rds = rds().await;
    let cluster = create_cluster(&rds).await;
    let d = Deployment::new(StackSpec::new("snap_cluster")).await;
    let (e, name) = event("Create", json!({"SnapshotDbCluster": cluster}));
    let (_, put) = d.request_event(e).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert_eq!(put.body["Data"]["Snapshot"], name.as_str());
    assert_eq!(
        cluster_snapshots(&rds, &cluster).await,
        [(name, "available".to_string())]
    );
    assert_eq!(d.db.history().await, embedded());
}

#[tokio::test]
async fn a_no_op_deploy_takes_no_snapshot() {
    let rds = rds().await;
    let instance = create_instance(&rds).await;
    let d = Deployment::new(StackSpec::new("snap_noop")).await;
    // Everything applied by a deploy without the property.
    let (_, put) = d.request("Create", json!({})).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    let before = instance_snapshots(&rds, &instance).await;
    assert!(before.is_empty(), "{before:?}");
    // Now with it: nothing is pending, so nothing is snapshotted.
    let (e, _) = event("Update", json!({"SnapshotDbInstance": instance}));
    let (_, put) = d.request_event(e).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert_eq!(put.body["Data"]["Applied"], "0", "{}", put.body);
    assert!(put.body["Data"].get("Snapshot").is_none(), "{}", put.body);
    assert_eq!(instance_snapshots(&rds, &instance).await, before);
    assert!(
        d.function
            .logs()
            .contains("no migration to run: no snapshot taken")
    );
}

#[tokio::test]
async fn a_retry_of_the_same_request_reuses_its_snapshot() {
    let rds = rds().await;
    let instance = create_instance(&rds).await;
    let d = Deployment::new(StackSpec::new("snap_retry")).await;
    // The first attempt takes the snapshot, then a migration fails (its
    // table exists already).
    d.db.query("CREATE TABLE tenants (id int)").await;
    let (e, name) = event("Create", json!({"SnapshotDbInstance": instance}));
    let (_, put) = d.request_event(e.clone()).await;
    assert_eq!(put.body["Status"], "FAILED", "{}", put.body);
    assert_eq!(
        instance_snapshots(&rds, &instance).await,
        [(name.clone(), "available".to_string())]
    );
    // The cause removed, the same request again: its snapshot is found and
    // waited for, not taken a second time.
    d.db.query("DROP TABLE tenants").await;
    let (_, put) = d.request_event(e).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert_eq!(put.body["Data"]["Snapshot"], name.as_str());
    assert_eq!(
        instance_snapshots(&rds, &instance).await,
        [(name, "available".to_string())],
        "one snapshot only"
    );
    assert!(
        d.function
            .logs()
            .contains("the snapshot of this request exists: reusing it")
    );
    assert_eq!(d.db.history().await, embedded());
}

#[tokio::test]
async fn an_unknown_instance_fails_with_a_reason_and_nothing_is_migrated() {
    let d = Deployment::new(StackSpec::new("snap_unknown")).await;
    let missing = unique("no-such-db");
    let (e, name) = event("Create", json!({"SnapshotDbInstance": missing}));
    let (outcome, put) = d.request_event(e).await;
    assert_eq!(put.body["Status"], "FAILED", "{}", put.body);
    let reason = put.body["Reason"].as_str().unwrap();
    assert_eq!(
        reason,
        format!(
            "DB instance {missing} was not found (CreateDBSnapshot of snapshot {name}): check the \
             SnapshotDbInstance or SnapshotDbCluster property (the construct's database); nothing was migrated"
        )
    );
    // Delivered: the invocation itself succeeded (no Lambda retry).
    outcome.response();
    assert!(
        !d.db.table_exists("pgmigrations").await,
        "history unchanged"
    );
    assert!(!d.db.table_exists("tenants").await, "nothing migrated");
}

#[tokio::test]
async fn each_phase_snapshots_only_for_its_own_work() {
    // The embedded set has no contract migration: with everything applied
    // an expand run has nothing to run, like a no-op; a run that has work
    // in its phase snapshots. (The phase's cut itself is unit-tested in
    // src/snapshot.rs.)
    let rds = rds().await;
    let instance = create_instance(&rds).await;
    let d = Deployment::new(StackSpec::new("snap_phase")).await;
    let (e, name) = event(
        "Create",
        json!({"SnapshotDbInstance": instance, "Phase": "expand"}),
    );
    let (_, put) = d.request_event(e).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert_eq!(put.body["Data"]["Phase"], "expand");
    assert_eq!(put.body["Data"]["Snapshot"], name.as_str());
    let (e, _) = event(
        "Update",
        json!({"SnapshotDbInstance": instance, "Phase": "contract", "ManageUsers": "false"}),
    );
    let (_, put) = d.request_event(e).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert!(put.body["Data"].get("Snapshot").is_none(), "{}", put.body);
    assert_eq!(instance_snapshots(&rds, &instance).await.len(), 1);
}

/// A proxy in front of moto that shows RDS's `creating` phase (moto's
/// snapshots are `available` at once): the first `creating_for` answers to
/// DescribeDBSnapshots say `creating`; everything else passes unchanged.
async fn rds_with_a_creating_phase(creating_for: usize) -> String {
    use common::lambda::{body_bytes, reply, serve};
    use hyper::StatusCode;
    let moto = common::env("AWS_ENDPOINT_URL");
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let addr = serve(move |req| {
        let (moto, seen, http) = (moto.clone(), seen.clone(), http.clone());
        async move {
            let (parts, body) = body_bytes(req).await;
            let mut forward = http.request(
                parts.method.clone(),
                format!(
                    "{moto}{}",
                    parts.uri.path_and_query().map_or("/", |p| p.as_str())
                ),
            );
            for (name, value) in &parts.headers {
                if name != "host" && name != "content-length" {
                    forward = forward.header(name, value);
                }
            }
            let Ok(answer) = forward.body(body.clone()).send().await else {
                return reply(StatusCode::BAD_GATEWAY, "moto is not answering");
            };
            let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
            let mut text = answer.text().await.unwrap_or_default();
            let describe = String::from_utf8_lossy(&body).contains("Action=DescribeDBSnapshots");
            if describe
                && text.contains("<Status>available</Status>")
                && seen.fetch_add(1, Ordering::SeqCst) < creating_for
            {
                text = text.replace("<Status>available</Status>", "<Status>creating</Status>");
            }
            reply(status, text)
        }
    })
    .await;
    format!("http://{addr}")
}

#[tokio::test]
async fn the_wait_for_a_snapshot_goes_on_in_the_next_invocations() {
    let rds = rds().await;
    let instance = create_instance(&rds).await;
    let proxy = rds_with_a_creating_phase(8).await;
    let d = Deployment::new(StackSpec {
        env: vec![
            ("AWS_ENDPOINT_URL_RDS", proxy),
            ("DB_SETUP_SNAPSHOT_POLL", "300ms".into()),
            ("DB_SETUP_CONTINUE", "true".into()),
            ("DB_SETUP_DEADLINE_MARGIN", "1s".into()),
            // 8 s invocations: the wait stops 1.5 s in, and goes on in the next one.
            ("DB_SETUP_CONTINUE_RESERVE", "5500ms".into()),
        ],
        ..StackSpec::new("snap_wait")
    })
    .await;
    let invocation = std::time::Duration::from_secs(8);
    d.runtime.async_invocations(invocation, 1);
    let (mut e, name) = event(
        "Create",
        json!({"SnapshotDbInstance": instance, "ServiceTimeout": "300"}),
    );
    let url = d.receiver.url();
    e["ResponseURL"] = json!(url);
    let first = d.runtime.invoke(&e, invocation).await;
    assert_eq!(first.response()["Continued"], 1, "{}", first.text());
    assert!(
        !d.db.table_exists("pgmigrations").await,
        "migrated before the snapshot was available"
    );
    let put = d
        .receiver
        .wait_for(&url, std::time::Duration::from_secs(120))
        .await;
    d.runtime
        .wait_idle(std::time::Duration::from_secs(30))
        .await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert_eq!(put.body["Data"]["Snapshot"], name.as_str(), "{}", put.body);
    let invocations: usize = put.body["Data"]["Invocations"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .expect("Data.Invocations");
    assert!(invocations >= 2, "{}", put.body);
    assert_eq!(
        put.body["Data"]["Applied"],
        embedded().len().to_string().as_str()
    );
    // One snapshot for the whole chain, and then the migrations.
    assert_eq!(
        instance_snapshots(&rds, &instance).await,
        [(name, "available".to_string())]
    );
    assert_eq!(d.db.history().await, embedded());
    assert_eq!(d.receiver.puts_to(&url).len(), 1);
}
