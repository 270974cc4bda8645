//! Driving the function as Lambda does: the real binary, started as a
//! process against a local implementation of the Lambda Runtime API (with
//! real deadlines, which cargo-lambda's emulator does not send), a local
//! receiver for the CloudFormation response PUTs, and secrets in moto.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

pub type Body = Full<Bytes>;

pub fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

/// Serves `handle` on a free loopback port until the test ends.
pub async fn serve<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handle = handle.clone();
                    async move { Ok::<_, Infallible>(handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

pub async fn body_bytes(
    req: Request<hyper::body::Incoming>,
) -> (hyper::http::request::Parts, Bytes) {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (parts, bytes)
}

/// What the function answered to one invocation.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// `/response`: the returned value.
    Response(Value),
    /// `/error`: the diagnostic (errorType, errorMessage).
    Error(Value),
}

impl Outcome {
    pub fn response(&self) -> &Value {
        match self {
            Outcome::Response(v) => v,
            Outcome::Error(e) => panic!("expected a response, got an error: {e}"),
        }
    }

    pub fn error(&self) -> &Value {
        match self {
            Outcome::Error(e) => e,
            Outcome::Response(v) => panic!("expected an error, got a response: {v}"),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Outcome::Response(v) | Outcome::Error(v) => v.to_string(),
        }
    }
}

struct Queued {
    id: String,
    payload: Bytes,
    deadline_ms: u64,
}

#[derive(Default)]
struct RuntimeState {
    queue: VecDeque<Queued>,
    waiting: HashMap<String, oneshot::Sender<Outcome>>,
    init_error: Option<Value>,
    /// The deadline an asynchronous invocation gets (the function's timeout).
    async_timeout: Option<Duration>,
    /// How many copies of each asynchronous event are queued (Lambda
    /// delivers at least once).
    async_copies: usize,
    /// Every asynchronous event received through the Invoke API, in order.
    async_events: Vec<Value>,
    /// Every invocation's outcome, in the order they ended.
    ended: Vec<Outcome>,
    /// Invocations handed to the function and not ended yet.
    running: usize,
}

/// The Lambda Invoke API path prefix (`POST /2015-03-31/functions/{name}/invocations`).
const INVOKE_PATH: &str = "/2015-03-31/functions/";

/// A local Lambda Runtime API (the subset the Rust runtime uses), which also
/// serves the Invoke API for asynchronous invocations (`InvocationType=Event`:
/// the event is queued with a fresh deadline, as Lambda does), so that a
/// function that invokes itself (`AWS_ENDPOINT_URL_LAMBDA`) chains locally.
#[derive(Clone)]
pub struct RuntimeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<RuntimeState>>,
    queued: Arc<Notify>,
}

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let state = Arc::new(Mutex::new(RuntimeState::default()));
        let queued = Arc::new(Notify::new());
        let (s, q) = (state.clone(), queued.clone());
        let addr = serve(move |req: Request<hyper::body::Incoming>| {
            let (state, queued) = (s.clone(), q.clone());
            async move {
                let path = req.uri().path().to_string();
                if path == "/2018-06-01/runtime/invocation/next" {
                    loop {
                        let notified = queued.notified();
                        let item = {
                            let mut s = state.lock().unwrap();
                            let item = s.queue.pop_front();
                            if item.is_some() {
                                s.running += 1;
                            }
                            item
                        };
                        if let Some(item) = item {
                            let mut r = reply(StatusCode::OK, item.payload);
                            let h = r.headers_mut();
                            h.insert("lambda-runtime-aws-request-id", item.id.parse().unwrap());
                            h.insert(
                                "lambda-runtime-deadline-ms",
                                item.deadline_ms.to_string().parse().unwrap(),
                            );
                            h.insert(
                                "lambda-runtime-invoked-function-arn",
                                "arn:aws:lambda:us-east-1:123456789012:function:db-setup"
                                    .parse()
                                    .unwrap(),
                            );
                            h.insert(
                                "lambda-runtime-trace-id",
                                "Root=1-00000000-000000000000000000000000".parse().unwrap(),
                            );
                            return r;
                        }
                        notified.await;
                    }
                }
                let (parts, body) = body_bytes(req).await;
                let value: Value = serde_json::from_slice(&body)
                    .unwrap_or_else(|_| json!(String::from_utf8_lossy(&body)));
                if path.starts_with(INVOKE_PATH) && path.ends_with("/invocations") {
                    let event_type = parts
                        .headers
                        .get("x-amz-invocation-type")
                        .and_then(|v| v.to_str().ok())
                        == Some("Event");
                    if !event_type {
                        return reply(
                            StatusCode::BAD_REQUEST,
                            "only InvocationType=Event is served",
                        );
                    }
                    {
                        let mut s = state.lock().unwrap();
                        let timeout = s.async_timeout.unwrap_or(Duration::from_secs(60));
                        s.async_events.push(value);
                        for _ in 0..s.async_copies.max(1) {
                            let id =
                                format!("async-{}", REQUEST_IDS.fetch_add(1, Ordering::SeqCst));
                            s.queue.push_back(Queued {
                                id,
                                payload: body.clone(),
                                deadline_ms: epoch_ms() + timeout.as_millis() as u64,
                            });
                        }
                    }
                    queued.notify_waiters();
                    return reply(StatusCode::ACCEPTED, "");
                }
                if path == "/2018-06-01/runtime/init/error" {
                    state.lock().unwrap().init_error = Some(value);
                    return reply(StatusCode::ACCEPTED, "{}");
                }
                let parts: Vec<&str> = path
                    .trim_start_matches("/2018-06-01/runtime/invocation/")
                    .split('/')
                    .collect();
                if let [id, kind] = parts[..] {
                    let outcome = if kind == "response" {
                        Outcome::Response(value)
                    } else {
                        Outcome::Error(value)
                    };
                    let mut s = state.lock().unwrap();
                    s.ended.push(outcome.clone());
                    s.running = s.running.saturating_sub(1);
                    if let Some(tx) = s.waiting.remove(id) {
                        let _ = tx.send(outcome);
                    }
                    return reply(StatusCode::ACCEPTED, "{}");
                }
                reply(StatusCode::NOT_FOUND, "not found")
            }
        })
        .await;
        RuntimeApi {
            addr,
            state,
            queued,
        }
    }

    /// Invokes the function with raw bytes and a deadline `timeout` from now.
    pub async fn invoke_raw(&self, payload: impl Into<Bytes>, timeout: Duration) -> Outcome {
        self.invoke_with_deadline(
            payload,
            epoch_ms() + timeout.as_millis() as u64,
            timeout + Duration::from_secs(30),
        )
        .await
    }

    /// Invokes with an explicit deadline header value; waits at most `wait`.
    pub async fn invoke_with_deadline(
        &self,
        payload: impl Into<Bytes>,
        deadline_ms: u64,
        wait: Duration,
    ) -> Outcome {
        let id = format!("req-{}", REQUEST_IDS.fetch_add(1, Ordering::SeqCst));
        let (tx, rx) = oneshot::channel();
        {
            let mut s = self.state.lock().unwrap();
            s.waiting.insert(id.clone(), tx);
            s.queue.push_back(Queued {
                id,
                payload: payload.into(),
                deadline_ms,
            });
        }
        self.queued.notify_waiters();
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(outcome)) => outcome,
            _ => panic!("the function did not answer within {wait:?}"),
        }
    }

    /// Sets the deadline asynchronous invocations get, and how many copies
    /// of each are delivered.
    pub fn async_invocations(&self, timeout: Duration, copies: usize) {
        let mut s = self.state.lock().unwrap();
        s.async_timeout = Some(timeout);
        s.async_copies = copies;
    }

    /// Queues `event` as an asynchronous invocation with a deadline `timeout`
    /// from now, without waiting for it (a copy Lambda delivers again).
    pub fn deliver_async(&self, event: &Value, timeout: Duration) {
        let id = format!("async-{}", REQUEST_IDS.fetch_add(1, Ordering::SeqCst));
        self.state.lock().unwrap().queue.push_back(Queued {
            id,
            payload: serde_json::to_vec(event).unwrap().into(),
            deadline_ms: epoch_ms() + timeout.as_millis() as u64,
        });
        self.queued.notify_waiters();
    }

    /// The events the function sent itself through the Invoke API.
    pub fn async_events(&self) -> Vec<Value> {
        self.state.lock().unwrap().async_events.clone()
    }

    /// Every invocation's outcome so far, in the order they ended.
    pub fn ended(&self) -> Vec<Outcome> {
        self.state.lock().unwrap().ended.clone()
    }

    /// Waits (at most `wait`) until no invocation is queued or running.
    pub async fn wait_idle(&self, wait: Duration) {
        let until = std::time::Instant::now() + wait;
        loop {
            {
                let s = self.state.lock().unwrap();
                if s.queue.is_empty() && s.running == 0 {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < until,
                "invocations still queued or running after {wait:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Invokes with a JSON event.
    pub async fn invoke(&self, event: &Value, timeout: Duration) -> Outcome {
        self.invoke_raw(serde_json::to_vec(event).unwrap(), timeout)
            .await
    }
}

/// One CloudFormation response PUT, as received.
#[derive(Debug, Clone)]
pub struct Put {
    pub path: String,
    pub content_type: Option<String>,
    pub content_length: Option<usize>,
    pub body: Value,
    pub raw_len: usize,
    pub at_ms: u64,
}

/// A stand-in for the pre-signed S3 URL: records every PUT.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    puts: Arc<Mutex<Vec<Put>>>,
    fail_next: Arc<AtomicU64>,
    arrived: Arc<Notify>,
    issued: Arc<Mutex<Vec<String>>>,
    redirect: Arc<Mutex<Option<String>>>,
}

static URL_IDS: AtomicU64 = AtomicU64::new(1);

impl Receiver {
    pub async fn start() -> Receiver {
        let puts = Arc::new(Mutex::new(Vec::new()));
        let fail_next = Arc::new(AtomicU64::new(0));
        let arrived = Arc::new(Notify::new());
        let redirect = Arc::new(Mutex::new(None::<String>));
        let (p, f, a, r) = (
            puts.clone(),
            fail_next.clone(),
            arrived.clone(),
            redirect.clone(),
        );
        let addr = serve(move |req: Request<hyper::body::Incoming>| {
            let (puts, fail_next, arrived, redirect) = (p.clone(), f.clone(), a.clone(), r.clone());
            async move {
                if let Some(location) = redirect.lock().unwrap().clone() {
                    let mut r = reply(StatusCode::TEMPORARY_REDIRECT, "");
                    r.headers_mut()
                        .insert("location", location.parse().unwrap());
                    return r;
                }
                if fail_next.load(Ordering::SeqCst) > 0 {
                    fail_next.fetch_sub(1, Ordering::SeqCst);
                    return reply(StatusCode::SERVICE_UNAVAILABLE, "try again");
                }
                let (parts, body) = body_bytes(req).await;
                let header = |name: &str| {
                    parts
                        .headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                puts.lock().unwrap().push(Put {
                    path: parts.uri.path().to_string(),
                    content_type: header("content-type"),
                    content_length: header("content-length").and_then(|v| v.parse().ok()),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    raw_len: body.len(),
                    at_ms: epoch_ms(),
                });
                arrived.notify_waiters();
                reply(StatusCode::OK, "")
            }
        })
        .await;
        Receiver {
            addr,
            puts,
            fail_next,
            arrived,
            issued: Arc::new(Mutex::new(Vec::new())),
            redirect,
        }
    }

    /// A fresh ResponseURL on this receiver, signed like a pre-signed S3 URL:
    /// its query (a bearer token) must never be printed, returned or PUT.
    pub fn url(&self) -> String {
        let url = signed_url(&format!(
            "http://{}/response/{}",
            self.addr,
            URL_IDS.fetch_add(1, Ordering::SeqCst)
        ));
        self.issued.lock().unwrap().push(url.clone());
        url
    }

    /// Every URL [`Receiver::url`] handed out.
    pub fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }

    /// Answers every request with a 307 to `location` from now on.
    pub fn redirect_to(&self, location: &str) {
        *self.redirect.lock().unwrap() = Some(location.to_string());
    }

    /// Answers the next `n` PUTs with 503.
    pub fn fail_next(&self, n: u64) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// The PUTs received at `url`.
    pub fn puts_to(&self, url: &str) -> Vec<Put> {
        let path = url
            .split_once(&self.addr.to_string())
            .map(|(_, p)| p.split('?').next().unwrap_or_default().to_string())
            .unwrap_or_default();
        self.puts
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.path == path)
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<Put> {
        self.puts.lock().unwrap().clone()
    }

    /// Waits until a PUT to `url` arrives.
    pub async fn wait_for(&self, url: &str, wait: Duration) -> Put {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.arrived.notified();
            if let Some(p) = self.puts_to(url).pop() {
                return p;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("no response PUT to {url} within {wait:?}");
            }
        }
    }
}

static SIGNATURES: AtomicU64 = AtomicU64::new(1);

/// `base` with a query like a pre-signed S3 URL's (a unique signature).
pub fn signed_url(base: &str) -> String {
    let n = SIGNATURES.fetch_add(1, Ordering::SeqCst);
    let signature = format!(
        "{:016x}{:048x}",
        std::process::id(),
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    );
    format!(
        "{base}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIATESTONLY%2F20260101%2Fus-east-1%2Fs3%2Faws4_request\
         &X-Amz-Date=20260101T000000Z&X-Amz-Expires=7200&X-Amz-SignedHeaders=host&X-Amz-Signature={signature}"
    )
}

/// What of a ResponseURL is a bearer token: its whole query, and the signature alone.
pub fn url_secrets(url: &str) -> Vec<String> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    let mut out = vec![query.to_string()];
    out.extend(
        query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("X-Amz-Signature="))
            .map(str::to_string),
    );
    out
}

/// The prefix of every SCRAM verifier PostgreSQL stores (`ALTER ROLE ... PASSWORD '...'`).
pub const VERIFIER_PREFIX: &str = "SCRAM-SHA-256$";

/// A CloudFormation event for `request_type`, answered at `url`.
pub fn cfn_event(request_type: &str, url: &str, properties: Value) -> Value {
    let mut event = json!({
        "RequestType": request_type,
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:db-setup",
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/test/11111111-2222-3333-4444-555555555555",
        "RequestId": format!("cfn-{}", URL_IDS.fetch_add(1, Ordering::SeqCst)),
        "ResourceType": "Custom::DbSetup",
        "LogicalResourceId": "DbSetup",
        "ResourceProperties": properties,
    });
    if request_type != "Create" {
        event["PhysicalResourceId"] = json!("db-setup-DbSetup");
    }
    event
}

/// The function as a process, its output captured.
pub struct Function {
    child: tokio::process::Child,
    output: Arc<Mutex<String>>,
}

impl Function {
    /// Starts the `db-setup` binary against `runtime`, with `env` on top of
    /// this process's environment (moto's AWS_* variables included).
    pub async fn start(runtime: &RuntimeApi, env: &[(&str, String)]) -> Function {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_db-setup"));
        cmd.env("AWS_LAMBDA_RUNTIME_API", runtime.addr.to_string())
            // The Invoke API (a function invoking itself) is served by the same stand-in.
            .env(
                "AWS_ENDPOINT_URL_LAMBDA",
                format!("http://{}", runtime.addr),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", "db-setup")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("RUST_LOG", "info")
            // The receivers are local: allowed here, refused in production.
            .env("DB_SETUP_ALLOW_LOCAL_RESPONSE_URL", "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the db-setup binary");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut o = output.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        Function { child, output }
    }

    /// Everything it printed so far.
    pub fn logs(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Secrets Manager (moto) for the tests.
pub async fn secrets_client() -> aws_sdk_secretsmanager::Client {
    super::env("AWS_ENDPOINT_URL");
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_secretsmanager::Client::new(&config)
}

static SECRET_IDS: AtomicU64 = AtomicU64::new(1);

/// A unique secret name for a test.
pub fn secret_name(hint: &str) -> String {
    format!(
        "db-setup-test/{}/{}-{}",
        std::process::id(),
        hint,
        SECRET_IDS.fetch_add(1, Ordering::SeqCst)
    )
}

/// Creates a secret with `value`; returns its ARN.
pub async fn create_secret(
    client: &aws_sdk_secretsmanager::Client,
    name: &str,
    value: &Value,
) -> String {
    client
        .create_secret()
        .name(name)
        .secret_string(value.to_string())
        .send()
        .await
        .expect("create secret")
        .arn()
        .unwrap_or_default()
        .to_string()
}

/// The AWSCURRENT value of a secret, as JSON. The stage is named: moto 5.2.5
/// does not move its default version on UpdateSecretVersionStage (AWS does),
/// so a read without a stage would return the previous value there.
pub async fn current_value(client: &aws_sdk_secretsmanager::Client, id: &str) -> Value {
    let out = client
        .get_secret_value()
        .secret_id(id)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .expect("get secret");
    serde_json::from_str(out.secret_string().unwrap_or("null")).unwrap_or(Value::Null)
}

/// A secret's versions and their stages, sorted (to compare before and after).
pub async fn version_stages(
    client: &aws_sdk_secretsmanager::Client,
    id: &str,
) -> Vec<(String, Vec<String>)> {
    let out = client.describe_secret().secret_id(id).send().await.unwrap();
    let mut v: Vec<_> = out
        .version_ids_to_stages()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect();
    v.sort();
    v
}

/// Every password any version of these secrets ever held (for the secret scan).
pub async fn all_passwords(client: &aws_sdk_secretsmanager::Client, ids: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for id in ids {
        let Ok(versions) = client
            .list_secret_version_ids()
            .secret_id(id)
            .include_deprecated(true)
            .send()
            .await
        else {
            continue;
        };
        for v in versions.versions() {
            let Some(version) = v.version_id() else {
                continue;
            };
            if let Ok(out) = client
                .get_secret_value()
                .secret_id(id)
                .version_id(version)
                .send()
                .await
            {
                if let Some(p) = serde_json::from_str::<Value>(out.secret_string().unwrap_or(""))
                    .ok()
                    .and_then(|j| {
                        j.get("password")
                            .and_then(|p| p.as_str())
                            .map(str::to_string)
                    })
                {
                    found.push(p);
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Fails the test if any password appears in any of `texts`, or any
/// ResponseURL's query or signature (`urls`), or a SCRAM verifier.
pub fn assert_no_secret_in(passwords: &[String], urls: &[String], texts: &[(&str, String)]) {
    assert!(
        !passwords.is_empty(),
        "the scan needs the passwords it looks for"
    );
    let mut secrets: Vec<(&str, String)> = passwords
        .iter()
        .map(|p| ("a password", p.clone()))
        .collect();
    for url in urls {
        let found = url_secrets(url);
        assert!(
            !found.is_empty(),
            "a ResponseURL without a signature: {url}"
        );
        secrets.extend(
            found
                .into_iter()
                .map(|s| ("a ResponseURL's query or signature", s)),
        );
    }
    secrets.push(("a SCRAM verifier", VERIFIER_PREFIX.to_string()));
    for (kind, secret) in &secrets {
        assert!(secret.len() >= 8, "{kind} too short to scan for reliably");
        for (what, text) in texts {
            if let Some(at) = text.find(secret.as_str()) {
                // Where, without the secret itself.
                let mut from = at.saturating_sub(160);
                while !text.is_char_boundary(from) {
                    from -= 1;
                }
                panic!("{kind} appears in {what}, after: …{}", &text[from..at]);
            }
        }
    }
    record_scan(secrets.len(), texts.iter().map(|(_, t)| t.len()).sum());
}

/// Appends the scan's size to target/secret-scan.log (summed by `make test`).
fn record_scan(passwords: usize, bytes: usize) {
    use std::io::Write;
    let path = super::repo_root().join("target/secret-scan.log");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{passwords} {bytes}");
    }
}

static DEPLOYMENTS: AtomicU64 = AtomicU64::new(1);

/// One "stack": a database of its own, its admin and user secrets in moto,
/// the function process, the runtime API and a response receiver.
pub struct Deployment {
    pub db: super::TestDb,
    pub sm: aws_sdk_secretsmanager::Client,
    pub admin_secret: String,
    pub admin_arn: String,
    /// (username, secret name)
    pub users: Vec<(String, String)>,
    pub role_prefix: String,
    pub runtime: RuntimeApi,
    pub receiver: Receiver,
    pub function: Function,
    env: Vec<(&'static str, String)>,
    extra: Mutex<Vec<Function>>,
    outcomes: Mutex<Vec<String>>,
}

/// How to set a deployment up.
pub struct StackSpec<'a> {
    pub hint: &'a str,
    /// (username suffix, role template)
    pub users: &'a [(&'a str, &'a str)],
    pub env: Vec<(&'static str, String)>,
    /// The admin secret's JSON; `None` for the test server's superuser.
    pub admin: Option<Value>,
}

impl<'a> StackSpec<'a> {
    pub fn new(hint: &'a str) -> Self {
        StackSpec {
            hint,
            users: &[],
            env: Vec::new(),
            admin: None,
        }
    }
}

impl Deployment {
    pub async fn new(setup: StackSpec<'_>) -> Deployment {
        let n = DEPLOYMENTS.fetch_add(1, Ordering::SeqCst);
        let db = super::TestDb::new(setup.hint).await;
        let sm = secrets_client().await;
        let admin_secret = secret_name(&format!("{}-admin", setup.hint));
        let admin_value = setup.admin.clone().unwrap_or_else(|| {
            json!({
                "engine": "postgres",
                "host": super::env("DB_SETUP_TEST_PG_HOST"),
                "port": super::env("DB_SETUP_TEST_PG_PORT").parse::<u16>().unwrap(),
                "dbname": db.name,
                "username": super::env("DB_SETUP_TEST_PG_USER"),
                "password": super::env("DB_SETUP_TEST_PG_PASSWORD"),
            })
        });
        let admin_arn = create_secret(&sm, &admin_secret, &admin_value).await;
        let role_prefix = format!("g{}_{}", std::process::id(), n);
        let mut users = Vec::new();
        let mut spec = Vec::new();
        for (suffix, role) in setup.users {
            let username = format!("{}_{suffix}", role_prefix);
            let secret = secret_name(&format!("{}-{suffix}", setup.hint));
            // What the CDK stack creates: a generated value the database does not know.
            create_secret(
                &sm,
                &secret,
                &json!({"username": username, "password": format!("placeholder-{secret}")}),
            )
            .await;
            spec.push(json!({"username": username, "role": role, "secretId": secret}));
            users.push((username, secret));
        }
        let runtime = RuntimeApi::start().await;
        let mut env = vec![
            ("DB_SETUP_ADMIN_SECRET_ID", admin_secret.clone()),
            ("DB_SETUP_TLS", "disable".to_string()),
            ("DB_SETUP_USERS", Value::Array(spec).to_string()),
            ("DB_SETUP_ROLE_PREFIX", role_prefix.clone()),
        ];
        for (k, v) in setup.env {
            env.retain(|(key, _)| *key != k);
            env.push((k, v));
        }
        let function = Function::start(&runtime, &env).await;
        Deployment {
            env,
            extra: Mutex::new(Vec::new()),
            db,
            sm,
            admin_secret,
            admin_arn,
            users,
            role_prefix,
            runtime,
            receiver: Receiver::start().await,
            function,
            outcomes: Mutex::new(Vec::new()),
        }
    }

    /// Another function process (its own runtime API) with the same
    /// configuration: another Lambda instance of the same stack.
    pub async fn another_instance(&self) -> RuntimeApi {
        let runtime = RuntimeApi::start().await;
        let function = Function::start(&runtime, &self.env).await;
        // Owned by the deployment: killed when it is dropped.
        self.extra.lock().unwrap().push(function);
        runtime
    }

    /// One more function process on this deployment's runtime: two Lambda
    /// instances taking invocations from the same queue, concurrently.
    pub async fn add_process(&self) {
        let function = Function::start(&self.runtime, &self.env).await;
        self.extra.lock().unwrap().push(function);
    }

    /// Everything every process of this deployment printed so far.
    pub fn all_logs(&self) -> String {
        let mut logs = self.function.logs();
        for f in self.extra.lock().unwrap().iter() {
            logs.push_str(&f.logs());
        }
        logs
    }

    /// Sends a CloudFormation request through `runtime` and waits for its PUT.
    pub async fn request_via(
        &self,
        runtime: &RuntimeApi,
        request_type: &str,
        properties: Value,
    ) -> (Outcome, Put) {
        let url = self.receiver.url();
        let event = cfn_event(request_type, &url, properties);
        let outcome = runtime.invoke(&event, Duration::from_secs(120)).await;
        self.record(&outcome);
        let put = self.receiver.wait_for(&url, Duration::from_secs(5)).await;
        (outcome, put)
    }

    fn record(&self, outcome: &Outcome) {
        self.outcomes.lock().unwrap().push(outcome.text());
    }

    /// Sends a CloudFormation request (direct mode): the invocation's outcome
    /// and the PUT the receiver got.
    pub async fn request(&self, request_type: &str, properties: Value) -> (Outcome, Put) {
        self.request_event(cfn_event(request_type, "", properties))
            .await
    }

    /// Sends `event` with a fresh ResponseURL and waits for its PUT.
    pub async fn request_event(&self, mut event: Value) -> (Outcome, Put) {
        let url = self.receiver.url();
        event["ResponseURL"] = json!(url);
        let outcome = self.runtime.invoke(&event, Duration::from_secs(90)).await;
        self.record(&outcome);
        let put = self.receiver.wait_for(&url, Duration::from_secs(5)).await;
        (outcome, put)
    }

    /// Invokes with any event (provider mode, manual actions).
    pub async fn invoke(&self, event: &Value) -> Outcome {
        let outcome = self.runtime.invoke(event, Duration::from_secs(90)).await;
        self.record(&outcome);
        outcome
    }

    /// The current JSON of a user's secret.
    pub async fn user_secret(&self, index: usize) -> Value {
        current_value(&self.sm, &self.users[index].1).await
    }

    /// True when `user` logs in with `password`.
    pub async fn logs_in(&self, user: &str, password: &str) -> bool {
        let target = db_setup::db::Target {
            user: user.into(),
            password: db_setup::redacted::SecretString::new(password),
            ..self.db.target()
        };
        let options = db_setup::db::ConnectOptions {
            attempts: 1,
            ..Default::default()
        };
        db_setup::db::connect(&target, &super::plain(), &options)
            .await
            .is_ok()
    }

    /// The secret scan: no password of any version of this deployment's
    /// secrets in what the function printed, returned or PUT.
    pub async fn scan(&self) {
        let mut ids = vec![self.admin_secret.clone()];
        ids.extend(self.users.iter().map(|(_, s)| s.clone()));
        let passwords = all_passwords(&self.sm, &ids).await;
        let puts: String = self
            .receiver
            .all()
            .iter()
            .map(|p| p.body.to_string())
            .collect();
        let mut outcomes = self.outcomes.lock().unwrap().join("\n");
        for o in self.runtime.ended() {
            outcomes.push('\n');
            outcomes.push_str(&o.text());
        }
        assert_no_secret_in(
            &passwords,
            &self.receiver.issued(),
            &[
                ("the function's logs", self.all_logs()),
                ("invocation results", outcomes),
                ("response PUTs", puts),
            ],
        );
    }
}
