//! The function through the Lambda Runtime API: the custom-resource
//! lifecycle in both response modes, users and credentials, manual actions.
//! Every test ends with the secret scan.

mod common;

use std::time::Duration;

use common::lambda::{Deployment, Outcome, StackSpec, cfn_event, secret_name};
use db_setup::migrate::MigrationSet;
use serde_json::{Value, json};

/// The Provider framework's onEvent function (the ServiceToken of its events).
const FRAMEWORK_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:DbSetupDatabase-ProviderframeworkonEvent-AbC123";

fn embedded_count() -> usize {
    MigrationSet::embedded().unwrap().migrations().len()
}

fn props() -> Value {
    json!({"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:db-setup",
           "MigrationsHash": MigrationSet::embedded().unwrap().hash()})
}

#[tokio::test]
async fn create_update_delete_in_direct_mode() {
    let d = Deployment::new(StackSpec {
        users: &[("rw", "readwrite"), ("ro", "readonly")],
        ..StackSpec::new("lifecycle")
    })
    .await;

    // Create: migrations, then users; SUCCESS PUT with a small Data.
    let (outcome, put) = d.request("Create", props()).await;
    assert_eq!(outcome.response()["Status"], "SUCCESS");
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert_eq!(put.body["PhysicalResourceId"], "db-setup-DbSetup");
    assert_eq!(put.body["LogicalResourceId"], "DbSetup");
    assert!(put.body["RequestId"].as_str().unwrap().starts_with("cfn-"));
    assert_eq!(put.body["Data"]["Applied"], embedded_count().to_string());
    assert_eq!(
        put.body["Data"]["LastMigration"],
        MigrationSet::embedded().unwrap().last().unwrap()
    );
    assert_eq!(put.body["Data"]["Users"], "2");
    assert_eq!(put.body["Data"]["UsersRotated"], "2");
    // The PUT as CloudFormation wants it: empty Content-Type, exact length, small.
    assert_eq!(put.content_type.as_deref(), Some(""));
    assert_eq!(put.content_length, Some(put.raw_len));
    assert!(put.raw_len <= 4096);
    assert_eq!(d.db.history().await.len(), embedded_count());

    // The users' secrets: full RDS JSON, and they log in.
    for i in 0..2 {
        let s = d.user_secret(i).await;
        for key in [
            "engine",
            "host",
            "port",
            "dbname",
            "username",
            "password",
            "masterarn",
        ] {
            assert!(
                s.get(key).is_some(),
                "user secret lacks {key}: keys {:?}",
                s.as_object().map(|m| m.keys().collect::<Vec<_>>())
            );
        }
        assert_eq!(s["masterarn"], d.admin_arn);
        assert_eq!(s["dbname"], d.db.name);
        assert!(
            d.logs_in(&d.users[i].0, s["password"].as_str().unwrap())
                .await
        );
    }
    let rw_password = d.user_secret(0).await["password"].clone();

    // Update: nothing to migrate, nothing rotated, same physical id.
    let (_, put) = d.request("Update", props()).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert_eq!(put.body["PhysicalResourceId"], "db-setup-DbSetup");
    assert_eq!(put.body["Data"]["Applied"], "0");
    assert_eq!(put.body["Data"]["UsersRotated"], "0");
    assert_eq!(
        d.user_secret(0).await["password"],
        rw_password,
        "no rotation on a plain deploy"
    );

    // Delete: SUCCESS, and nothing is dropped.
    let (_, put) = d.request("Delete", props()).await;
    assert_eq!(put.body["Status"], "SUCCESS");
    assert_eq!(put.body["PhysicalResourceId"], "db-setup-DbSetup");
    assert_eq!(d.db.history().await.len(), embedded_count());
    assert!(d.db.table_exists("tenants").await);
    assert!(
        d.logs_in(&d.users[0].0, rw_password.as_str().unwrap())
            .await,
        "roles and passwords are kept"
    );
    d.scan().await;
}

#[tokio::test]
async fn provider_mode_returns_the_result_and_never_puts() {
    let d = Deployment::new(StackSpec {
        users: &[("rw", "readwrite")],
        env: vec![("DB_SETUP_RESPONSE_MODE", "provider".into())],
        ..StackSpec::new("provider")
    })
    .await;
    let url = d.receiver.url();
    // The framework's events name its own function as the ServiceToken.
    let cfn_event = |t: &str, url: &str, p: Value| {
        let mut e = cfn_event(t, url, p);
        e["ServiceToken"] = json!(FRAMEWORK_ARN);
        e
    };
    let ok = d.invoke(&cfn_event("Create", &url, props())).await;
    assert_eq!(ok.response()["PhysicalResourceId"], "db-setup-DbSetup");
    assert_eq!(
        ok.response()["Data"]["Applied"],
        embedded_count().to_string()
    );
    let mut update = cfn_event("Update", &url, props());
    update["PhysicalResourceId"] = json!("kept-id");
    assert_eq!(
        d.invoke(&update).await.response()["PhysicalResourceId"],
        "kept-id"
    );
    assert_eq!(
        d.invoke(&cfn_event("Delete", &url, props()))
            .await
            .response()["PhysicalResourceId"],
        "db-setup-DbSetup"
    );

    // A failure is an error of the invocation (the framework sends FAILED).
    let mut bad = cfn_event("Update", &url, json!({"TargetMigration": "999_nope"}));
    bad["PhysicalResourceId"] = json!("kept-id");
    let err = d.invoke(&bad).await;
    assert_eq!(err.error()["errorType"], "MigrationError");
    assert!(
        err.error()["errorMessage"]
            .as_str()
            .unwrap()
            .contains("no migration named 999_nope")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(d.receiver.all().is_empty(), "provider mode never PUTs");
    d.scan().await;
}

#[tokio::test]
async fn a_retried_create_is_safe() {
    let d = Deployment::new(StackSpec {
        users: &[("rw", "readwrite")],
        ..StackSpec::new("retry")
    })
    .await;
    let event = cfn_event("Create", "", props());
    let (_, first) = d.request_event(event.clone()).await;
    let password = d.user_secret(0).await["password"].clone();
    let (_, second) = d.request_event(event).await;
    assert_eq!(first.body["Status"], "SUCCESS");
    assert_eq!(second.body["Status"], "SUCCESS");
    assert_eq!(
        first.body["PhysicalResourceId"],
        second.body["PhysicalResourceId"]
    );
    assert_eq!(second.body["Data"]["Applied"], "0");
    assert_eq!(
        d.db.history().await.len(),
        embedded_count(),
        "each migration once"
    );
    assert_eq!(d.user_secret(0).await["password"], password);
    d.scan().await;
}

#[tokio::test]
async fn a_failed_create_answers_failed_and_its_delete_succeeds() {
    let d = Deployment::new(StackSpec {
        env: vec![(
            "DB_SETUP_ADMIN_SECRET_ID",
            "db-setup-test/does-not-exist".into(),
        )],
        ..StackSpec::new("failcreate")
    })
    .await;
    let (outcome, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Status"], "FAILED");
    let reason = put.body["Reason"].as_str().unwrap();
    assert!(
        reason.contains("secret db-setup-test/does-not-exist was not found"),
        "{reason}"
    );
    assert!(
        outcome.response()["Status"] == "FAILED",
        "delivered: the invocation itself succeeds (no Lambda retry)"
    );
    let mut delete = cfn_event("Delete", "", props());
    delete["PhysicalResourceId"] = put.body["PhysicalResourceId"].clone();
    let (_, put) = d.request_event(delete).await;
    assert_eq!(put.body["Status"], "SUCCESS");
    assert!(
        d.db.query("SELECT to_regclass('public.pgmigrations') IS NULL")
            .await
            == ["t"]
    );
}

#[tokio::test]
async fn an_invalid_configuration_still_answers_with_every_problem() {
    let d = Deployment::new(StackSpec {
        env: vec![
            ("DB_SETUP_ADMIN_SECRET_ID", String::new()),
            ("DB_SETUP_LOCK_WAIT", "soon".into()),
            (
                "DB_SETUP_USERS",
                "[{\"username\": \"Bad-Name\", \"role\": \"readwrite\", \"secretId\": \"x\"}]"
                    .into(),
            ),
        ],
        ..StackSpec::new("badconfig")
    })
    .await;
    let (_, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Status"], "FAILED");
    let reason = put.body["Reason"].as_str().unwrap();
    for needle in [
        "DB_SETUP_ADMIN_SECRET_ID is required",
        "DB_SETUP_LOCK_WAIT: `soon` is not a duration",
        "`Bad-Name` is not a safe role name",
        // The configuration error's own advice reaches the stack.
        "fix the function's environment variables (see docs/configuration.md)",
    ] {
        assert!(reason.contains(needle), "{needle} not in {reason}");
    }
    let status = d.invoke(&json!({"action": "status"})).await;
    assert_eq!(status.error()["errorType"], "ConfigurationError");
}

#[tokio::test]
async fn an_unreadable_ca_file_is_answered_as_the_tls_setup_error_with_its_advice() {
    let d = Deployment::new(StackSpec {
        env: vec![(
            "DB_SETUP_TLS_CA_FILE",
            "/nonexistent/db-setup-ca.pem".into(),
        )],
        ..StackSpec::new("badca")
    })
    .await;
    let (_, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Status"], "FAILED");
    let reason = put.body["Reason"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "the function could not start: TLS setup: the CA file /nonexistent/db-setup-ca.pem cannot be read"
        ),
        "{reason}"
    );
    assert!(reason.contains("give DB_SETUP_TLS_CA_FILE"), "{reason}");
    let status = d.invoke(&json!({"action": "status"})).await;
    assert_eq!(status.error()["errorType"], "ConfigurationError");
}

#[tokio::test]
async fn an_update_built_for_other_migrations_is_a_rollback_and_runs_nothing() {
    let d = Deployment::new(StackSpec::new("rollback")).await;
    d.request("Create", props()).await;
    // New code, old template: another MigrationsHash.
    let (_, put) = d.request("Update", json!({"MigrationsHash": "0ld"})).await;
    assert_eq!(put.body["Status"], "SUCCESS");
    assert!(
        put.body["Data"]["Message"]
            .as_str()
            .unwrap()
            .contains("a rollback")
    );

    // Old code after newer migrations: the database is ahead.
    d.db.query("INSERT INTO pgmigrations (name, run_on) VALUES ('999_from_newer_code', NOW())")
        .await;
    let (_, put) = d.request("Update", props()).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert!(
        put.body["Data"]["Message"]
            .as_str()
            .unwrap()
            .contains("the database is ahead")
    );
    // The same state on Create (not a rollback) is an error.
    let (_, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Status"], "FAILED");
    assert!(
        put.body["Reason"]
            .as_str()
            .unwrap()
            .contains("999_from_newer_code")
    );
}

#[tokio::test]
async fn an_rds_like_admin_without_superuser_works() {
    // On RDS the master user is not a superuser: CREATEROLE, owner of the
    // database; pgvector is installed by rds_superuser (here: the test superuser).
    let seed = Deployment::new(StackSpec::new("rdsadmin_seed")).await;
    let admin = format!("{}_master", seed.role_prefix);
    let password = format!("master-{}", secret_name("pw").replace(['/', '-'], "x"));
    seed.db
        .query(&format!(
            "CREATE ROLE {admin} LOGIN CREATEROLE PASSWORD '{password}'; ALTER DATABASE {} OWNER TO {admin}; \
             ALTER SCHEMA public OWNER TO {admin}; \
             CREATE EXTENSION vector",
            seed.db.name
        ))
        .await;
    let d = Deployment::new(StackSpec {
        users: &[("rw", "readwrite"), ("tc", "tablecreator")],
        admin: Some(json!({
            "username": admin,
            "password": password,
        })),
        env: vec![
            ("DB_SETUP_DB_HOST", common::env("DB_SETUP_TEST_PG_HOST")),
            ("DB_SETUP_DB_PORT", common::env("DB_SETUP_TEST_PG_PORT")),
            ("DB_SETUP_DB_NAME", seed.db.name.clone()),
        ],
        ..StackSpec::new("rdsadmin")
    })
    .await;
    let (_, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    // The readwrite user can write a table the admin's migrations created,
    // and cannot write the migration history.
    let rw = d.user_secret(0).await;
    let target = db_setup::db::Target {
        user: d.users[0].0.clone(),
        password: db_setup::redacted::SecretString::new(rw["password"].as_str().unwrap()),
        ..common::admin_target(&seed.db.name)
    };
    let c = db_setup::db::connect(&target, &common::plain(), &Default::default())
        .await
        .unwrap();
    c.client()
        .simple_query("INSERT INTO tenants (name, domain) VALUES ('t', 'rw.example')")
        .await
        .unwrap();
    let err = common::db_message(
        &c.client()
            .simple_query("DELETE FROM pgmigrations")
            .await
            .unwrap_err(),
    );
    assert!(
        err.contains("permission denied for table pgmigrations"),
        "{err}"
    );
    let err = common::db_message(
        &c.client()
            .simple_query("CREATE TABLE rw_made (id int)")
            .await
            .unwrap_err(),
    );
    assert!(err.contains("permission denied for schema public"), "{err}");
    // tablecreator may create tables.
    let tc = d.user_secret(1).await;
    let target = db_setup::db::Target {
        user: d.users[1].0.clone(),
        password: db_setup::redacted::SecretString::new(tc["password"].as_str().unwrap()),
        ..common::admin_target(&seed.db.name)
    };
    let c = db_setup::db::connect(&target, &common::plain(), &Default::default())
        .await
        .unwrap();
    c.client()
        .simple_query("CREATE TABLE tc_made (id int)")
        .await
        .unwrap();
    d.scan().await;
}

#[tokio::test]
async fn manual_actions_report_in_json() {
    let d = Deployment::new(StackSpec {
        users: &[("rw", "readwrite")],
        ..StackSpec::new("actions")
    })
    .await;
    let status = d.invoke(&json!({"action": "status"})).await;
    assert_eq!(status.response()["history_table"], "missing");
    assert_eq!(
        status.response()["pending"].as_array().unwrap().len(),
        embedded_count()
    );

    let plan = d
        .invoke(&json!({"action": "plan", "to": "002_educore_tables"}))
        .await;
    assert_eq!(
        plan.response()["would_run"][0]["migrations"],
        json!(["001_extensions", "002_educore_tables"])
    );
    assert_eq!(
        plan.response()["held_back"].as_array().unwrap().len(),
        embedded_count() - 2
    );
    // The same report as `db-setup-cli plan` (tests/cli.rs): PlanReport.
    assert_eq!(common::sorted_keys(plan.response()), common::PLAN_KEYS);

    let partial = d
        .invoke(&json!({"action": "migrate", "to": "002_educore_tables", "mode": "each"}))
        .await;
    assert_eq!(partial.response()["applied"].as_array().unwrap().len(), 2);
    assert_eq!(partial.response()["mode"], "each");
    let rest = d.invoke(&json!({"action": "migrate"})).await;
    assert_eq!(
        rest.response()["applied"].as_array().unwrap().len(),
        embedded_count() - 2
    );

    let status = d.invoke(&json!({"action": "status"})).await;
    assert_eq!(status.response()["history_table"], "tracked");
    assert!(status.response()["applied"][0]["run_on"].as_str().is_some());
    assert!(status.response()["pending"].as_array().unwrap().is_empty());
    assert!(status.response()["lock_holder"].is_null());

    let verify = d.invoke(&json!({"action": "verify"})).await;
    assert_eq!(verify.response()["ok"], true, "{}", verify.response());

    let users = d.invoke(&json!({"action": "users"})).await;
    assert_eq!(users.response()["users"][0]["logs_in"], false);
    assert!(
        users.response()["users"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("deploy (Create/Update)")
    );
    let ensured = d.invoke(&json!({"action": "users", "ensure": true})).await;
    assert_eq!(
        ensured.response()["users"][0]["credentials"]["action"],
        "rotated"
    );
    assert_eq!(ensured.response()["users"][0]["ownership"], "created");
    let users = d.invoke(&json!({"action": "users"})).await;
    assert_eq!(users.response()["users"][0]["logs_in"], true);

    let unknown = d.invoke(&json!({"action": "drop_everything"})).await;
    assert_eq!(unknown.error()["errorType"], "InvalidEvent");
    assert!(
        unknown.error()["errorMessage"]
            .as_str()
            .unwrap()
            .contains("use status, plan, migrate, verify, insight, users, baseline or repair")
    );
    d.scan().await;
}

#[tokio::test]
async fn a_secret_that_logs_in_is_kept_and_completed_not_rotated() {
    let d = Deployment::new(StackSpec {
        users: &[("rw", "readwrite")],
        ..StackSpec::new("keep")
    })
    .await;
    let (user, secret) = d.users[0].clone();
    // The user already exists with a password its secret holds, in a minimal secret.
    d.db.query(&format!(
        "CREATE ROLE {user} LOGIN PASSWORD 'existing-password-123'"
    ))
    .await;
    d.sm.put_secret_value()
        .secret_id(&secret)
        .secret_string(json!({"username": user, "password": "existing-password-123"}).to_string())
        .send()
        .await
        .unwrap();
    let (_, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Data"]["UsersRotated"], "0", "{}", put.body);
    let s = d.user_secret(0).await;
    assert_eq!(
        s["password"], "existing-password-123",
        "the working password is kept"
    );
    assert_eq!(
        s["masterarn"], d.admin_arn,
        "the missing RDS fields were added"
    );
    assert_eq!(s["engine"], "postgres");
    d.scan().await;
}

#[tokio::test]
async fn a_garbled_admin_secret_fails_without_echoing_it() {
    let d = Deployment::new(StackSpec {
        admin: Some(json!("not-an-object-but-a-secret-string-9f8e7d")),
        ..StackSpec::new("garbled")
    })
    .await;
    let (_, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Status"], "FAILED");
    let reason = put.body["Reason"].as_str().unwrap();
    assert!(reason.contains("is JSON but not an object"), "{reason}");
    // The secret's content appears nowhere: not in the Reason, not in the logs.
    assert!(!reason.contains("9f8e7d") && !d.function.logs().contains("9f8e7d"));
}

#[tokio::test]
async fn invalid_json_payload_is_an_error_and_the_function_keeps_serving() {
    let d = Deployment::new(StackSpec::new("badjson")).await;
    let out = d
        .runtime
        .invoke_raw(&b"{not json"[..], Duration::from_secs(30))
        .await;
    assert!(matches!(out, Outcome::Error(_)), "{out:?}");
    let out = d
        .runtime
        .invoke_raw(vec![0xff, 0xfe, 0x00], Duration::from_secs(30))
        .await;
    assert!(matches!(out, Outcome::Error(_)), "{out:?}");
    let status = d.invoke(&json!({"action": "status"})).await;
    assert_eq!(status.response()["history_table"], "missing");
}

#[tokio::test]
async fn in_provider_mode_a_direct_resources_events_are_answered_by_put() {
    // Created in direct mode, then the function switched to provider mode:
    // CloudFormation still sends this resource's events to the function (its
    // ServiceToken) with a ResponseURL, and only a PUT answers them.
    let d = Deployment::new(StackSpec {
        env: vec![("DB_SETUP_RESPONSE_MODE", "provider".into())],
        ..StackSpec::new("switched")
    })
    .await;
    let (outcome, put) = d.request("Update", props()).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert_eq!(put.body["PhysicalResourceId"], "db-setup-DbSetup");
    assert_eq!(put.body["Data"]["Applied"], embedded_count().to_string());
    assert_eq!(outcome.response()["Status"], "SUCCESS");
    let (_, put) = d.request("Delete", props()).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    // A broken one is answered FAILED the same way.
    let mut broken = cfn_event("Update", "", json!({"TransactionMode": "sometimes"}));
    broken["PhysicalResourceId"] = json!("db-setup-DbSetup");
    let (_, put) = d.request_event(broken).await;
    assert_eq!(put.body["Status"], "FAILED", "{}", put.body);
    assert!(
        put.body["Reason"]
            .as_str()
            .unwrap_or_default()
            .contains("TransactionMode"),
        "{}",
        put.body
    );
    d.scan().await;
}

#[tokio::test]
async fn no_verifier_or_url_is_logged_at_debug_or_trace() {
    for level in [
        "debug",
        "trace,tokio_postgres=trace,lambda_runtime=trace,reqwest=trace",
    ] {
        let d = Deployment::new(StackSpec {
            users: &[("rw", "readwrite"), ("ro", "readonly")],
            env: vec![("RUST_LOG", level.into())],
            ..StackSpec::new("verbose")
        })
        .await;
        let (_, put) = d.request("Create", props()).await;
        assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
        assert_eq!(put.body["Data"]["UsersRotated"], "2");
        // The level took effect: the function printed more than at info.
        assert!(
            d.function.logs().contains("DEBUG"),
            "{level}: {}",
            d.function.logs()
        );
        d.scan().await;
    }
}

#[tokio::test]
async fn row_values_in_a_detail_are_logged_not_sent_as_the_reason() {
    let d = Deployment::new(StackSpec::new("detail")).await;
    let mut to_009 = props();
    to_009["TargetMigration"] = json!("009_mued_optimized_indexes");
    let (_, put) = d.request("Create", to_009).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    // A row the foreign key added by 010 (NOT VALID) and validated by 011 refuses.
    d.db.query(
        "INSERT INTO ai_dialogue_log (user_id, session_id, query, response, model_used) \
         VALUES ('dead4242-0000-4000-8000-00000000beef', gen_random_uuid(), 'q', 'r', 'm')",
    )
    .await;
    let (outcome, put) = d.request("Update", props()).await;
    assert_eq!(put.body["Status"], "FAILED", "{}", put.body);
    let reason = put.body["Reason"].as_str().unwrap_or_default();
    assert!(reason.contains("fk_ai_dialogue_user"), "{reason}");
    assert!(
        !reason.contains("dead4242"),
        "a row value in the Reason: {reason}"
    );
    assert!(!outcome.text().contains("dead4242"), "{}", outcome.text());
    let logs = d.function.logs();
    assert!(
        logs.contains("Key (user_id)=(dead4242-0000-4000-8000-00000000beef)"),
        "the DETAIL is not in the log: {logs}"
    );
}

#[test]
fn the_package_hash_is_the_embedded_migrations_hash() {
    // What `make package` writes beside the bootstrap (read by the CDK
    // construct), taken from the binary the same way.
    let out = std::process::Command::new("bash")
        .arg(common::repo_root().join("scripts/migrations-hash.sh"))
        .arg(env!("CARGO_BIN_EXE_db-setup"))
        .output()
        .expect("run scripts/migrations-hash.sh");
    assert!(out.status.success(), "{}", common::text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        MigrationSet::embedded().unwrap().hash()
    );
}

/// A fleet's member: the Step Functions Map invokes the function with the
/// database in the input; its admin secret and endpoint come from there, the
/// configured database is untouched, and neither the secret id nor the
/// endpoint is logged.
#[tokio::test]
async fn migrate_takes_a_fleet_members_database_from_the_input() {
    let d = Deployment::new(StackSpec::new("fleetmember")).await;
    let tenant = common::TestDb::new("tenant").await;
    // The tenant's admin secret names another database: the input's dbname wins.
    let tenant_secret = secret_name("tenant-admin");
    let tenant_arn = common::lambda::create_secret(
        &d.sm,
        &tenant_secret,
        &json!({
            "engine": "postgres",
            "host": "db-setup-no-such-host.invalid",
            "port": 1,
            "dbname": "postgres",
            "username": common::env("DB_SETUP_TEST_PG_USER"),
            "password": common::env("DB_SETUP_TEST_PG_PASSWORD"),
        }),
    )
    .await;
    let database = json!({
        "name": "tenant-7",
        "secretId": tenant_arn,
        "host": common::env("DB_SETUP_TEST_PG_HOST"),
        "port": common::env("DB_SETUP_TEST_PG_PORT"),
        "dbname": tenant.name,
    });
    let out = d
        .invoke(&json!({"action": "migrate", "database": database}))
        .await;
    assert_eq!(out.response()["database"], "tenant-7");
    assert_eq!(
        out.response()["applied"].as_array().unwrap().len(),
        embedded_count()
    );
    assert_eq!(tenant.history().await.len(), embedded_count());
    assert!(
        !d.db.table_exists("pgmigrations").await,
        "the configured database is untouched"
    );

    let logs = d.function.logs();
    assert!(logs.contains("connecting to database tenant-7"), "{logs}");
    for hidden in [
        tenant_arn.as_str(),
        tenant_secret.as_str(),
        tenant.name.as_str(),
    ] {
        assert!(!logs.contains(hidden), "{hidden} logged: {logs}");
    }

    // A member that cannot be reached: the error names it, not its endpoint.
    let unreachable = d
        .invoke(&json!({"action": "migrate", "database": {"name": "tenant-9", "secretId": tenant_secret}}))
        .await;
    let text = unreachable.error().to_string();
    assert!(text.contains("database tenant-9"), "{text}");
    assert!(
        !text.contains("no-such-host"),
        "the endpoint leaked: {text}"
    );
    assert!(
        !d.function.logs().contains("no-such-host"),
        "the endpoint was logged"
    );

    // Validated: a missing secret id, and `database` on another action.
    let bad = d
        .invoke(&json!({"action": "migrate", "database": {"name": "tenant-8"}}))
        .await;
    assert!(
        bad.error()
            .to_string()
            .contains("database.secretId is required"),
        "{}",
        bad.text()
    );
    let bad = d
        .invoke(&json!({"action": "status", "database": database}))
        .await;
    assert!(
        bad.text().contains("only with the migrate action"),
        "{}",
        bad.text()
    );
}
