//! The CloudFormation response: its body (pure, at most 4096 bytes) and its
//! delivery (an HTTP PUT to the pre-signed ResponseURL, retried).

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::event::ReplyTo;

/// CloudFormation rejects a longer response ("Response object is too long").
pub const MAX_BODY: usize = 4096;

/// SUCCESS or FAILED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// The resource is in the requested state.
    Success,
    /// It is not; `Reason` says why.
    Failed,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Body<'a> {
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    physical_resource_id: &'a str,
    stack_id: &'a str,
    request_id: &'a str,
    logical_resource_id: &'a str,
    no_echo: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Map<String, Value>>,
}

fn cut(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Builds the response body, at most [`MAX_BODY`] bytes: the Reason is
/// shortened first (marked with "…"), then Data dropped, then identifiers cut.
pub fn body(
    status: Status,
    reason: Option<&str>,
    reply: &ReplyTo,
    data: Option<&Map<String, Value>>,
) -> String {
    let physical = reply.physical_id();
    let render = |reason: Option<&str>, data: Option<&Map<String, Value>>, ids: usize| {
        serde_json::to_string(&Body {
            status,
            reason,
            physical_resource_id: cut(&physical, ids),
            stack_id: cut(&reply.stack_id, ids),
            request_id: cut(&reply.request_id, ids),
            logical_resource_id: cut(&reply.logical_resource_id, ids),
            no_echo: false,
            data,
        })
        .unwrap_or_default()
    };
    let full = render(reason, data, usize::MAX);
    if full.len() <= MAX_BODY {
        return full;
    }
    // The longest prefix of the Reason that fits (escaping makes the size
    // non-linear, so search rather than estimate).
    if let Some(reason) = reason {
        let fits = |keep: usize| {
            let candidate = render(Some(&format!("{}…", cut(reason, keep))), data, usize::MAX);
            (candidate.len() <= MAX_BODY).then_some(candidate)
        };
        let (mut lo, mut hi) = (0, reason.len());
        let mut best = None;
        while lo <= hi {
            let mid = lo + (hi - lo) / 2;
            match fits(mid) {
                Some(candidate) => {
                    best = Some(candidate);
                    lo = mid + 1;
                }
                None if mid == 0 => break,
                None => hi = mid - 1,
            }
        }
        if let Some(candidate) = best.filter(|_| lo > 1) {
            return candidate;
        }
    }
    let reason = reason.map(|r| cut(r, 200));
    for ids in [usize::MAX, 512, 128] {
        let candidate = render(reason, None, ids);
        if candidate.len() <= MAX_BODY {
            return candidate;
        }
    }
    render(reason.map(|r| cut(r, 60)), None, 64)
}

/// The response could not be delivered.
#[derive(Debug, thiserror::Error)]
#[error(
    "the response could not be delivered to CloudFormation after {attempts} attempt(s): {message}"
)]
pub struct DeliveryError {
    /// Attempts made.
    pub attempts: u32,
    /// The last failure.
    pub message: String,
}

/// Sends responses to ResponseURLs (the HTTP client is built once in `main`).
#[derive(Clone)]
pub struct Responder {
    client: reqwest::Client,
    /// Most attempts.
    pub attempts: u32,
    /// Pause before the second attempt; doubles after.
    pub first_pause: Duration,
    /// Timeout of one attempt.
    pub attempt_timeout: Duration,
}

impl Responder {
    /// A responder with its own HTTP client.
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(Responder {
            client: reqwest::Client::builder().build()?,
            attempts: 5,
            first_pause: Duration::from_millis(250),
            attempt_timeout: Duration::from_secs(4),
        })
    }

    /// PUTs `body` to `url` with an empty Content-Type (older URLs are signed
    /// with it) and an explicit Content-Length, retrying network errors and
    /// 5xx answers with backoff, never past `until`.
    pub async fn put(&self, url: &str, body: &str, until: Instant) -> Result<(), DeliveryError> {
        let mut pause = self.first_pause;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let remaining = until.saturating_duration_since(Instant::now());
            let timeout = self
                .attempt_timeout
                .min(remaining)
                .max(Duration::from_millis(500));
            let result = self
                .client
                .put(url)
                .header(reqwest::header::CONTENT_TYPE, "")
                .header(reqwest::header::CONTENT_LENGTH, body.len())
                .body(body.to_string())
                .timeout(timeout)
                .send()
                .await;
            let (retry, message) = match result {
                Ok(r) if r.status().is_success() => {
                    info!(
                        status = r.status().as_u16(),
                        attempt,
                        bytes = body.len(),
                        "response delivered"
                    );
                    return Ok(());
                }
                Ok(r) => (
                    r.status().is_server_error() || r.status().as_u16() == 429,
                    format!("HTTP {}", r.status()),
                ),
                Err(e) => (true, crate::db::error_chain(&e)),
            };
            let next = Instant::now() + pause;
            if !retry || attempt >= self.attempts || next >= until {
                return Err(DeliveryError {
                    attempts: attempt,
                    message,
                });
            }
            warn!(attempt, error = %message, "response not delivered, retrying");
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reply() -> ReplyTo {
        ReplyTo {
            response_url: Some("https://x".into()),
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/app/1".into(),
            request_id: "req-1".into(),
            logical_resource_id: "DbSetup".into(),
            physical_resource_id: None,
        }
    }

    #[test]
    fn success_carries_the_ids_and_data() {
        let data = json!({"Applied": "3"}).as_object().cloned().unwrap();
        let v: Value =
            serde_json::from_str(&body(Status::Success, None, &reply(), Some(&data))).unwrap();
        assert_eq!(v["Status"], "SUCCESS");
        assert_eq!(v["PhysicalResourceId"], "db-setup-DbSetup");
        assert_eq!(v["StackId"], reply().stack_id);
        assert_eq!(v["RequestId"], "req-1");
        assert_eq!(v["LogicalResourceId"], "DbSetup");
        assert_eq!(v["Data"]["Applied"], "3");
        assert!(v.get("Reason").is_none());
    }

    #[test]
    fn a_long_reason_is_truncated_to_fit() {
        for reason in ["x".repeat(10_000), "é\"\\\n".repeat(3_000)] {
            let text = body(Status::Failed, Some(&reason), &reply(), None);
            assert!(text.len() <= MAX_BODY, "{}", text.len());
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["Status"], "FAILED");
            let r = v["Reason"].as_str().unwrap();
            // Cut as little as needed: escaping can double a character's size.
            assert!(
                r.ends_with('…') && serde_json::to_string(r).unwrap().len() > 3500,
                "{}",
                r.len()
            );
        }
    }

    #[test]
    fn even_huge_ids_and_data_fit() {
        let mut r = reply();
        r.stack_id = "s".repeat(5000);
        r.request_id = "q".repeat(5000);
        let data = json!({"Big": "d".repeat(5000)})
            .as_object()
            .cloned()
            .unwrap();
        let text = body(Status::Failed, Some(&"why ".repeat(2000)), &r, Some(&data));
        assert!(text.len() <= MAX_BODY, "{}", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["Status"], "FAILED");
        assert!(!v["Reason"].as_str().unwrap().is_empty());
    }
}
