//! Orchestration of one invocation: parse, run the work under a deadline
//! and a panic guard, answer in the configured mode. The stack is never left
//! waiting: whatever happens, FAILED goes out before the Lambda's deadline.
//!
//! The handler is generic over [`Work`] (the work), so its lifecycle rules
//! are tested with a work that hangs or panics, and in production it runs
//! [`crate::work::LiveWork`].

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::Diagnostic;
use serde_json::{Value, json};
use tracing::{error, info, warn};

use crate::config::ResponseMode;
use crate::continuation::{self, Chain, ChainError};
use crate::db::Canceller;
use crate::error::SetupError;
use crate::event::{self, Action, CfnRequest, EventError, ReplyTo, Request, RequestType};
use crate::invoke::Invoker;
use crate::metrics;
use crate::respond::{self, Data, Responder, Status};

/// What a deploy (Create or Update) did.
#[derive(Debug, Clone, PartialEq)]
pub enum Deployed {
    /// Finished: CloudFormation gets SUCCESS with this `Data`.
    Done(Data),
    /// This invocation's time for new work is over and the chain's turn was
    /// handed over: the next invocation goes on (see [`crate::continuation`]).
    Continue {
        /// Migrations this invocation applied.
        applied: Vec<String>,
        /// Migrations left for the next invocations.
        left: usize,
        /// Migrations the history held before the deploy.
        before: usize,
    },
    /// A copy of an event whose work another invocation does or did: no
    /// answer is sent; the text says why.
    Skipped(String),
}

/// The work the handler runs.
pub trait Work: Send + Sync + 'static {
    /// Create or Update: migrations, then users. `chain` says where this
    /// invocation stands in a chain of invocations and when to stop starting
    /// new work.
    fn deploy(
        &self,
        request: CfnRequest,
        chain: Chain,
        progress: Progress,
    ) -> impl Future<Output = Result<Deployed, SetupError>> + Send;
    /// A manual action. Returns its report.
    fn action(
        &self,
        action: Action,
        progress: Progress,
    ) -> impl Future<Output = Result<Value, SetupError>> + Send;
}

#[derive(Default)]
struct ProgressState {
    step: String,
    started: Option<Instant>,
    canceller: Option<Canceller>,
    counts: Counts,
    deadline: Option<Instant>,
}

/// What the work counted, for the deploy metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Migrations applied.
    pub migrations_applied: u64,
    /// Time waited for the migration lock, in milliseconds.
    pub lock_wait_ms: u64,
    /// Users whose password was rotated.
    pub users_rotated: u64,
}

/// What the work is doing now: logged one line per step with its duration,
/// named in a timeout's Reason, and able to cancel the running query.
#[derive(Clone, Default)]
pub struct Progress(Arc<Mutex<ProgressState>>);

impl Progress {
    fn state(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a step (and logs the end of the previous one with its duration).
    pub fn step(&self, step: impl Into<String>) {
        let step = step.into();
        let mut s = self.state();
        if let Some(started) = s.started {
            info!(step = %s.step, duration_ms = started.elapsed().as_millis() as u64, "step done");
        }
        info!(step = %step, "step started");
        s.step = step;
        s.started = Some(Instant::now());
    }

    /// Ends the last step.
    pub fn finish(&self) {
        let mut s = self.state();
        if let Some(started) = s.started.take() {
            info!(step = %s.step, duration_ms = started.elapsed().as_millis() as u64, "step done");
        }
    }

    /// Records what the work counted (read for the deploy metrics).
    pub fn count(&self, update: impl FnOnce(&mut Counts)) {
        update(&mut self.state().counts);
    }

    /// What the work counted so far.
    pub fn counts(&self) -> Counts {
        self.state().counts
    }

    /// The current step.
    pub fn current(&self) -> String {
        let s = self.state();
        if s.step.is_empty() {
            "starting".into()
        } else {
            s.step.clone()
        }
    }

    /// Sets when the deadline guard stops the work (the handler does, from
    /// the invocation's budget).
    pub fn set_deadline(&self, at: Instant) {
        self.state().deadline = Some(at);
    }

    /// When the deadline guard stops the work, if the handler said: work
    /// that waits (a snapshot) ends its wait before it.
    pub fn deadline(&self) -> Option<Instant> {
        self.state().deadline
    }

    /// Registers the connection whose query a timeout must cancel.
    pub fn watch(&self, canceller: Canceller) {
        self.state().canceller = Some(canceller);
    }

    /// Stops the work and what it runs on the server: the work's task is
    /// stopped first (its connection closes, so the backend ends at its next
    /// message to this process, or, on PostgreSQL 14+, at its next
    /// `client_connection_check_interval`), then the running statement is
    /// cancelled, and cancelled again in the background for
    /// [`CANCEL_REPEAT`]: a cancel that reached the backend between two
    /// queued statements cancelled nothing.
    async fn stop<T>(&self, task: &mut tokio::task::JoinHandle<T>) {
        task.abort();
        // Wait until the task is gone, and with it the connection it held
        // (bounded: a task stops at its next await).
        if tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .is_err()
        {
            warn!("the stopped work did not end within 1s");
        }
        let canceller = self.state().canceller.clone();
        if let Some(c) = canceller {
            if tokio::time::timeout(Duration::from_secs(2), c.cancel())
                .await
                .is_err()
            {
                warn!("the cancel request timed out");
            }
            tokio::spawn(async move {
                c.keep_cancelling(CANCEL_REPEAT, CANCEL_EVERY).await;
            });
        }
    }
}

/// How long cancel requests are repeated after the deadline stopped the work.
const CANCEL_REPEAT: Duration = Duration::from_secs(2);
/// The pause between two of them.
const CANCEL_EVERY: Duration = Duration::from_millis(200);

/// How long the work may take, and until when the response may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// For the work.
    pub work: Duration,
    /// For the work and the response together.
    pub total: Duration,
    /// False when the invocation's deadline was unknown or absurd.
    pub deadline_known: bool,
}

/// The longest a Lambda invocation can last, plus slack.
const MAX_INVOCATION: Duration = Duration::from_secs(16 * 60);

/// Splits the time to the invocation's deadline into work and response.
/// A deadline in the past or beyond Lambda's 15 minutes (the local emulator
/// sends such values) is treated as unknown: `fallback` is used then.
pub fn budget(deadline_ms: u64, now_ms: u64, margin: Duration, fallback: Duration) -> Budget {
    let remaining = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
    if deadline_ms <= now_ms || remaining > MAX_INVOCATION {
        return Budget {
            work: fallback,
            total: fallback + margin,
            deadline_known: false,
        };
    }
    let total = remaining.saturating_sub(Duration::from_millis(200));
    let work = if remaining > margin * 2 {
        remaining - margin
    } else {
        remaining / 2
    };
    Budget {
        work,
        total,
        deadline_known: true,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Logs a failure with what PostgreSQL said in full: its DETAIL can hold row
/// values, so it goes to the log only, never into a Reason or error.
fn log_failure(e: &SetupError, message: &str) {
    match e.server_detail() {
        Some(detail) => error!(error = %e, detail, "{message}"),
        None => error!(error = %e, "{message}"),
    }
}

/// True when two Lambda function ARNs name the same function (a version or
/// alias qualifier aside).
fn same_function(a: &str, b: &str) -> bool {
    let unqualified = |arn: &str| {
        let parts: Vec<&str> = arn.split(':').collect();
        (parts.len() >= 7 && parts[0] == "arn" && parts[2] == "lambda" && parts[5] == "function")
            .then(|| parts[..7].join(":"))
    };
    matches!((unqualified(a), unqualified(b)), (Some(x), Some(y)) if x == y)
}

/// Continuing across invocations: how to invoke the function, and how much
/// of an invocation's time to keep for the unit of work running when new
/// work stops being started.
struct Continuing {
    invoker: Arc<dyn Invoker>,
    reserve: Option<Duration>,
    /// `AWS_LAMBDA_FUNCTION_NAME`, for an invoked ARN that is none.
    own_name: Option<String>,
}

/// The answer to the Provider framework when its `isComplete` handler is this
/// function too: `onEvent` (sequence 0) returns the physical id, the `Data`
/// when done, and the marker the framework passes on to every `isComplete`
/// call (its `Done` set when nothing is left); `isComplete` returns
/// `IsComplete`, with the `Data` once done (never before: the framework
/// refuses `Data` with `IsComplete: false`).
fn provider_answer(reply: &ReplyTo, chain: &Chain, done: Option<&Data>, before: usize) -> Value {
    if chain.sequence == 0 {
        let marker = continuation::Marker {
            done: done.is_some(),
            ..chain.next(before)
        };
        let mut answer = json!({
            "PhysicalResourceId": reply.physical_id(),
            continuation::MARKER_FIELD: marker,
        });
        if let Some(data) = done {
            answer["Data"] = json!(data);
        }
        answer
    } else {
        match done {
            Some(data) => json!({ "IsComplete": true, "Data": data }),
            None => json!({ "IsComplete": false }),
        }
    }
}

/// One invocation's circumstances.
struct Invocation<'a> {
    mode: ResponseMode,
    budget: Budget,
    respond_until: Instant,
    /// The event as received (copied into a continuation).
    raw: &'a str,
    /// The ARN the function was invoked as, when known.
    function_arn: Option<&'a str>,
}

/// Answers invocations.
pub struct Handler<S: Work> {
    setup: Arc<S>,
    mode: ResponseMode,
    responder: Responder,
    margin: Duration,
    fallback: Duration,
    metrics_namespace: String,
    continuing: Option<Continuing>,
}

impl<S: Work> Handler<S> {
    /// A handler over `setup`.
    pub fn new(
        setup: S,
        mode: ResponseMode,
        responder: Responder,
        margin: Duration,
        fallback: Duration,
    ) -> Self {
        Handler {
            setup: Arc::new(setup),
            mode,
            responder,
            margin,
            fallback,
            metrics_namespace: crate::defaults::METRICS_NAMESPACE.to_string(),
            continuing: None,
        }
    }

    /// Lets a direct-mode deploy continue in new invocations of the function
    /// through `invoker`: no unit of work starts later than `reserve` (by
    /// default a third of the invocation's time for work) before the
    /// invocation's deadline. `own_name` is the function's name
    /// (`AWS_LAMBDA_FUNCTION_NAME`), used when the invoked ARN is none.
    pub fn with_continuation(
        mut self,
        invoker: impl Invoker,
        reserve: Option<Duration>,
        own_name: Option<String>,
    ) -> Self {
        self.continuing = Some(Continuing {
            invoker: Arc::new(invoker),
            reserve,
            own_name,
        });
        self
    }

    /// Sets the CloudWatch namespace of the deploy metrics.
    pub fn with_metrics_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.metrics_namespace = namespace.into();
        self
    }

    /// Handles one parsed invocation. `deadline_ms` is the invocation's
    /// deadline (milliseconds since the epoch) as the runtime gives it.
    /// Without the function's ARN, an event is answered in the configured
    /// mode (see [`Handler::handle_raw`]).
    pub async fn handle(&self, payload: Value, deadline_ms: u64) -> Result<Value, Diagnostic> {
        let raw = payload.to_string();
        self.answer(event::parse(&payload), &raw, deadline_ms, None)
            .await
    }

    /// Handles one invocation as the runtime delivers it: the payload's JSON
    /// text (read by [`event::parse_raw`], so that no nesting keeps an event
    /// with a ResponseURL from its answer), the deadline, and the ARN the
    /// function was invoked as (an event whose ServiceToken is this function
    /// comes straight from CloudFormation: it is answered by PUT even in
    /// provider mode).
    pub async fn handle_raw(
        &self,
        payload: &str,
        deadline_ms: u64,
        function_arn: &str,
    ) -> Result<Value, Diagnostic> {
        self.answer(
            event::parse_raw(payload),
            payload,
            deadline_ms,
            Some(function_arn),
        )
        .await
    }

    /// How to answer this event: by PUT when the function is configured so,
    /// or when CloudFormation invoked the function itself for this resource
    /// (created in direct mode, then the function was switched to provider
    /// mode); else by the invocation's result, for the Provider framework.
    fn mode_for(&self, reply: &ReplyTo, function_arn: Option<&str>) -> ResponseMode {
        match (self.mode, function_arn, reply.service_token.as_deref()) {
            (ResponseMode::Provider, Some(own), Some(token))
                if reply.response_url.is_some() && same_function(own, token) =>
            {
                warn!(
                    "this resource's ServiceToken is this function itself (it was created in direct mode): \
                     answering CloudFormation at its ResponseURL although DB_SETUP_RESPONSE_MODE=provider"
                );
                ResponseMode::Direct
            }
            (mode, _, _) => mode,
        }
    }

    async fn answer(
        &self,
        parsed: Result<Request, event::EventError>,
        raw: &str,
        deadline_ms: u64,
        function_arn: Option<&str>,
    ) -> Result<Value, Diagnostic> {
        let started = Instant::now();
        let budget = budget(deadline_ms, now_ms(), self.margin, self.fallback);
        if !budget.deadline_known {
            info!(
                budget_s = budget.work.as_secs(),
                "invocation deadline unknown: using DB_SETUP_TIME_BUDGET"
            );
        }
        let respond_until = started + budget.total;
        match parsed {
            Ok(Request::CloudFormation(request)) => {
                let mode = self.mode_for(&request.reply, function_arn);
                let invocation = Invocation {
                    mode,
                    budget,
                    respond_until,
                    raw,
                    function_arn,
                };
                self.custom_resource(*request, invocation).await
            }
            Ok(Request::Action(action)) => {
                info!(action = ?action, "manual action");
                let setup = self.setup.clone();
                self.guarded(budget.work, Progress::default(), move |p| async move {
                    setup.action(action, p).await
                })
                .await
                .map_err(|e| {
                    log_failure(&e, "action failed");
                    Diagnostic::from(&e)
                })
            }
            Err(e) => {
                error!(error = %e, "invalid event");
                match e.reply.as_deref() {
                    Some(reply)
                        if reply.response_url.is_some()
                            && self.mode_for(reply, function_arn) == ResponseMode::Direct =>
                    {
                        self.deliver(
                            reply,
                            Status::Failed,
                            Some(&e.to_string()),
                            None,
                            respond_until,
                        )
                        .await
                    }
                    _ => Err(Diagnostic::from(&e)),
                }
            }
        }
    }

    /// Where this invocation stands in a chain, and the time its work gets:
    /// the invocation's budget, cut to the operation's deadline.
    fn chain_for(
        &self,
        request: &CfnRequest,
        mode: ResponseMode,
        budget: Budget,
        now_ms: u64,
    ) -> (Chain, Duration) {
        let (sequence, deadline_ms, before) = match request.continuation {
            Some(m) => (m.sequence, m.deadline_ms, Some(m.before)),
            None => (
                0,
                continuation::operation_deadline(now_ms, request.properties.service_timeout),
                None,
            ),
        };
        let to_deadline =
            Duration::from_millis(deadline_ms.saturating_sub(now_ms)).saturating_sub(self.margin);
        let work = budget.work.min(to_deadline);
        let yield_at = self.continuing.as_ref().map(|c| {
            let now = Instant::now();
            continuation::yield_at(now + work, now + to_deadline, c.reserve.unwrap_or(work / 3))
        });
        (
            Chain {
                sequence,
                deadline_ms,
                before,
                record: mode == ResponseMode::Direct && self.continuing.is_some(),
                yield_at,
            },
            work,
        )
    }

    /// Starts the chain's next invocation, or says why it cannot go on.
    async fn continue_chain(
        &self,
        chain: Chain,
        invocation: &Invocation<'_>,
        applied: Vec<String>,
        left: usize,
        before: usize,
    ) -> Result<Value, SetupError> {
        let next = chain.next(before);
        let remaining = Duration::from_millis(chain.deadline_ms.saturating_sub(now_ms()));
        let reserve = self
            .continuing
            .as_ref()
            .and_then(|c| c.reserve)
            .unwrap_or(Duration::ZERO);
        if remaining <= self.margin * 2 + reserve {
            return Err(ChainError::OutOfTime {
                invocations: chain.sequence + 1,
                left,
                remaining_s: remaining.as_secs(),
            }
            .into());
        }
        let invoke_failed = |message: String| ChainError::Invoke {
            sequence: next.sequence,
            message,
            applied: if applied.is_empty() {
                "none in this invocation".into()
            } else {
                applied.join(", ")
            },
        };
        let (Some(continuing), Some(function)) = (&self.continuing, invocation.function_arn) else {
            return Err(invoke_failed("the function's ARN is unknown".into()).into());
        };
        let payload = continuation::next_payload(invocation.raw, next)
            .map_err(|e| invoke_failed(format!("the event could not be copied: {e}")))?;
        let name = crate::invoke::function_name(function, continuing.own_name.as_deref());
        continuing
            .invoker
            .invoke_async(&name, payload)
            .await
            .map_err(|e| invoke_failed(format!("function {name}: {e}")))?;
        info!(
            next = next.sequence,
            applied = applied.len(),
            left,
            "continuing in a new invocation: it answers CloudFormation when the work is done"
        );
        Ok(json!({
            "Continued": next.sequence,
            "Applied": applied,
            "Left": left,
        }))
    }

    async fn custom_resource(
        &self,
        request: CfnRequest,
        invocation: Invocation<'_>,
    ) -> Result<Value, Diagnostic> {
        let Invocation {
            mode,
            budget,
            respond_until,
            ..
        } = invocation;
        let reply = request.reply.clone();
        info!(
            request_type = ?request.request_type,
            logical_resource_id = %reply.logical_resource_id,
            request_id = %reply.request_id,
            "custom resource request"
        );
        if mode == ResponseMode::Direct {
            let Some(url) = reply.response_url.as_deref() else {
                let message = "ResponseURL is missing: in direct mode the function answers CloudFormation at that URL \
                               (set DB_SETUP_RESPONSE_MODE=provider when the CDK Provider framework calls it)";
                error!(message);
                return Err(Diagnostic::from(&EventError::one(message)));
            };
            // Checked before the work: a URL that will not be answered must not
            // get a deploy run for it.
            if let Err(e) = self.responder.check(url) {
                error!(error = %e, "ResponseURL refused: this request cannot be answered");
                return Err(Diagnostic::from(&e));
            }
        }
        let started = Instant::now();
        let progress = Progress::default();
        let request_type = request.request_type;
        let (chain, work) = self.chain_for(&request, mode, budget, now_ms());
        progress.set_deadline(started + work);
        if mode == ResponseMode::Provider && request.continuation.is_some_and(|m| m.done) {
            info!("isComplete: the onEvent call finished the work");
            return Ok(json!({ "IsComplete": true }));
        }
        let deployed = match request.request_type {
            // Forward-only: nothing is dropped, nothing to wait for.
            RequestType::Delete => {
                info!("Delete: forward-only, data, roles and secrets are kept");
                Ok(Deployed::Done(Data::message(
                    "Delete: forward-only, nothing was dropped",
                )))
            }
            RequestType::Create | RequestType::Update
                if chain.sequence > 0 && chain.deadline_ms <= now_ms() =>
            {
                Err(ChainError::Expired {
                    sequence: chain.sequence,
                }
                .into())
            }
            RequestType::Create | RequestType::Update => {
                if chain.sequence > 0 {
                    info!(
                        sequence = chain.sequence,
                        "continuing this deploy's chain of invocations"
                    );
                }
                let setup = self.setup.clone();
                self.guarded(work, progress.clone(), move |p| async move {
                    setup.deploy(request, chain, p).await
                })
                .await
            }
        };
        let result = match deployed {
            Ok(Deployed::Done(data)) => Ok(data),
            Ok(Deployed::Skipped(why)) => {
                info!(reason = %why, "nothing to do: no answer is sent by this invocation");
                return Ok(json!({ "Skipped": why }));
            }
            Ok(Deployed::Continue {
                applied,
                left,
                before,
            }) if mode == ResponseMode::Provider => {
                info!(
                    applied = applied.len(),
                    left,
                    "this call's time for new work is over: the Provider framework's next isComplete call goes on"
                );
                return Ok(provider_answer(&reply, &chain, None, before));
            }
            Ok(Deployed::Continue {
                applied,
                left,
                before,
            }) => {
                match self
                    .continue_chain(chain, &invocation, applied, left, before)
                    .await
                {
                    Ok(value) => return Ok(value),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        self.emit_metrics(&reply, request_type, &progress, started, &result);
        match mode {
            ResponseMode::Direct => match result {
                Ok(data) => {
                    self.deliver(&reply, Status::Success, None, Some(&data), respond_until)
                        .await
                }
                Err(e) => {
                    log_failure(&e, "request failed");
                    self.deliver(
                        &reply,
                        Status::Failed,
                        Some(&e.reason()),
                        None,
                        respond_until,
                    )
                    .await
                }
            },
            ResponseMode::Provider => match result {
                Ok(data) if self.continuing.is_some() => Ok(provider_answer(
                    &reply,
                    &chain,
                    Some(&data),
                    chain.before.unwrap_or(0),
                )),
                Ok(data) => Ok(json!({ "PhysicalResourceId": reply.physical_id(), "Data": data })),
                Err(e) => {
                    log_failure(&e, "request failed");
                    Err(Diagnostic::from(&e))
                }
            },
        }
    }

    /// Emits the request's EMF record (see [`crate::metrics`]).
    fn emit_metrics<T>(
        &self,
        reply: &ReplyTo,
        request_type: RequestType,
        progress: &Progress,
        started: Instant,
        result: &Result<T, SetupError>,
    ) {
        let counts = progress.counts();
        let request_type = match request_type {
            RequestType::Create => "Create",
            RequestType::Update => "Update",
            RequestType::Delete => "Delete",
        };
        metrics::emit(
            &self.metrics_namespace,
            &metrics::DeployMetrics {
                stack: metrics::stack_name(&reply.stack_id).to_string(),
                request_type: request_type.to_string(),
                migrations_applied: counts.migrations_applied,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                lock_wait_ms: counts.lock_wait_ms,
                users_rotated: counts.users_rotated,
                failures: u64::from(result.is_err()),
                error_type: result.as_ref().err().map(|e| e.kind().to_string()),
            },
        );
    }

    /// PUTs the response. Delivered: the invocation succeeds (no Lambda
    /// retry). Not delivered: it fails, so Lambda retries the (idempotent) event.
    async fn deliver(
        &self,
        reply: &ReplyTo,
        status: Status,
        reason: Option<&str>,
        data: Option<&Data>,
        until: Instant,
    ) -> Result<Value, Diagnostic> {
        let body = respond::body(status, reason, reply, data);
        let Some(url) = reply.response_url.as_deref() else {
            return Err(Diagnostic::from(&EventError::one("no usable ResponseURL")));
        };
        match self.responder.put(url, &body, until).await {
            Ok(()) => Ok(serde_json::from_str(&body).unwrap_or(Value::Null)),
            Err(e) => {
                // The error names the URL without its query (a bearer token).
                error!(error = %e, "response not delivered");
                Err(Diagnostic::from(&e))
            }
        }
    }

    /// Runs the work in its own task: a panic becomes [`SetupError::Panic`],
    /// running past `limit` stops the task, cancels what it ran on the server
    /// (see [`Progress::stop`]) and becomes [`SetupError::Timeout`].
    async fn guarded<T, F, Fut>(
        &self,
        limit: Duration,
        progress: Progress,
        work: F,
    ) -> Result<T, SetupError>
    where
        T: Send + 'static,
        F: FnOnce(Progress) -> Fut,
        Fut: Future<Output = Result<T, SetupError>> + Send + 'static,
    {
        let mut task = tokio::spawn(work(progress.clone()));
        let result = tokio::select! {
            joined = &mut task => match joined {
                Ok(result) => result,
                Err(e) if e.is_panic() => {
                    error!(step = %progress.current(), "the work panicked");
                    Err(SetupError::Panic { step: progress.current() })
                }
                Err(_) => Err(SetupError::Panic { step: progress.current() }),
            },
            () = tokio::time::sleep(limit) => {
                let step = progress.current();
                error!(step = %step, budget_s = limit.as_secs(), "time budget exhausted: stopping the work");
                progress.stop(&mut task).await;
                Err(SetupError::Timeout { budget: limit, step })
            }
        };
        progress.finish();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARGIN: Duration = Duration::from_secs(10);
    const FALLBACK: Duration = Duration::from_secs(300);

    #[test]
    fn same_function_ignores_the_qualifier_only() {
        let f = "arn:aws:lambda:us-east-1:123456789012:function:db-setup";
        assert!(same_function(f, f));
        assert!(same_function(&format!("{f}:$LATEST"), f));
        assert!(same_function(f, &format!("{f}:live")));
        for other in [
            "arn:aws:lambda:us-east-1:123456789012:function:db-setup-ProviderframeworkonEvent",
            "arn:aws:lambda:us-east-1:210987654321:function:db-setup",
            "arn:aws:lambda:eu-west-1:123456789012:function:db-setup",
            "arn:aws:sns:us-east-1:123456789012:db-setup",
            "db-setup",
            "",
        ] {
            assert!(!same_function(f, other), "{other}");
        }
        assert!(!same_function("x", "x"), "not ARNs");
    }

    #[test]
    fn budget_keeps_the_margin_before_a_real_deadline() {
        let b = budget(1_000_000 + 60_000, 1_000_000, MARGIN, FALLBACK);
        assert!(b.deadline_known);
        assert_eq!(b.work, Duration::from_secs(50));
        assert_eq!(b.total, Duration::from_millis(59_800));
    }

    #[test]
    fn a_short_deadline_is_split_in_half() {
        let b = budget(1_000_000 + 8_000, 1_000_000, MARGIN, FALLBACK);
        assert_eq!(b.work, Duration::from_secs(4));
    }

    #[test]
    fn past_or_absurd_deadlines_fall_back_to_the_budget() {
        for deadline in [0, 999_999, 1_000_000, 1_000_000 + 17 * 60 * 1000] {
            let b = budget(deadline, 1_000_000, MARGIN, FALLBACK);
            assert!(!b.deadline_known, "{deadline}");
            assert_eq!(b.work, FALLBACK);
        }
    }
}
