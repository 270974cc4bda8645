//! Malformed events: a generated corpus through the real handler (and raw
//! bytes through the real binary), plus property tests on the parser and the
//! response body. No panic; every event answered with a clear error; a
//! CloudFormation event with a usable ResponseURL gets FAILED in at most 4096 bytes.

mod common;

use std::time::Duration;

use common::lambda::{Function, Outcome, Receiver, RuntimeApi};
use common::scripted::{Behaviour, epoch_ms, handler};
use db_setup::config::ResponseMode;
use db_setup::event::{self, ReplyTo};
use db_setup::respond::{self, MAX_BODY, Status};
use proptest::prelude::*;
use serde_json::{Value, json};

const FIELDS: [&str; 6] = [
    "RequestType",
    "ResponseURL",
    "StackId",
    "RequestId",
    "LogicalResourceId",
    "PhysicalResourceId",
];

fn valid(request_type: &str, url: &str) -> Value {
    json!({
        "RequestType": request_type,
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:db-setup",
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1",
        "RequestId": "r-1",
        "ResourceType": "Custom::DbSetup",
        "LogicalResourceId": "DbSetup",
        "PhysicalResourceId": "db-setup-DbSetup",
        "ResourceProperties": {"ServiceToken": "x", "MigrationsHash": "h"}
    })
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("leaf"), |inner, _| json!({ "n": inner }))
}

/// A deterministic corpus of broken events (each with the URL it should be answered at).
fn corpus(url: &dyn Fn() -> String) -> Vec<(String, Value)> {
    let junk = [
        json!(null),
        json!(7),
        json!(true),
        json!([1, 2]),
        json!({"a": 1}),
        json!(""),
        json!("x".repeat(100_000)),
        json!("\u{0000}\u{ffff}é"),
        nested(60),
    ];
    let mut out = Vec::new();
    for rt in ["Create", "Update", "Delete"] {
        for field in FIELDS {
            let mut e = valid(rt, &url());
            e.as_object_mut().unwrap().remove(field);
            out.push((format!("{rt} without {field}"), e));
            for (i, j) in junk.iter().enumerate() {
                let mut e = valid(rt, &url());
                e[field] = j.clone();
                out.push((format!("{rt} with {field} = junk {i}"), e));
            }
        }
    }
    for t in [
        "create",
        "CREATE",
        "Replace",
        "",
        " Create",
        "Create\u{0}",
        "Créate",
        "Delete ",
        "null",
        "Updat",
    ] {
        let mut e = valid("Create", &url());
        e["RequestType"] = json!(t);
        out.push((format!("RequestType {t:?}"), e));
    }
    let properties = [
        json!("{\"TransactionMode\": \"batch\""),
        json!([{"TransactionMode": "each"}]),
        json!(42),
        json!({"TransactionMode": "eachh"}),
        json!({"TransactionMode": ["each"]}),
        json!({"TransactionMode": {"mode": "each"}}),
        json!({"ManageUsers": "yes"}),
        json!({"ManageUsers": "0"}),
        json!({"ManageUsers": [true]}),
        json!({"TargetMigration": "t".repeat(10_000)}),
        json!({"TargetMigration": {"to": "x"}}),
        json!({"TargetMigration": nested(50)}),
        json!({"MigrationsHash": ["a"]}),
        json!({"MigrationsHash": "h".repeat(5_000)}),
    ];
    for (i, p) in properties.iter().enumerate() {
        for key in ["ResourceProperties", "OldResourceProperties"] {
            let mut e = valid("Update", &url());
            e[key] = p.clone();
            out.push((format!("{key} case {i}"), e));
        }
    }
    let actions = [
        json!({"action": 1}),
        json!({"action": null}),
        json!({"action": "STATUS"}),
        json!({"action": "migrate", "mode": "sometimes"}),
        json!({"action": "migrate", "to": ["a"]}),
        json!({"action": "users", "ensure": "maybe"}),
        json!({"action": "x".repeat(50_000)}),
        json!({"action": {"name": "status"}}),
        json!({"actions": "status"}),
        json!({}),
        json!([]),
        json!("status"),
        json!(null),
        json!(12.5),
        nested(100),
    ];
    for (i, a) in actions.iter().enumerate() {
        out.push((format!("action case {i}"), a.clone()));
    }
    out
}

fn usable(url: &Value) -> bool {
    url.as_str()
        .is_some_and(|u| u.starts_with("http://127.0.0.1"))
}

#[tokio::test]
async fn a_corpus_of_broken_events_is_answered_without_panic() {
    let receiver = Receiver::start().await;
    let (h, calls) = handler(Behaviour::Succeed, ResponseMode::Direct);
    let events = corpus(&|| receiver.url());
    assert!(
        events.len() >= 200,
        "the corpus has {} events",
        events.len()
    );
    let mut answered_failed = 0;
    for (name, event) in &events {
        let url = event.get("ResponseURL").cloned().unwrap_or(Value::Null);
        let result = h.handle(event.clone(), epoch_ms() + 60_000).await;
        match &result {
            Ok(_) => {}
            Err(d) => {
                assert!(!d.error_type.is_empty(), "{name}");
                assert!(d.error_message.len() > 20, "{name}: {}", d.error_message);
            }
        }
        let is_cfn = event.get("RequestType").is_some() || event.get("ResponseURL").is_some();
        if is_cfn && usable(&url) {
            let put = receiver
                .wait_for(url.as_str().unwrap(), Duration::from_secs(2))
                .await;
            assert!(put.raw_len <= MAX_BODY, "{name}: {} bytes", put.raw_len);
            assert!(put.content_length == Some(put.raw_len));
            if put.body["Status"] == "FAILED" {
                answered_failed += 1;
                assert!(
                    !put.body["Reason"].as_str().unwrap_or("").is_empty(),
                    "{name}"
                );
            }
        } else {
            assert!(
                result.is_err(),
                "{name}: no way to answer CloudFormation, so the invocation must fail"
            );
        }
    }
    assert!(answered_failed > 100, "{answered_failed} FAILED answers");
    // The work ran exactly for the events that were valid after all (a Create
    // without PhysicalResourceId is one), except Deletes, which never run it,
    // and events without a ResponseURL, which direct mode cannot answer.
    let valid_work = events
        .iter()
        .filter(|(_, e)| match event::parse(e) {
            Ok(event::Request::CloudFormation(r)) => {
                r.request_type != event::RequestType::Delete && r.reply.response_url.is_some()
            }
            Ok(event::Request::Action(_)) => true,
            Err(_) => false,
        })
        .count();
    assert!(valid_work > 0, "{valid_work}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), valid_work);
}

#[tokio::test]
async fn raw_payloads_that_are_not_json_are_errors_and_the_function_keeps_serving() {
    let runtime = RuntimeApi::start().await;
    let function = Function::start(
        &runtime,
        &[
            ("DB_SETUP_ADMIN_SECRET_ID", "unused".into()),
            ("DB_SETUP_TLS", "disable".into()),
        ],
    )
    .await;
    let raws: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"{\"RequestType\": \"Create\",".to_vec(),
        b"\xef\xbb\xbf{\"action\": \"status\"}x".to_vec(),
        vec![0xff, 0xfe, 0xfd],
        b"{\"action\": \"\xc3\x28\"}".to_vec(),
        b"NaN".to_vec(),
        b"{'single': 'quotes'}".to_vec(),
        b"[".repeat(200),
        format!("{}{}", "{\"a\":".repeat(300), "}".repeat(300)).into_bytes(),
        b"\x00\x01\x02".to_vec(),
        b"{\"RequestType\": \"Create\", \"ResponseURL\": \"http://127.0.0.1:9/x\"".to_vec(),
    ];
    for raw in raws {
        let out = runtime
            .invoke_raw(raw.clone(), Duration::from_secs(20))
            .await;
        match out {
            Outcome::Error(e) => assert!(e.to_string().len() > 10, "{e}"),
            Outcome::Response(r) => panic!(
                "{:?} was answered as success: {r}",
                String::from_utf8_lossy(&raw)
            ),
        }
    }
    // Still serving: a well-formed event is handled (here: a clear configuration error).
    let out = runtime
        .invoke(&json!({"action": "verify"}), Duration::from_secs(20))
        .await;
    assert!(out.text().contains("secret unused"), "{}", out.text());
    assert!(!function.logs().contains("panicked"), "{}", function.logs());
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        prop::sample::select(vec![
            "Create",
            "Update",
            "Delete",
            "status",
            "migrate",
            "http://127.0.0.1:1/r",
            "true",
            "each"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "RequestType",
                        "ResponseURL",
                        "StackId",
                        "RequestId",
                        "LogicalResourceId",
                        "PhysicalResourceId",
                        "ResourceProperties",
                        "OldResourceProperties",
                        "TransactionMode",
                        "ManageUsers",
                        "TargetMigration",
                        "action",
                        "to",
                        "mode",
                        "ensure",
                        "x",
                    ]),
                    inner
                ),
                0..8
            )
            .prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_parser_never_panics_and_keeps_only_usable_urls(v in arb_json()) {
        if let Err(e) = event::parse(&v) {
            prop_assert!(!e.problems.is_empty());
            if let Some(reply) = e.reply {
                if let Some(url) = reply.response_url {
                    prop_assert!(url.starts_with("http://") || url.starts_with("https://"));
                }
            }
        }
    }

    #[test]
    fn every_response_body_fits(reason in ".{0,6000}", ids in prop::collection::vec(".{0,2000}", 4), data in ".{0,3000}") {
        let reply = ReplyTo {
            response_url: None,
            stack_id: ids[0].clone(),
            request_id: ids[1].clone(),
            logical_resource_id: ids[2].clone(),
            physical_resource_id: Some(ids[3].clone()).filter(|s| !s.is_empty()),
            service_token: None,
        };
        let data = respond::Data::message(data);
        let body = respond::body(Status::Failed, Some(&reason), &reply, Some(&data));
        prop_assert!(body.len() <= MAX_BODY, "{} bytes", body.len());
        let v: Value = serde_json::from_str(&body).unwrap();
        prop_assert_eq!(&v["Status"], "FAILED");
    }
}

/// `{"n":{"n":...1...}}`, `depth` objects deep (beyond serde_json's 128 at 200).
fn deep_json(depth: usize) -> String {
    format!("{}1{}", "{\"n\":".repeat(depth), "}".repeat(depth))
}

/// The function as a process with a valid configuration (no database needed
/// for what these tests send), and a receiver for its PUTs.
async fn function_with(env: &[(&str, &str)]) -> (RuntimeApi, Function, Receiver) {
    let runtime = RuntimeApi::start().await;
    let mut all = vec![
        ("DB_SETUP_ADMIN_SECRET_ID", "unused".to_string()),
        ("DB_SETUP_TLS", "disable".to_string()),
    ];
    all.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
    let function = Function::start(&runtime, &all).await;
    (runtime, function, Receiver::start().await)
}

#[tokio::test]
async fn events_nested_beyond_the_parsers_limit_are_still_answered_failed() {
    let (runtime, function, receiver) = function_with(&[]).await;
    let deep = deep_json(200);
    for (field, request_type) in [
        ("ResourceProperties", "Create"),
        ("OldResourceProperties", "Update"),
        ("SomethingNew", "Delete"),
    ] {
        let url = receiver.url();
        let mut event = valid(request_type, &url);
        event[field] = json!("__DEEP__");
        let raw = event.to_string().replace(
            "\"__DEEP__\"",
            &format!("{{\"MigrationsHash\":\"h\",\"Deep\":{deep}}}"),
        );
        let outcome = runtime.invoke_raw(raw, Duration::from_secs(20)).await;
        let put = receiver.wait_for(&url, Duration::from_secs(5)).await;
        assert_eq!(put.body["Status"], "FAILED", "{field}: {}", put.body);
        let reason = put.body["Reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(field) && reason.contains("nested"),
            "{field}: {reason}"
        );
        assert_eq!(put.body["RequestId"], "r-1");
        assert_eq!(outcome.response()["Status"], "FAILED");
    }
    assert!(!function.logs().contains("panicked"), "{}", function.logs());
}

#[tokio::test]
async fn null_ids_are_answered_failed_naming_the_field() {
    let receiver = Receiver::start().await;
    let (h, calls) = handler(Behaviour::Succeed, ResponseMode::Direct);
    for field in ["RequestId", "StackId", "LogicalResourceId"] {
        let url = receiver.url();
        let mut event = valid("Create", &url);
        event[field] = Value::Null;
        let _ = h.handle(event, epoch_ms() + 60_000).await;
        let put = receiver.wait_for(&url, Duration::from_secs(5)).await;
        assert_eq!(put.body["Status"], "FAILED", "{field}: {}", put.body);
        assert!(
            put.body["Reason"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("{field} is null")),
            "{field}: {}",
            put.body
        );
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_response_url_that_cannot_be_reached_is_never_printed_or_returned_whole() {
    let (runtime, function, _receiver) = function_with(&[]).await;
    // Nothing listens on port 9 (discard) of the loopback.
    let url = common::lambda::signed_url("http://127.0.0.1:9/bucket/key");
    let outcome = runtime
        .invoke(&valid("Delete", &url), Duration::from_secs(20))
        .await;
    let error = outcome.error().to_string();
    assert!(error.contains("127.0.0.1:9/bucket/key"), "{error}");
    let texts = [
        ("the function's logs", function.logs()),
        ("the invocation's error", error),
    ];
    for secret in common::lambda::url_secrets(&url) {
        for (what, text) in &texts {
            assert!(
                !text.contains(&secret),
                "the URL's query appears in {what}: {text}"
            );
        }
    }
}

#[tokio::test]
async fn a_redirect_from_the_response_url_is_not_followed() {
    let (runtime, _function, receiver) = function_with(&[]).await;
    let elsewhere = Receiver::start().await;
    receiver.redirect_to(&elsewhere.url());
    let outcome = runtime
        .invoke(&valid("Delete", &receiver.url()), Duration::from_secs(20))
        .await;
    let error = outcome.error().to_string();
    assert!(error.contains("307"), "{error}");
    assert!(elsewhere.all().is_empty(), "the redirect was followed");
}

#[tokio::test]
async fn a_response_url_off_aws_is_refused_unless_allowed() {
    let (runtime, function, receiver) =
        function_with(&[("DB_SETUP_ALLOW_LOCAL_RESPONSE_URL", "false")]).await;
    let url = receiver.url();
    let outcome = runtime
        .invoke(&valid("Delete", &url), Duration::from_secs(20))
        .await;
    let error = outcome.error().to_string();
    assert!(
        error.contains("DB_SETUP_ALLOW_LOCAL_RESPONSE_URL") && error.contains("amazonaws.com"),
        "{error}"
    );
    assert!(receiver.all().is_empty(), "a refused URL got a PUT");
    assert!(function.logs().contains("127.0.0.1"), "{}", function.logs());
}
