//! The CloudFormation response: its body (pure, at most 4096 bytes, with the
//! typed [`Data`]) and its delivery (an HTTP PUT to the pre-signed
//! ResponseURL, retried).
//!
//! A pre-signed ResponseURL is a bearer token: whoever holds it can answer
//! for the stack. Its query (the signature) is never logged nor returned:
//! only [`redact`]ed (scheme, host and path). And whoever may invoke the
//! function must not make it PUT elsewhere: only `https` URLs on an AWS host
//! are answered ([`check_url`], unless `DB_SETUP_ALLOW_LOCAL_RESPONSE_URL`),
//! and redirects are never followed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_runtime::Diagnostic;
use serde::Serialize;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use crate::db::Tls;

use crate::event::ReplyTo;
use crate::migrate::options::Phase;

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
    data: Option<&'a Data>,
}

/// The response's `Data`: what `Fn::GetAtt` reads from the custom resource.
/// CloudFormation wants string values, so the counts are written as strings
/// (`"Applied": "3"`); a field left `None` is not sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Data {
    /// Migrations applied by this request.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "count")]
    pub applied: Option<usize>,
    /// Migrations already applied before it.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "count")]
    pub already_applied: Option<usize>,
    /// The last applied migration (empty when none is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_migration: Option<String>,
    /// Users managed.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "count")]
    pub users: Option<usize>,
    /// Of them, the users whose password was set by this request.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "count")]
    pub users_rotated: Option<usize>,
    /// Why nothing was run (a Delete, a rollback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The deploy phase this request ran (`expand` or `contract`), when it asked for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Pending migrations left to the contract phase, comma-separated
    /// (empty when none); set on an `expand` request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waits_for_contract: Option<String>,
    /// How many invocations the deploy took, when more than one
    /// (see [`crate::continuation`]).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "count")]
    pub invocations: Option<usize>,
    /// The RDS snapshot taken (and available) before this request's
    /// migrations ran (`SnapshotDbInstance` / `SnapshotDbCluster`); not sent
    /// when none was needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

impl Data {
    /// Data that only says why nothing was run.
    pub fn message(text: impl Into<String>) -> Self {
        Data {
            message: Some(text.into()),
            ..Data::default()
        }
    }
}

fn count<S: serde::Serializer>(n: &Option<usize>, s: S) -> Result<S::Ok, S::Error> {
    match n {
        Some(n) => s.collect_str(n),
        None => s.serialize_none(),
    }
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
pub fn body(status: Status, reason: Option<&str>, reply: &ReplyTo, data: Option<&Data>) -> String {
    let physical = reply.physical_id();
    let render = |reason: Option<&str>, data: Option<&Data>, ids: usize| {
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

/// The response was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The URL is not one the function answers at.
    #[error(
        "the ResponseURL {url} is refused: {why}; only https URLs on *.amazonaws.com or *.amazonaws.com.cn \
         (CloudFormation's pre-signed S3 URLs) are answered, and redirects are not followed. \
         For a local receiver set DB_SETUP_ALLOW_LOCAL_RESPONSE_URL=true. Nothing was sent"
    )]
    Refused {
        /// The URL without its query ([`redact`]).
        url: String,
        /// Why.
        why: String,
    },
    /// Sending failed.
    #[error(
        "the response could not be delivered to CloudFormation at {url} after {attempts} attempt(s): {message}"
    )]
    Failed {
        /// The URL without its query ([`redact`]).
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure (never with the URL's query).
        message: String,
    },
}

impl DeliveryError {
    /// The Lambda error type.
    pub fn kind(&self) -> &'static str {
        match self {
            DeliveryError::Refused { .. } => "ResponseUrlRefused",
            DeliveryError::Failed { .. } => "ResponseNotDelivered",
        }
    }
}

impl From<&DeliveryError> for Diagnostic {
    fn from(e: &DeliveryError) -> Self {
        Diagnostic {
            error_type: e.kind().into(),
            error_message: e.to_string(),
        }
    }
}

/// A URL as it may be logged: scheme, host, port and path, never the query
/// (a pre-signed URL's signature) nor user information.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default(),
            u.path()
        ),
        Err(_) => "(an unparseable URL)".into(),
    }
}

/// True for a host name under AWS's public domains.
fn is_aws_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    [".amazonaws.com", ".amazonaws.com.cn"]
        .iter()
        .any(|suffix| host.len() > suffix.len() && host.ends_with(suffix))
}

/// Whether the function may PUT to `url`: `https` on the default port of an
/// AWS host (`*.amazonaws.com`, `*.amazonaws.com.cn`), or, with
/// `allow_local`, any http(s) URL. `Err` says why not (never with the query).
pub fn check_url(url: &str, allow_local: bool) -> Result<(), DeliveryError> {
    let refused = |why: String| DeliveryError::Refused {
        url: redact(url),
        why,
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| refused("it is not a URL".into()))?;
    let host = parsed.host_str().unwrap_or("");
    if !matches!(parsed.scheme(), "https" | "http") || host.is_empty() {
        return Err(refused("it is not an http(s) URL with a host".into()));
    }
    if allow_local {
        return Ok(());
    }
    if parsed.scheme() != "https" {
        return Err(refused(format!(
            "its scheme is {}, not https",
            parsed.scheme()
        )));
    }
    if parsed.port().is_some() {
        return Err(refused("it names a port".into()));
    }
    // domain() is None for an IP address.
    match parsed.domain() {
        Some(domain) if is_aws_host(domain) => Ok(()),
        _ => Err(refused(format!("{host} is not an AWS host"))),
    }
}

/// The HTTP client: built, or built on the first PUT from the process's
/// TLS connector ([`Responder::sharing`]).
#[derive(Clone)]
enum HttpClient {
    Built(reqwest::Client),
    Shared(Tls, Arc<OnceCell<reqwest::Client>>),
}

/// Sends responses to ResponseURLs (the HTTP client is built once per process).
#[derive(Clone)]
pub struct Responder {
    client: HttpClient,
    /// Answer any http(s) URL, not only AWS's (local loop, tests).
    pub allow_local: bool,
    /// Most attempts.
    pub attempts: u32,
    /// Pause before the second attempt; doubles after.
    pub first_pause: Duration,
    /// Timeout of one attempt.
    pub attempt_timeout: Duration,
}

impl Responder {
    /// A responder with its own HTTP client (which never follows a
    /// redirect), answering only AWS URLs.
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Responder::with(HttpClient::Built(client)))
    }

    /// A responder whose HTTP client is built on the first PUT from `tls`'s
    /// connector (the trust stores are parsed once per process, not again
    /// for the PUT; see [`Tls`]), answering only AWS URLs.
    pub fn sharing(tls: Tls) -> Self {
        Responder::with(HttpClient::Shared(tls, Arc::new(OnceCell::new())))
    }

    fn with(client: HttpClient) -> Self {
        Responder {
            client,
            allow_local: false,
            attempts: 5,
            first_pause: Duration::from_millis(250),
            attempt_timeout: Duration::from_secs(4),
        }
    }

    async fn client(&self) -> Result<&reqwest::Client, String> {
        match &self.client {
            HttpClient::Built(client) => Ok(client),
            HttpClient::Shared(tls, cell) => {
                cell.get_or_try_init(|| async {
                    let connector = tls.connector().await.map_err(|e| e.to_string())?;
                    reqwest::Client::builder()
                        .redirect(reqwest::redirect::Policy::none())
                        .use_preconfigured_tls(connector)
                        .build()
                        .map_err(|e| crate::db::error_chain(&e))
                })
                .await
            }
        }
    }

    /// Whether this responder answers at `url` (see [`check_url`]).
    pub fn check(&self, url: &str) -> Result<(), DeliveryError> {
        check_url(url, self.allow_local)
    }

    /// PUTs `body` to `url` with an empty Content-Type (older URLs are signed
    /// with it) and an explicit Content-Length, retrying network errors and
    /// 5xx answers with backoff, never past `until`. A refused URL
    /// ([`Responder::check`]) gets nothing; a redirect is an error.
    pub async fn put(&self, url: &str, body: &str, until: Instant) -> Result<(), DeliveryError> {
        self.check(url)?;
        let client = self
            .client()
            .await
            .map_err(|message| DeliveryError::Failed {
                url: redact(url),
                attempts: 0,
                message,
            })?;
        let mut pause = self.first_pause;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let remaining = until.saturating_duration_since(Instant::now());
            let timeout = self
                .attempt_timeout
                .min(remaining)
                .max(Duration::from_millis(500));
            let result = client
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
                // reqwest's text names the URL, signature included: not that.
                Err(e) => (true, crate::db::error_chain(&e.without_url())),
            };
            let next = Instant::now() + pause;
            if !retry || attempt >= self.attempts || next >= until {
                return Err(DeliveryError::Failed {
                    url: redact(url),
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
    use serde_json::{Value, json};

    fn reply() -> ReplyTo {
        ReplyTo {
            response_url: Some("https://x".into()),
            service_token: None,
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/app/1".into(),
            request_id: "req-1".into(),
            logical_resource_id: "DbSetup".into(),
            physical_resource_id: None,
        }
    }

    #[test]
    fn success_carries_the_ids_and_data() {
        let data = Data {
            applied: Some(3),
            ..Data::default()
        };
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
    fn data_has_todays_keys_with_string_values() {
        let data = Data {
            applied: Some(3),
            already_applied: Some(0),
            last_migration: Some("012_x".into()),
            users: Some(2),
            users_rotated: Some(1),
            message: None,
            phase: None,
            waits_for_contract: None,
            invocations: None,
            snapshot: None,
        };
        assert_eq!(
            serde_json::to_value(&data).unwrap(),
            json!({"Applied": "3", "AlreadyApplied": "0", "LastMigration": "012_x",
                   "Users": "2", "UsersRotated": "1"})
        );
        let chained = Data {
            invocations: Some(3),
            ..data.clone()
        };
        assert_eq!(serde_json::to_value(&chained).unwrap()["Invocations"], "3");
        let with_snapshot = Data {
            snapshot: Some("db-setup-app-r1".into()),
            ..data
        };
        assert_eq!(
            serde_json::to_value(&with_snapshot).unwrap()["Snapshot"],
            "db-setup-app-r1"
        );
        assert_eq!(
            serde_json::to_value(Data::message("nothing was run")).unwrap(),
            json!({"Message": "nothing was run"})
        );
        assert_eq!(serde_json::to_value(Data::default()).unwrap(), json!({}));
    }

    #[test]
    fn data_says_which_phase_ran_and_what_waits() {
        let data = Data {
            applied: Some(2),
            phase: Some(Phase::Expand),
            waits_for_contract: Some("003_drop_old,004_more".into()),
            ..Data::default()
        };
        assert_eq!(
            serde_json::to_value(&data).unwrap(),
            json!({"Applied": "2", "Phase": "expand", "WaitsForContract": "003_drop_old,004_more"})
        );
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
    fn only_https_urls_on_aws_hosts_are_answered() {
        for url in [
            "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/arn%3A/x?X-Amz-Signature=1",
            "https://cloudformation-custom-resource-response-cnnorth1.s3.cn-north-1.amazonaws.com.cn/k?s=1",
            "https://s3.us-gov-west-1.amazonaws.com/b/k",
            "https://S3.AMAZONAWS.COM./b/k",
        ] {
            assert!(check_url(url, false).is_ok(), "{url}");
        }
        for (url, why) in [
            ("http://bucket.s3.amazonaws.com/k", "scheme is http"),
            (
                "https://169.254.169.254/latest/meta-data",
                "169.254.169.254 is not an AWS host",
            ),
            (
                "https://amazonaws.com/k",
                "amazonaws.com is not an AWS host",
            ),
            (
                "https://evil.com/.amazonaws.com",
                "evil.com is not an AWS host",
            ),
            ("https://s3.amazonaws.com.evil.com/k", "is not an AWS host"),
            ("https://xamazonaws.com/k", "is not an AWS host"),
            ("https://s3.amazonaws.com:8443/k", "names a port"),
            ("https://[::1]/k", "is not an AWS host"),
            ("https://localhost/k", "localhost is not an AWS host"),
            ("ftp://s3.amazonaws.com/k", "not an http(s) URL"),
            ("not a url", "not a URL"),
        ] {
            let e = check_url(url, false).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
            assert!(e.contains("DB_SETUP_ALLOW_LOCAL_RESPONSE_URL"), "{e}");
        }
        // Allowed for local use: any http(s) URL with a host, nothing else.
        assert!(check_url("http://127.0.0.1:9000/r?x=1", true).is_ok());
        assert!(check_url("file:///etc/passwd", true).is_err());
    }

    #[test]
    fn redaction_keeps_the_host_and_path_never_the_query() {
        assert_eq!(
            redact("https://user:pw@b.s3.amazonaws.com/arn%3Aaws/k?X-Amz-Signature=abc#f"),
            "https://b.s3.amazonaws.com/arn%3Aaws/k"
        );
        assert_eq!(redact("http://127.0.0.1:9/r?s=1"), "http://127.0.0.1:9/r");
        assert_eq!(redact("::"), "(an unparseable URL)");
        let e = check_url("https://example.com/p?X-Amz-Signature=secret", false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("https://example.com/p") && !e.contains("secret"),
            "{e}"
        );
    }

    #[test]
    fn even_huge_ids_and_data_fit() {
        let mut r = reply();
        r.stack_id = "s".repeat(5000);
        r.request_id = "q".repeat(5000);
        let data = Data::message("d".repeat(5000));
        let text = body(Status::Failed, Some(&"why ".repeat(2000)), &r, Some(&data));
        assert!(text.len() <= MAX_BODY, "{}", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["Status"], "FAILED");
        assert!(!v["Reason"].as_str().unwrap().is_empty());
    }
}
