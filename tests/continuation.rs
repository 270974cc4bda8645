//! Work longer than one invocation, end to end: the real binary against the
//! test Runtime API (which also serves the Lambda Invoke API, so the
//! function's asynchronous self-invocation comes back to it with a fresh
//! deadline), a real PostgreSQL 16 and moto. Each migration is made slow by
//! an event trigger of the test's own database (one pause per transaction
//! that runs DDL), so the embedded migrations span several short invocations.

mod common;

use std::time::Duration;

use common::lambda::{Deployment, Outcome, StackSpec, cfn_event};
use serde_json::{Value, json};

/// The deadline each invocation gets.
const INVOCATION: Duration = Duration::from_secs(8);
/// The pause of each transaction that runs a migration's DDL: about 12 s for
/// the embedded migrations (`each` mode), 4 s for the longest unit (a
/// no-transaction file of 8 statements).
const PAUSE_S: f64 = 0.5;

async fn slow_deployment(hint: &str, extra_env: Vec<(&'static str, String)>) -> Deployment {
    let mut env = vec![
        ("DB_SETUP_CONTINUE", "true".to_string()),
        ("DB_SETUP_TRANSACTION_MODE", "each".to_string()),
        ("DB_SETUP_DEADLINE_MARGIN", "1s".to_string()),
        // 8 s invocations, 7 s for work: no unit starts after 1.5 s, so an
        // invocation does at most 1.5 s + the longest unit (4 s) of work, and
        // the ~12 s of the migrations need at least three.
        ("DB_SETUP_CONTINUE_RESERVE", "5500ms".to_string()),
    ];
    env.extend(extra_env);
    let d = Deployment::new(StackSpec {
        env,
        ..StackSpec::new(hint)
    })
    .await;
    let sql = format!(
        "CREATE FUNCTION slow_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ \
         BEGIN \
           IF current_setting('test.slept', true) IS DISTINCT FROM 'yes' \
              AND NOT EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() c \
                              WHERE c.command_tag IN ('GRANT', 'REVOKE') \
                                 OR c.object_identity LIKE '%pgmigrations%' \
                                 OR c.object_identity LIKE '%db_setup_continuations%') THEN \
             PERFORM set_config('test.slept', 'yes', true); \
             PERFORM pg_sleep({PAUSE_S}); \
           END IF; \
         END $$; \
         CREATE EVENT TRIGGER slow_ddl ON ddl_command_end EXECUTE FUNCTION slow_ddl()"
    );
    d.db.connect()
        .await
        .client()
        .batch_execute(&sql)
        .await
        .expect("the slow-DDL event trigger");
    d.runtime.async_invocations(INVOCATION, 1);
    d
}

fn embedded_count() -> usize {
    db_setup::migrate::MigrationSet::embedded()
        .expect("embedded migrations")
        .migrations()
        .len()
}

fn responses(outcomes: &[Outcome]) -> Vec<Value> {
    outcomes
        .iter()
        .map(|o| match o {
            Outcome::Response(v) => v.clone(),
            Outcome::Error(e) => panic!("an invocation failed: {e}"),
        })
        .collect()
}

async fn chain_rows(d: &Deployment) -> Vec<String> {
    d.db.query(
        "SELECT request_id || ' ' || sequence || ' ' || state FROM public.db_setup_continuations",
    )
    .await
}

/// Starts a Create with a fresh ResponseURL; the first invocation's outcome.
async fn start(d: &Deployment, properties: Value) -> (Value, String) {
    let url = d.receiver.url();
    let event = cfn_event("Create", &url, properties);
    let first = d.runtime.invoke(&event, INVOCATION).await;
    let Outcome::Response(first) = first else {
        panic!("the first invocation failed: {first:?}");
    };
    (first, url)
}

/// Waits for the chain's answer and its last invocation: SUCCESS, every
/// embedded migration applied; the answer and that count.
async fn chain_succeeds(d: &Deployment, url: &str) -> (common::lambda::Put, usize) {
    let put = d.receiver.wait_for(url, Duration::from_secs(180)).await;
    d.runtime.wait_idle(Duration::from_secs(60)).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    let total = embedded_count();
    assert_eq!(
        put.body["Data"]["Applied"],
        total.to_string(),
        "{}",
        put.body
    );
    (put, total)
}

#[tokio::test]
async fn a_deploy_spans_several_invocations_and_answers_once() {
    let d = slow_deployment("chain", Vec::new()).await;
    let (first, url) = start(&d, json!({"ServiceTimeout": "300"})).await;
    assert_eq!(first["Continued"], 1, "{first}");
    assert!(
        d.receiver.puts_to(&url).is_empty(),
        "the first invocation answered CloudFormation although work was left"
    );

    let (put, total) = chain_succeeds(&d, &url).await;
    let invocations: usize = put.body["Data"]["Invocations"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .expect("Data.Invocations");
    assert!(invocations >= 3, "only {invocations} invocations");
    assert_eq!(d.runtime.async_events().len(), invocations - 1);
    assert_eq!(d.receiver.puts_to(&url).len(), 1, "answered more than once");
    // One deploy-metrics record, from the last invocation, counting the whole deploy.
    let logs = d.all_logs();
    assert_eq!(logs.matches("\"MigrationsApplied\":").count(), 1, "{logs}");
    assert!(
        logs.contains(&format!("\"MigrationsApplied\":{total},")),
        "{logs}"
    );

    // Every invocation but the last handed over without answering.
    let outcomes = responses(&d.runtime.ended());
    let continued: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| o["Continued"].as_u64())
        .collect();
    assert_eq!(
        continued,
        (1..invocations as u64).collect::<Vec<_>>(),
        "{outcomes:?}"
    );

    // All applied, in order, once each; the chain's record says finished.
    let history = d.db.history().await;
    assert_eq!(history.len(), total);
    let mut sorted = history.clone();
    sorted.sort();
    assert_eq!(history, sorted);
    let rows = chain_rows(&d).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        rows[0].ends_with(&format!(" {} finished", invocations - 1)),
        "{rows:?}"
    );
    d.scan().await;
}

#[tokio::test]
async fn duplicated_and_reordered_continuations_are_harmless() {
    let d = slow_deployment("chaindup", Vec::new()).await;
    // Two Lambda instances on one queue, and every self-invocation delivered twice.
    d.add_process().await;
    d.runtime.async_invocations(INVOCATION, 2);
    let (first, url) = start(&d, json!({"ServiceTimeout": "300"})).await;
    assert_eq!(first["Continued"], 1, "{first}");
    let (_, total) = chain_succeeds(&d, &url).await;
    assert_eq!(d.receiver.puts_to(&url).len(), 1, "answered more than once");
    let outcomes = responses(&d.runtime.ended());
    let skipped = outcomes
        .iter()
        .filter(|o| o.get("Skipped").is_some())
        .count();
    let sent = d.runtime.async_events().len();
    assert_eq!(
        skipped, sent,
        "each of the {sent} duplicated events must be skipped once: {outcomes:?}"
    );

    // Late and reordered copies: every event again, newest first, and
    // CloudFormation's original event once more.
    let mut late = d.runtime.async_events();
    late.reverse();
    late.push(cfn_event("Create", &url, json!({"ServiceTimeout": "300"})));
    if let Some(original) = late.last_mut() {
        original["RequestId"] = late_request_id(&d);
    }
    let before = d.runtime.ended().len();
    for event in &late {
        d.runtime.deliver_async(event, INVOCATION);
    }
    d.runtime.wait_idle(Duration::from_secs(60)).await;
    let after = responses(&d.runtime.ended()[before..]);
    assert_eq!(after.len(), late.len());
    for o in &after {
        assert!(o.get("Skipped").is_some(), "a late copy ran: {o}");
    }
    assert_eq!(d.receiver.puts_to(&url).len(), 1, "a late copy answered");
    let history = d.db.history().await;
    assert_eq!(history.len(), total);
    let distinct: std::collections::BTreeSet<_> = history.iter().collect();
    assert_eq!(distinct.len(), total, "a migration was recorded twice");
    d.scan().await;
}

/// The RequestId of the deployment's chain (its record's).
fn late_request_id(d: &Deployment) -> Value {
    let first = d.runtime.async_events();
    first
        .first()
        .map(|e| e["RequestId"].clone())
        .expect("a continuation event")
}

#[tokio::test]
async fn the_whole_operation_is_bounded_by_service_timeout() {
    let d = slow_deployment("chaintimeout", Vec::new()).await;
    // 16 s for the whole deploy: an invocation goes on only while 7.5 s
    // (twice the 1 s margin and the 5.5 s reserve) are left, so the chain
    // works about 8.5 s of the migrations' 12 s.
    let (first, url) = start(&d, json!({"ServiceTimeout": "16"})).await;
    assert_eq!(first["Continued"], 1, "{first}");
    let put = d.receiver.wait_for(&url, Duration::from_secs(60)).await;
    d.runtime.wait_idle(Duration::from_secs(30)).await;
    assert_eq!(put.body["Status"], "FAILED", "{}", put.body);
    let reason = put.body["Reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("the deploy's time ran out") && reason.contains("ServiceTimeout"),
        "{reason}"
    );
    assert_eq!(d.receiver.puts_to(&url).len(), 1);
    // What was applied is whole migrations, and not all of them.
    let applied = d.db.history().await.len();
    assert!(applied > 0 && applied < embedded_count(), "{applied}");

    // A continuation that arrives after the deadline runs nothing and says so.
    let mut late = d
        .runtime
        .async_events()
        .pop()
        .expect("a continuation event");
    late["DbSetupContinuation"]["DeadlineMs"] = json!(1_000);
    let late_url = d.receiver.url();
    late["ResponseURL"] = json!(late_url);
    d.runtime.deliver_async(&late, INVOCATION);
    let put = d
        .receiver
        .wait_for(&late_url, Duration::from_secs(30))
        .await;
    assert_eq!(put.body["Status"], "FAILED");
    assert!(
        put.body["Reason"]
            .as_str()
            .unwrap_or_default()
            .contains("started after the deploy's ServiceTimeout had passed"),
        "{}",
        put.body
    );
    assert_eq!(
        d.db.history().await.len(),
        applied,
        "the late copy ran work"
    );
    d.scan().await;
}

/// The framework's function is CloudFormation's ServiceToken in provider mode.
const FRAMEWORK: &str =
    "arn:aws:lambda:us-east-1:123456789012:function:db-setup-ProviderframeworkonEvent";

/// What the CDK Provider framework does with an `isComplete` handler: the
/// `onEvent` call's result merged into the event, then `isComplete` calls
/// with that same event until one says `IsComplete: true`.
async fn provider_framework(d: &Deployment, event: &Value) -> (Value, usize) {
    let mut event = event.clone();
    event["ServiceToken"] = json!(FRAMEWORK);
    let event = &event;
    let Outcome::Response(on_event) = d.runtime.invoke(event, INVOCATION).await else {
        panic!("onEvent failed");
    };
    assert!(on_event.get("IsComplete").is_none(), "{on_event}");
    let mut merged = event.clone();
    for (k, v) in on_event.as_object().expect("onEvent answers an object") {
        merged[k] = v.clone();
    }
    let mut calls = 1;
    loop {
        let Outcome::Response(answer) = d.runtime.invoke(&merged, INVOCATION).await else {
            panic!("isComplete failed");
        };
        calls += 1;
        assert!(calls < 20, "isComplete never completed");
        match answer["IsComplete"].as_bool() {
            Some(true) => {
                let mut data = merged["Data"].clone();
                if let Some(more) = answer["Data"].as_object() {
                    for (k, v) in more {
                        data[k] = v.clone();
                    }
                }
                return (data, calls);
            }
            Some(false) => {
                assert!(
                    answer.get("Data").is_none(),
                    "Data with IsComplete false: {answer}"
                );
            }
            None => panic!("isComplete answered without IsComplete: {answer}"),
        }
    }
}

#[tokio::test]
async fn provider_mode_goes_on_through_is_complete_calls() {
    let d = slow_deployment(
        "chainprovider",
        vec![("DB_SETUP_RESPONSE_MODE", "provider".to_string())],
    )
    .await;
    let url = d.receiver.url();
    let event = cfn_event("Create", &url, json!({"ServiceTimeout": "300"}));
    let (data, calls) = provider_framework(&d, &event).await;
    assert!(calls >= 3, "only {calls} calls");
    let total = embedded_count();
    assert_eq!(data["Applied"], total.to_string(), "{data}");
    assert_eq!(data["AlreadyApplied"], "0", "{data}");
    assert_eq!(d.db.history().await.len(), total);
    assert!(
        d.receiver.puts_to(&url).is_empty(),
        "provider mode never answers CloudFormation itself"
    );
    assert!(
        d.runtime.async_events().is_empty(),
        "provider mode never invokes itself"
    );

    // A deploy with nothing to do, and a Delete: onEvent finishes, the
    // first isComplete call says so without running anything.
    for request_type in ["Update", "Delete"] {
        let event = cfn_event(request_type, &url, json!({"ServiceTimeout": "300"}));
        let (data, calls) = provider_framework(&d, &event).await;
        assert_eq!(calls, 2, "{request_type}: {data}");
        if request_type == "Update" {
            assert_eq!(data["Applied"], "0", "{data}");
            assert_eq!(data["AlreadyApplied"], total.to_string(), "{data}");
        }
    }
    d.scan().await;
}
