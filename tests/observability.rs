//! Metrics and logs the AWS way, through the binary: the EMF record of each
//! CloudFormation request, parsed from the function's output and validated
//! against the EMF specification, and the log format and level chosen by
//! Lambda's advanced logging controls with our overrides.

mod common;

use std::time::Duration;

use common::lambda::{Deployment, StackSpec};
use db_setup::metrics;
use db_setup::migrate::MigrationSet;
use serde_json::{Value, json};

fn props() -> Value {
    json!({"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:db-setup",
           "MigrationsHash": MigrationSet::embedded().unwrap().hash()})
}

/// The EMF records the function printed, each validated; waits (up to 10 s)
/// for `want` of them, as the output is read by another task.
async fn emf_records(d: &Deployment, want: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let records: Vec<Value> = d
            .function
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("_aws").is_some())
            .collect();
        if records.len() >= want || tokio::time::Instant::now() > deadline {
            for r in &records {
                assert_eq!(metrics::validate(r), Vec::<String>::new(), "{r}");
            }
            return records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn each_request_emits_one_emf_record_by_stack_and_request_type() {
    let d = Deployment::new(StackSpec {
        users: &[("rw", "readwrite")],
        env: vec![("DB_SETUP_METRICS_NAMESPACE", "Team/DbSetup".into())],
        ..StackSpec::new("emf")
    })
    .await;
    let (_, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    let (_, put) = d.request("Update", props()).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    // A manual action is not a deploy: no record.
    d.invoke(&json!({"action": "status"})).await;
    let (_, put) = d.request("Delete", props()).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);

    let records = emf_records(&d, 3).await;
    assert_eq!(records.len(), 3, "{records:?}");
    let embedded = MigrationSet::embedded().unwrap().migrations().len();
    let create = &records[0];
    assert_eq!(
        create["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "Team/DbSetup"
    );
    assert_eq!(create["Stack"], "test");
    assert_eq!(create["RequestType"], "Create");
    assert_eq!(create["MigrationsApplied"], embedded);
    assert_eq!(create["UsersRotated"], 1);
    assert_eq!(create["Failures"], 0);
    assert!(create["DeployDuration"].as_u64().unwrap() > 0, "{create}");
    assert!(create["LockWait"].is_u64());
    let update = &records[1];
    assert_eq!(update["RequestType"], "Update");
    assert_eq!(update["MigrationsApplied"], 0);
    assert_eq!(update["UsersRotated"], 0);
    assert_eq!(records[2]["RequestType"], "Delete");
    d.scan().await;
}

#[tokio::test]
async fn a_failed_deploy_counts_one_failure_with_its_error_type() {
    let d = Deployment::new(StackSpec {
        env: vec![(
            "DB_SETUP_ADMIN_SECRET_ID",
            "db-setup-test/no-such-admin".into(),
        )],
        ..StackSpec::new("emf_fail")
    })
    .await;
    let (_, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Status"], "FAILED");
    let records = emf_records(&d, 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["Failures"], 1);
    assert_eq!(records[0]["ErrorType"], "AdminSecretError");
    assert_eq!(records[0]["MigrationsApplied"], 0);
    assert_eq!(
        records[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "DbSetup"
    );
    d.scan().await;
}

/// The log lines other than EMF records, after a status invoke, once a
/// line containing `until` was read (or after 10 s).
async fn log_lines_until(env: Vec<(&'static str, String)>, until: &str) -> Vec<String> {
    let d = Deployment::new(StackSpec {
        env,
        ..StackSpec::new("logfmt")
    })
    .await;
    d.invoke(&json!({"action": "status"})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let logs = d.function.logs();
        if logs.contains(until) || tokio::time::Instant::now() > deadline {
            return logs
                .lines()
                .filter(|l| !l.contains("\"_aws\""))
                .map(str::to_string)
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn log_lines(env: Vec<(&'static str, String)>) -> Vec<String> {
    log_lines_until(env, "action done").await
}

fn all_json(lines: &[String]) -> bool {
    !lines.is_empty()
        && lines
            .iter()
            .all(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v.is_object()))
}

#[tokio::test]
async fn the_log_format_follows_lambdas_setting_unless_overridden() {
    let text = log_lines(vec![("AWS_LAMBDA_LOG_FORMAT", "Text".into())]).await;
    assert!(text.iter().any(|l| l.contains("action done")), "{text:?}");
    assert!(
        text.iter()
            .all(|l| serde_json::from_str::<Value>(l).is_err()),
        "{text:?}"
    );
    let json = log_lines(vec![("AWS_LAMBDA_LOG_FORMAT", "JSON".into())]).await;
    assert!(all_json(&json), "{json:?}");
    let overridden = log_lines(vec![
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".into()),
        ("DB_SETUP_LOG_FORMAT", "text".into()),
    ])
    .await;
    assert!(!all_json(&overridden), "{overridden:?}");
    assert!(overridden.iter().any(|l| l.contains("action done")));
}

#[tokio::test]
async fn the_log_level_follows_lambdas_setting_unless_rust_log_says_otherwise() {
    // The harness sets RUST_LOG=info; empty means unset.
    let warn_only = log_lines_until(
        vec![
            ("RUST_LOG", String::new()),
            ("AWS_LAMBDA_LOG_FORMAT", "JSON".into()),
            ("AWS_LAMBDA_LOG_LEVEL", "WARN".into()),
        ],
        "WITHOUT TLS",
    )
    .await;
    let levels: Vec<String> = warn_only
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["level"].as_str().map(str::to_string))
        .collect();
    // The WITHOUT-TLS warning is there, the INFO lines are not.
    assert!(levels.iter().any(|l| l == "WARN"), "{warn_only:?}");
    assert!(
        levels.iter().all(|l| l == "WARN" || l == "ERROR"),
        "{warn_only:?}"
    );
    let rust_log_wins = log_lines(vec![
        ("RUST_LOG", "info".into()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".into()),
        ("AWS_LAMBDA_LOG_LEVEL", "WARN".into()),
    ])
    .await;
    assert!(
        rust_log_wins
            .iter()
            .any(|l| l.contains("\"level\":\"INFO\"")),
        "{rust_log_wins:?}"
    );
}
