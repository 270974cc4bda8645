//! The handler's guarantees, with a work that hangs, panics or succeeds:
//! FAILED always reaches CloudFormation before the deadline; Delete never
//! touches the work; the response PUT is retried; provider mode never PUTs.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::lambda::{Receiver, cfn_event};
use common::scripted::{Behaviour, epoch_ms, handler};
use db_setup::config::ResponseMode;
use serde_json::json;

#[tokio::test]
async fn a_hung_work_gets_failed_before_the_deadline() {
    let receiver = Receiver::start().await;
    let (h, _) = handler(Behaviour::Hang, ResponseMode::Direct);
    let url = receiver.url();
    let deadline = epoch_ms() + 6_000;
    let started = Instant::now();
    let out = h
        .handle(cfn_event("Create", &url, json!({})), deadline)
        .await;
    let put = receiver.wait_for(&url, Duration::from_secs(1)).await;
    assert!(
        put.at_ms < deadline,
        "the PUT came {} ms after the deadline",
        put.at_ms - deadline
    );
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(put.body["Status"], "FAILED");
    let reason = put.body["Reason"].as_str().unwrap();
    // The budget is what remains of the 6 s minus the 2 s margin, in whole seconds.
    assert!(
        reason.starts_with("timed out after ")
            && reason.contains("s while waiting for the migration lock"),
        "{reason}"
    );
    assert_eq!(out.unwrap()["Status"], "FAILED");
}

#[tokio::test]
async fn a_panic_gets_failed_naming_the_step() {
    let receiver = Receiver::start().await;
    let (h, _) = handler(Behaviour::Panic, ResponseMode::Direct);
    let url = receiver.url();
    h.handle(cfn_event("Update", &url, json!({})), epoch_ms() + 60_000)
        .await
        .unwrap();
    let put = receiver.wait_for(&url, Duration::from_secs(1)).await;
    assert_eq!(put.body["Status"], "FAILED");
    assert_eq!(put.body["PhysicalResourceId"], "db-setup-DbSetup");
    assert_eq!(
        put.body["Reason"],
        "internal error (a panic) while waiting for the migration lock; nothing more was done: please report it with the function's logs"
    );
}

#[tokio::test]
async fn a_panic_in_provider_mode_is_an_error_of_the_invocation() {
    let (h, _) = handler(Behaviour::Panic, ResponseMode::Provider);
    let err = h
        .handle(
            cfn_event("Create", "http://127.0.0.1:9/never", json!({})),
            epoch_ms() + 60_000,
        )
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "InternalError");
}

#[tokio::test]
async fn delete_never_runs_the_work() {
    let receiver = Receiver::start().await;
    let (h, calls) = handler(Behaviour::Panic, ResponseMode::Direct);
    let url = receiver.url();
    h.handle(cfn_event("Delete", &url, json!({})), epoch_ms() + 60_000)
        .await
        .unwrap();
    let put = receiver.wait_for(&url, Duration::from_secs(1)).await;
    assert_eq!(put.body["Status"], "SUCCESS");
    assert_eq!(put.body["PhysicalResourceId"], "db-setup-DbSetup");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_response_put_is_retried_until_accepted() {
    let receiver = Receiver::start().await;
    receiver.fail_next(2);
    let (h, _) = handler(Behaviour::Succeed, ResponseMode::Direct);
    let url = receiver.url();
    let out = h
        .handle(cfn_event("Create", &url, json!({})), epoch_ms() + 60_000)
        .await;
    assert_eq!(out.unwrap()["Status"], "SUCCESS");
    assert_eq!(
        receiver.puts_to(&url).len(),
        1,
        "accepted on the third attempt"
    );
}

#[tokio::test]
async fn an_undeliverable_response_fails_the_invocation_so_lambda_retries() {
    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (h, _) = handler(Behaviour::Succeed, ResponseMode::Direct);
    let started = Instant::now();
    let err = h
        .handle(
            cfn_event("Create", &format!("http://{closed}/r"), json!({})),
            epoch_ms() + 5_000,
        )
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "ResponseNotDelivered");
    assert!(
        err.error_message.contains("could not be delivered"),
        "{}",
        err.error_message
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "retries stop at the deadline"
    );
}

#[tokio::test]
async fn an_unknown_deadline_uses_the_time_budget_not_zero() {
    // The local emulator sends a deadline in the past: the work must still run.
    let receiver = Receiver::start().await;
    let (h, calls) = handler(Behaviour::Succeed, ResponseMode::Direct);
    let url = receiver.url();
    h.handle(cfn_event("Create", &url, json!({})), 1_000)
        .await
        .unwrap();
    assert_eq!(
        receiver.wait_for(&url, Duration::from_secs(1)).await.body["Status"],
        "SUCCESS"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_hung_manual_action_returns_a_timeout_error() {
    let (h, _) = handler(Behaviour::Hang, ResponseMode::Direct);
    let err = h
        .handle(json!({"action": "status"}), epoch_ms() + 5_000)
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "Timeout");
    assert!(
        err.error_message
            .contains("while waiting for the migration lock")
    );
}

#[tokio::test]
async fn a_broken_event_with_a_response_url_gets_failed_naming_the_fields() {
    let receiver = Receiver::start().await;
    let (h, calls) = handler(Behaviour::Succeed, ResponseMode::Direct);
    let url = receiver.url();
    let event = json!({"RequestType": "Create", "ResponseURL": url, "StackId": "s", "LogicalResourceId": "L",
                       "ResourceProperties": {"ManageUsers": "perhaps"}});
    h.handle(event, epoch_ms() + 60_000).await.unwrap();
    let put = receiver.wait_for(&url, Duration::from_secs(1)).await;
    assert_eq!(put.body["Status"], "FAILED");
    let reason = put.body["Reason"].as_str().unwrap();
    assert!(
        reason.contains("RequestId is missing") && reason.contains("property ManageUsers"),
        "{reason}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}
