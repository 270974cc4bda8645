//! What was asked: a CloudFormation custom-resource request or a manual
//! troubleshooting action. Parsing is tolerant of what CloudFormation does
//! (every property value a string, unknown properties) and strict about what
//! matters, naming each missing or malformed field. When the event is broken
//! but carries a usable ResponseURL, the identifiers found are kept so that
//! FAILED can still be sent.

use std::fmt;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::continuation::{MARKER_FIELD, Marker};
use crate::duration::parse_duration;
use crate::fleet::DatabaseTarget;
use crate::insight::{InsightOptions, MAX_TOP};
use crate::migrate::TransactionMode;
use crate::migrate::options::Phase;
use crate::snapshot::{self, SnapshotSource};

/// The longest identifier copied from a request into a response.
pub const MAX_ID_LEN: usize = 1024;
/// The longest property value accepted.
pub const MAX_PROPERTY_LEN: usize = 4096;
/// The longest ResponseURL accepted (pre-signed S3 URLs are ~1-2 KB).
pub const MAX_URL_LEN: usize = 16 * 1024;

/// A CloudFormation request type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RequestType {
    /// The resource is created.
    Create,
    /// Its properties changed (or a rollback restores the old ones).
    Update,
    /// It is deleted (or a failed Create is cleaned up).
    Delete,
}

/// The custom resource's properties (all optional; values arrive as strings).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    /// Hash of the migrations the template was built with.
    pub migrations_hash: Option<String>,
    /// Overrides the configured transaction mode.
    pub transaction_mode: Option<TransactionMode>,
    /// Migrate only up to this migration.
    pub target_migration: Option<String>,
    /// False skips the users step.
    pub manage_users: bool,
    /// The deploy phase this resource runs (`Phase`: `expand` or `contract`);
    /// absent runs every pending migration.
    pub phase: Option<Phase>,
    /// `ServiceTimeout` (seconds): how long CloudFormation waits for the
    /// answer; it bounds a chain of invocations (see [`crate::continuation`]).
    pub service_timeout: Option<std::time::Duration>,
    /// Snapshot this DB instance (`SnapshotDbInstance`) or Aurora cluster
    /// (`SnapshotDbCluster`) before migrating, when migrations are pending.
    pub snapshot: Option<SnapshotSource>,
}

/// Where and how to answer CloudFormation: whatever identifiers the event has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplyTo {
    /// The pre-signed URL, when usable.
    pub response_url: Option<String>,
    /// `StackId`.
    pub stack_id: String,
    /// `RequestId`.
    pub request_id: String,
    /// `LogicalResourceId`.
    pub logical_resource_id: String,
    /// `PhysicalResourceId`, on Update and Delete.
    pub physical_resource_id: Option<String>,
    /// `ServiceToken`: whom CloudFormation invoked for this resource (the
    /// function itself in direct mode, the Provider framework otherwise).
    pub service_token: Option<String>,
}

impl ReplyTo {
    /// The id to answer with: the one CloudFormation sent (Update, Delete),
    /// else one derived from the logical id, so it is stable across retries.
    pub fn physical_id(&self) -> String {
        match &self.physical_resource_id {
            Some(id) => id.clone(),
            None if self.logical_resource_id.is_empty() => "db-setup".into(),
            None => format!("db-setup-{}", self.logical_resource_id),
        }
    }
}

/// A CloudFormation custom-resource request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CfnRequest {
    /// Create, Update or Delete.
    pub request_type: RequestType,
    /// Where to answer.
    pub reply: ReplyTo,
    /// `ResourceProperties`.
    pub properties: Properties,
    /// `OldResourceProperties` (Update only).
    pub old_properties: Option<Properties>,
    /// The continuation marker: this invocation continues a chain.
    pub continuation: Option<Marker>,
}

/// A manual troubleshooting action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    /// History, pending, drift, lock holder.
    Status,
    /// What a migrate would run.
    Plan {
        /// Up to this migration.
        to: Option<String>,
        /// Transaction mode.
        mode: Option<TransactionMode>,
        /// The deploy phase (`expand` stops before the first pending contract migration).
        phase: Option<Phase>,
    },
    /// Run the migrations (not the users).
    Migrate {
        /// Up to this migration.
        to: Option<String>,
        /// Transaction mode.
        mode: Option<TransactionMode>,
        /// Another database than the configured one (a fleet's member): its
        /// admin secret and endpoint come from the input.
        #[serde(skip_serializing_if = "Option::is_none")]
        database: Option<DatabaseTarget>,
        /// The deploy phase (`expand` stops before the first pending contract migration).
        phase: Option<Phase>,
    },
    /// Check the schema against the declared expectations.
    Verify,
    /// Maintenance findings (read-only): sizes, unused and invalid indexes,
    /// vacuum, pgvector parameters, sequences, sessions, connections.
    Insight(InsightOptions),
    /// Whether each user's secret logs in; with `ensure`, run the users step.
    Users {
        /// Run the users step (roles, then credentials) instead of only reporting.
        ensure: bool,
    },
    /// Record the migrations up to `to` as applied without running them
    /// (adopting a database whose schema was built another way).
    Baseline {
        /// The last migration the schema already has.
        to: String,
        /// Record even when objects those migrations create are missing.
        force: bool,
        /// Change the history; without it, only say what would change.
        confirm: bool,
    },
    /// Accept the checksums of harmlessly edited applied files and forget
    /// the history rows of deleted files.
    Repair {
        /// Applied migrations whose current checksum is recorded.
        accept_checksums: Vec<String>,
        /// Migrations whose history rows are removed.
        forget: Vec<String>,
        /// Change the history; without it, only say what would change.
        confirm: bool,
    },
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// From CloudFormation (directly or through the Provider framework).
    CloudFormation(Box<CfnRequest>),
    /// A manual invoke.
    Action(Action),
}

/// Why an event was refused, and where a FAILED may still be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    /// Every problem found.
    pub problems: Vec<String>,
    /// The identifiers found, when the event looks like CloudFormation's.
    pub reply: Option<Box<ReplyTo>>,
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid event: {}", self.problems.join("; "))
    }
}

impl std::error::Error for EventError {}

impl EventError {
    /// An event refused for one reason, with nowhere to send a FAILED.
    pub fn one(problem: impl Into<String>) -> Self {
        EventError {
            problems: vec![problem.into()],
            reply: None,
        }
    }
}

impl From<&EventError> for lambda_runtime::Diagnostic {
    fn from(e: &EventError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: "InvalidEvent".into(),
            error_message: e.to_string(),
        }
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Top-level fields that are present but could not be read (each already a problem).
type Unreadable = [(String, String)];

fn is_unreadable(unreadable: &Unreadable, key: &str) -> bool {
    unreadable.iter().any(|(k, _)| k == key)
}

struct Fields<'a> {
    map: &'a Map<String, Value>,
    unreadable: &'a Unreadable,
    problems: Vec<String>,
}

impl Fields<'_> {
    /// A string field: missing is `None`; another type, empty or too long is a problem.
    fn string(&mut self, key: &str, max: usize) -> Option<String> {
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => {
                self.problems.push(format!("{key} is empty"));
                None
            }
            Some(Value::String(s)) if s.len() > max => {
                self.problems.push(format!(
                    "{key} is too long ({} bytes, at most {max})",
                    s.len()
                ));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.problems
                    .push(format!("{key} must be a string, not {}", describe(other)));
                None
            }
        }
    }

    /// A field CloudFormation always sends: missing or `null` is a problem.
    fn required(&mut self, key: &str, max: usize) -> String {
        match self.map.get(key) {
            Some(Value::Null) => {
                self.problems
                    .push(format!("{key} is null: it must be a non-empty string"));
                String::new()
            }
            None if !is_unreadable(self.unreadable, key) => {
                self.problems.push(format!("{key} is missing"));
                String::new()
            }
            _ => self.string(key, max).unwrap_or_default(),
        }
    }
}

fn usable_url(url: &str) -> bool {
    url.len() <= MAX_URL_LEN
        && reqwest::Url::parse(url)
            .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some())
}

/// A property value as text: CloudFormation sends strings, a direct invoke may send JSON types.
fn property_text(key: &str, v: &Value, problems: &mut Vec<String>) -> Option<String> {
    let text = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => return None,
        other => {
            problems.push(format!(
                "property {key} must be a string, not {}",
                describe(other)
            ));
            return None;
        }
    };
    if text.len() > MAX_PROPERTY_LEN {
        problems.push(format!("property {key} is too long ({} bytes)", text.len()));
        return None;
    }
    Some(text)
}

fn parse_bool(key: &str, text: &str, problems: &mut Vec<String>) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => {
            problems.push(format!(
                "property {key} must be \"true\" or \"false\", not `{}`",
                truncate(text, 40)
            ));
            None
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// `SnapshotDbInstance` or `SnapshotDbCluster` (an empty value is unset),
/// each a valid RDS identifier; both at once are refused.
fn snapshot_source(
    instance: Option<String>,
    cluster: Option<String>,
    problems: &mut Vec<String>,
) -> Option<SnapshotSource> {
    let checked =
        |key: &str, id: String, problems: &mut Vec<String>| match snapshot::check_identifier(
            &id,
            snapshot::MAX_SOURCE_ID,
        ) {
            Ok(()) => Some(id),
            Err(e) => {
                problems.push(format!("property {key}: `{}` is {e}", truncate(&id, 70)));
                None
            }
        };
    match (
        instance.filter(|v| !v.is_empty()),
        cluster.filter(|v| !v.is_empty()),
    ) {
        (Some(_), Some(_)) => {
            problems.push(
                "properties SnapshotDbInstance and SnapshotDbCluster exclude each other: set the one of the database's kind"
                    .into(),
            );
            None
        }
        (Some(id), None) => {
            checked("SnapshotDbInstance", id, problems).map(SnapshotSource::Instance)
        }
        (None, Some(id)) => checked("SnapshotDbCluster", id, problems).map(SnapshotSource::Cluster),
        (None, None) => None,
    }
}

fn parse_properties(name: &str, value: Option<&Value>, problems: &mut Vec<String>) -> Properties {
    let mut props = Properties {
        manage_users: true,
        ..Properties::default()
    };
    let map = match value {
        None | Some(Value::Null) => return props,
        Some(Value::Object(map)) => map,
        Some(other) => {
            problems.push(format!("{name} must be an object, not {}", describe(other)));
            return props;
        }
    };
    let mut text = |key: &str| map.get(key).and_then(|v| property_text(key, v, problems));
    let hash = text("MigrationsHash");
    let mode = text("TransactionMode");
    let target = text("TargetMigration");
    let manage = text("ManageUsers");
    let phase = text("Phase");
    let service_timeout = text("ServiceTimeout");
    let instance = text("SnapshotDbInstance");
    let cluster = text("SnapshotDbCluster");
    props.migrations_hash = hash.filter(|h| !h.is_empty());
    props.target_migration = target.filter(|t| !t.is_empty());
    if let Some(mode) = mode.filter(|m| !m.is_empty()) {
        match mode.parse() {
            Ok(m) => props.transaction_mode = Some(m),
            Err(e) => problems.push(format!("property TransactionMode: {}", truncate(&e, 120))),
        }
    }
    if let Some(phase) = phase.filter(|p| !p.is_empty()) {
        match phase.parse() {
            Ok(p) => props.phase = Some(p),
            Err(e) => problems.push(format!("property Phase: {}", truncate(&e, 120))),
        }
    }
    if let Some(timeout) = service_timeout.filter(|t| !t.is_empty()) {
        match timeout.parse::<u64>() {
            Ok(seconds) if seconds > 0 => {
                props.service_timeout = Some(std::time::Duration::from_secs(seconds))
            }
            _ => problems.push(format!(
                "property ServiceTimeout must be a number of seconds, not `{}`",
                truncate(&timeout, 40)
            )),
        }
    }
    props.snapshot = snapshot_source(instance, cluster, problems);
    if let Some(manage) = manage.filter(|m| !m.is_empty()) {
        if let Some(b) = parse_bool("ManageUsers", &manage, problems) {
            props.manage_users = b;
        }
    }
    props
}

fn parse_cfn(map: &Map<String, Value>, unreadable: &Unreadable) -> Result<CfnRequest, EventError> {
    let mut f = Fields {
        map,
        unreadable,
        problems: unreadable.iter().map(|(_, p)| p.clone()).collect(),
    };
    let request_type = match map.get("RequestType") {
        None if is_unreadable(unreadable, "RequestType") => None,
        None => {
            f.problems.push("RequestType is missing".into());
            None
        }
        Some(Value::String(t)) => match t.as_str() {
            "Create" => Some(RequestType::Create),
            "Update" => Some(RequestType::Update),
            "Delete" => Some(RequestType::Delete),
            other => {
                f.problems.push(format!(
                    "RequestType `{}` is not Create, Update or Delete",
                    truncate(other, 40)
                ));
                None
            }
        },
        Some(other) => {
            f.problems.push(format!(
                "RequestType must be a string, not {}",
                describe(other)
            ));
            None
        }
    };
    let response_url = f.string("ResponseURL", MAX_URL_LEN);
    if let Some(url) = &response_url {
        if !usable_url(url) {
            f.problems.push("ResponseURL is not an http(s) URL".into());
        }
    }
    let reply = ReplyTo {
        response_url: response_url.filter(|u| usable_url(u)),
        stack_id: f.required("StackId", MAX_ID_LEN),
        request_id: f.required("RequestId", MAX_ID_LEN),
        logical_resource_id: f.required("LogicalResourceId", MAX_ID_LEN),
        physical_resource_id: f.string("PhysicalResourceId", MAX_ID_LEN),
        service_token: map
            .get("ServiceToken")
            .and_then(Value::as_str)
            .filter(|t| t.len() <= MAX_ID_LEN)
            .map(str::to_string),
    };
    let mut problems = f.problems;
    let properties = parse_properties(
        "ResourceProperties",
        map.get("ResourceProperties"),
        &mut problems,
    );
    let old_properties = map
        .get("OldResourceProperties")
        .map(|v| parse_properties("OldResourceProperties", Some(v), &mut problems));
    let continuation = map.get(MARKER_FIELD).and_then(|v| {
        serde_json::from_value::<Marker>(v.clone())
            .map_err(|e| problems.push(format!("{MARKER_FIELD} is malformed: {e}")))
            .ok()
            .filter(|m| {
                let usable = m.sequence > 0;
                if !usable {
                    problems.push(format!("{MARKER_FIELD}.Sequence must be 1 or more"));
                }
                usable
            })
    });
    match request_type {
        Some(request_type) if problems.is_empty() => Ok(CfnRequest {
            request_type,
            reply,
            properties,
            old_properties,
            continuation,
        }),
        _ => Err(EventError {
            problems,
            reply: Some(Box::new(reply)),
        }),
    }
}

fn parse_action(map: &Map<String, Value>, unreadable: &Unreadable) -> Result<Action, EventError> {
    let mut problems: Vec<String> = unreadable.iter().map(|(_, p)| p.clone()).collect();
    let name = match map.get("action") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            problems.push(format!("action must be a string, not {}", describe(other)));
            ""
        }
        None => "",
    };
    let mut text = |key: &str| {
        map.get(key)
            .and_then(|v| property_text(key, v, &mut problems))
    };
    let to = text("to").filter(|t| !t.is_empty());
    let mode_text = text("mode");
    let ensure_text = text("ensure");
    let phase_text = text("phase").filter(|p| !p.is_empty());
    let mode = mode_text.and_then(|m| match m.parse::<TransactionMode>() {
        Ok(mode) => Some(mode),
        Err(e) => {
            problems.push(format!("mode: {e}"));
            None
        }
    });
    let phase = phase_text.and_then(|p| match p.parse::<Phase>() {
        Ok(phase) => Some(phase),
        Err(e) => {
            problems.push(format!("phase: {e}"));
            None
        }
    });
    let ensure = ensure_text
        .and_then(|e| parse_bool("ensure", &e, &mut problems))
        .unwrap_or(false);
    let mut flag = |key: &str| {
        map.get(key)
            .and_then(|v| property_text(key, v, &mut problems))
            .and_then(|t| parse_bool(key, &t, &mut problems))
            .unwrap_or(false)
    };
    let (force, confirm) = (flag("force"), flag("confirm"));
    let database = match map.get("database") {
        None | Some(Value::Null) => None,
        Some(_) if name != "migrate" => {
            problems.push("database is accepted only with the migrate action".into());
            None
        }
        Some(v) => match DatabaseTarget::parse(v) {
            Ok(t) => Some(t),
            Err(p) => {
                problems.extend(p);
                None
            }
        },
    };
    let accept_checksums = names(map, "accept_checksums", &mut problems);
    let forget = names(map, "forget", &mut problems);
    let insight = insight_options(map, &mut problems);
    let action = match name {
        "status" => Some(Action::Status),
        "plan" => Some(Action::Plan { to, mode, phase }),
        "migrate" => Some(Action::Migrate {
            to,
            mode,
            phase,
            database,
        }),
        "verify" => Some(Action::Verify),
        "users" => Some(Action::Users { ensure }),
        "baseline" => match to {
            Some(to) => Some(Action::Baseline { to, force, confirm }),
            None => {
                problems
                    .push("baseline needs `to`: the last migration the schema already has".into());
                None
            }
        },
        "repair" => Some(Action::Repair {
            accept_checksums,
            forget,
            confirm,
        }),
        "insight" => Some(Action::Insight(insight)),
        // Not a string: already said.
        "" if !problems.is_empty() => None,
        other => {
            problems.push(format!(
                "unknown action `{}`: use status, plan, migrate, verify, insight, users, baseline or repair",
                truncate(other, 40)
            ));
            None
        }
    };
    match action {
        Some(a) if problems.is_empty() => Ok(a),
        _ => Err(EventError {
            problems,
            reply: None,
        }),
    }
}

/// A list of migration names (a JSON list of strings, or one name).
fn names(map: &Map<String, Value>, key: &str, problems: &mut Vec<String>) -> Vec<String> {
    let values: Vec<&Value> = match map.get(key) {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(one) => vec![one],
    };
    let mut names = Vec::new();
    for v in values {
        match v {
            Value::String(s) if !s.trim().is_empty() && s.len() <= MAX_ID_LEN => {
                names.push(s.trim().to_string())
            }
            other => problems.push(format!(
                "{key} must list migration names (non-empty strings), not {}",
                describe(other)
            )),
        }
    }
    names
}

/// `top` (rows per category) and `long_running` (a duration) of `insight`.
fn insight_options(map: &Map<String, Value>, problems: &mut Vec<String>) -> InsightOptions {
    let mut options = InsightOptions::default();
    if let Some(top) = map
        .get("top")
        .and_then(|v| property_text("top", v, problems))
    {
        match top.parse::<usize>() {
            Ok(n) if (1..=MAX_TOP).contains(&n) => options.top = n,
            _ => problems.push(format!(
                "top must be a whole number from 1 to {MAX_TOP}, not `{}`",
                truncate(&top, 40)
            )),
        }
    }
    if let Some(long) = map
        .get("long_running")
        .and_then(|v| property_text("long_running", v, problems))
    {
        match parse_duration(&long) {
            Ok(d) => options.long_running = d,
            Err(e) => problems.push(format!("long_running: {e}")),
        }
    }
    options
}

fn not_an_object(what: &str) -> EventError {
    EventError {
        problems: vec![format!(
            "the event must be a JSON object, not {what}: send a CloudFormation request or {{\"action\": \"status\"}}"
        )],
        reply: None,
    }
}

/// Parses an invocation payload.
pub fn parse(payload: &Value) -> Result<Request, EventError> {
    let Value::Object(map) = payload else {
        return Err(not_an_object(describe(payload)));
    };
    parse_object(map, &[])
}

/// Parses an invocation payload as the runtime received it (JSON text).
///
/// A payload nested deeper than serde_json's recursion limit (128) cannot be
/// read into a [`Value`] at once, and the runtime would refuse it before the
/// handler runs, leaving CloudFormation without an answer. Here the top level
/// is read field by field, each kept as raw text (serde_json skips over a
/// value without recursing), and only then is each field parsed: a field
/// that cannot be read is a problem named in the FAILED response, and the
/// other fields (the ResponseURL and the ids) are still found.
pub fn parse_raw(payload: &str) -> Result<Request, EventError> {
    let top: BTreeMap<String, &RawValue> = match serde_json::from_str(payload) {
        Ok(top) => top,
        Err(_) => {
            return match serde_json::from_str::<Value>(payload) {
                Ok(value) => parse(&value),
                Err(e) => Err(not_an_object(&format!("unreadable JSON ({e})"))),
            };
        }
    };
    let mut map = Map::new();
    let mut unreadable = Vec::new();
    for (key, raw) in top {
        match serde_json::from_str::<Value>(raw.get()) {
            Ok(value) => {
                map.insert(key, value);
            }
            Err(e) => {
                let shown = truncate(&key, 40);
                let problem = if e.to_string().contains("recursion limit") {
                    format!(
                        "{shown} is nested more than {MAX_DEPTH} levels deep: it cannot be read"
                    )
                } else {
                    format!("{shown} cannot be read: {e}")
                };
                unreadable.push((key, problem));
            }
        }
    }
    parse_object(&map, &unreadable)
}

/// serde_json's recursion limit: the deepest a field's value may nest.
pub const MAX_DEPTH: usize = 128;

fn parse_object(map: &Map<String, Value>, unreadable: &Unreadable) -> Result<Request, EventError> {
    let has = |key: &str| map.contains_key(key) || is_unreadable(unreadable, key);
    if has("RequestType") || has("ResponseURL") || has("ResourceProperties") {
        parse_cfn(map, unreadable).map(|r| Request::CloudFormation(Box::new(r)))
    } else if has("action") {
        parse_action(map, unreadable).map(Request::Action)
    } else if !unreadable.is_empty() {
        Err(EventError {
            problems: unreadable.iter().map(|(_, p)| p.clone()).collect(),
            reply: None,
        })
    } else {
        Err(EventError {
            problems: vec![
                "unrecognised event: expected a CloudFormation custom-resource request (RequestType, ResponseURL, ...) \
                 or a manual action such as {\"action\": \"status\"}"
                    .into(),
            ],
            reply: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create() -> Value {
        json!({
            "RequestType": "Create",
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:db-setup",
            "ResponseURL": "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/x?sig=1",
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/app/1",
            "RequestId": "req-1",
            "ResourceType": "Custom::DbSetup",
            "LogicalResourceId": "DbSetup",
            "ResourceProperties": {"ServiceToken": "arn", "MigrationsHash": "abc", "ManageUsers": "false", "Unknown": "x"}
        })
    }

    #[test]
    fn an_empty_action_is_refused_with_a_reason() {
        for event in [json!({"action": ""}), json!({"action": 7})] {
            let err = parse(&event).unwrap_err();
            assert!(!err.problems.is_empty(), "{event}: no reason given");
            assert!(err.to_string().contains("action"), "{event}: {err}");
        }
    }

    #[test]
    fn a_create_request_parses_with_string_properties() {
        let Request::CloudFormation(r) = parse(&create()).unwrap() else {
            panic!()
        };
        assert_eq!(r.request_type, RequestType::Create);
        assert_eq!(r.reply.request_id, "req-1");
        assert_eq!(r.properties.migrations_hash.as_deref(), Some("abc"));
        assert!(!r.properties.manage_users);
        assert_eq!(r.reply.physical_id(), "db-setup-DbSetup");
    }

    #[test]
    fn update_keeps_the_physical_id_and_reads_old_properties() {
        let mut e = create();
        e["RequestType"] = json!("Update");
        e["PhysicalResourceId"] = json!("db-setup-DbSetup");
        e["OldResourceProperties"] = json!({"MigrationsHash": "old", "TransactionMode": "each"});
        let Request::CloudFormation(r) = parse(&e).unwrap() else {
            panic!()
        };
        assert_eq!(r.reply.physical_id(), "db-setup-DbSetup");
        let old = r.old_properties.unwrap();
        assert_eq!(old.transaction_mode, Some(TransactionMode::Each));
        assert!(old.manage_users);
    }

    #[test]
    fn service_timeout_and_the_continuation_marker_are_read() {
        let Request::CloudFormation(r) = parse(&create()).unwrap() else {
            panic!()
        };
        assert_eq!(r.properties.service_timeout, None);
        assert_eq!(r.continuation, None);
        let mut e = create();
        e["ResourceProperties"]["ServiceTimeout"] = json!("900");
        e[MARKER_FIELD] = json!({"Sequence": 2, "DeadlineMs": 1234, "Before": 7});
        let Request::CloudFormation(r) = parse(&e).unwrap() else {
            panic!()
        };
        assert_eq!(
            r.properties.service_timeout,
            Some(std::time::Duration::from_secs(900))
        );
        assert_eq!(
            r.continuation,
            Some(Marker {
                sequence: 2,
                deadline_ms: 1234,
                before: 7,
                done: false
            })
        );
        for (field, value, problem) in [
            (
                "ServiceTimeout",
                json!("soon"),
                "property ServiceTimeout must be a number of seconds",
            ),
            (
                "ServiceTimeout",
                json!("0"),
                "property ServiceTimeout must be a number of seconds",
            ),
        ] {
            let mut e = create();
            e["ResourceProperties"][field] = value;
            let err = parse(&e).unwrap_err();
            assert!(err.to_string().contains(problem), "{err}");
            assert!(err.reply.is_some(), "FAILED can still be sent");
        }
        for (marker, problem) in [
            (
                json!({"Sequence": 0, "DeadlineMs": 1}),
                "Sequence must be 1 or more",
            ),
            (json!({"Sequence": "x"}), "DbSetupContinuation is malformed"),
            (json!("1"), "DbSetupContinuation is malformed"),
        ] {
            let mut e = create();
            e[MARKER_FIELD] = marker;
            let err = parse(&e).unwrap_err();
            assert!(err.to_string().contains(problem), "{err}");
        }
    }

    #[test]
    fn the_phase_property_selects_a_deploy_phase() {
        let Request::CloudFormation(r) = parse(&create()).unwrap() else {
            panic!()
        };
        assert_eq!(r.properties.phase, None);
        for (text, phase) in [("expand", Phase::Expand), ("contract", Phase::Contract)] {
            let mut e = create();
            e["ResourceProperties"]["Phase"] = json!(text);
            let Request::CloudFormation(r) = parse(&e).unwrap() else {
                panic!()
            };
            assert_eq!(r.properties.phase, Some(phase));
        }
        let mut e = create();
        e["ResourceProperties"]["Phase"] = json!("cleanup");
        let text = parse(&e).unwrap_err().to_string();
        assert!(
            text.contains(
                "property Phase: unknown phase \"cleanup\": expected \"expand\" or \"contract\""
            ),
            "{text}"
        );
    }

    #[test]
    fn the_snapshot_properties_name_an_instance_or_a_cluster() {
        let props = |extra: Value| {
            let mut e = create();
            for (k, v) in extra.as_object().unwrap() {
                e["ResourceProperties"][k] = v.clone();
            }
            parse(&e)
        };
        let source = |r: Result<Request, EventError>| match r.unwrap() {
            Request::CloudFormation(r) => r.properties.snapshot,
            other => panic!("{other:?}"),
        };
        assert_eq!(source(props(json!({}))), None);
        assert_eq!(source(props(json!({"SnapshotDbInstance": ""}))), None);
        assert_eq!(
            source(props(json!({"SnapshotDbInstance": "app-db"}))),
            Some(SnapshotSource::Instance("app-db".into()))
        );
        assert_eq!(
            source(props(json!({"SnapshotDbCluster": "aurora-1"}))),
            Some(SnapshotSource::Cluster("aurora-1".into()))
        );
        let both = props(json!({"SnapshotDbInstance": "a", "SnapshotDbCluster": "b"})).unwrap_err();
        assert!(
            both.to_string()
                .contains("SnapshotDbInstance and SnapshotDbCluster exclude each other"),
            "{both}"
        );
        assert!(both.reply.is_some(), "FAILED can still be sent");
        let bad = props(json!({"SnapshotDbCluster": "my_cluster"})).unwrap_err();
        assert!(
            bad.to_string().contains(
                "property SnapshotDbCluster: `my_cluster` is not an RDS identifier (it has characters other than letters"
            ),
            "{bad}"
        );
    }

    #[test]
    fn missing_and_malformed_fields_are_each_named_and_the_reply_kept() {
        let e = json!({
            "RequestType": "Create",
            "ResponseURL": "https://example.com/r",
            "StackId": 7,
            "ResourceProperties": {"TransactionMode": "all", "ManageUsers": "maybe"}
        });
        let err = parse(&e).unwrap_err();
        let text = err.to_string();
        for needle in [
            "StackId must be a string, not a number",
            "RequestId is missing",
            "LogicalResourceId is missing",
            "property TransactionMode: `all` is not a transaction mode",
            "property ManageUsers must be \"true\" or \"false\"",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in {text}");
        }
        assert_eq!(
            err.reply.unwrap().response_url.as_deref(),
            Some("https://example.com/r")
        );
    }

    #[test]
    fn unknown_request_type_is_refused_by_name() {
        let mut e = create();
        e["RequestType"] = json!("Replace");
        let err = parse(&e).unwrap_err();
        assert!(
            err.to_string()
                .contains("RequestType `Replace` is not Create, Update or Delete")
        );
        assert!(err.reply.is_some());
    }

    #[test]
    fn unusable_response_urls_are_not_kept() {
        for url in ["file:///etc/passwd", "not a url", "https://"] {
            let mut e = create();
            e["ResponseURL"] = json!(url);
            let err = parse(&e).unwrap_err();
            assert_eq!(err.reply.unwrap().response_url, None, "{url}");
        }
    }

    #[test]
    fn huge_values_are_refused_not_copied() {
        let mut e = create();
        e["RequestId"] = json!("x".repeat(MAX_ID_LEN + 1));
        e["ResourceProperties"]["TargetMigration"] = json!("y".repeat(MAX_PROPERTY_LEN + 1));
        let err = parse(&e).unwrap_err();
        assert!(err.to_string().contains("RequestId is too long"));
        assert!(
            err.to_string()
                .contains("property TargetMigration is too long")
        );
    }

    fn deep(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn raw_payloads_parse_like_values() {
        let e = create();
        assert_eq!(parse_raw(&e.to_string()), parse(&e));
        let action = json!({"action": "migrate", "to": "003_x"});
        assert_eq!(parse_raw(&action.to_string()), parse(&action));
        for other in ["null", "[1]", "\"Create\"", "{}"] {
            let v: Value = serde_json::from_str(other).unwrap();
            assert_eq!(parse_raw(other), parse(&v), "{other}");
        }
    }

    #[test]
    fn a_field_nested_too_deep_is_named_and_the_reply_still_found() {
        for field in [
            "ResourceProperties",
            "OldResourceProperties",
            "Extra",
            "RequestType",
        ] {
            let mut e = create();
            e[field] = json!("DEEP");
            let raw = e.to_string().replace("\"DEEP\"", &deep(MAX_DEPTH + 10));
            assert!(
                serde_json::from_str::<Value>(&raw).is_err(),
                "too deep for a Value"
            );
            let err = parse_raw(&raw).unwrap_err();
            assert_eq!(
                err.problems,
                vec![format!(
                    "{field} is nested more than {MAX_DEPTH} levels deep: it cannot be read"
                )],
                "{field}"
            );
            let reply = err.reply.unwrap();
            assert_eq!(reply.request_id, "req-1");
            assert!(reply.response_url.is_some());
        }
        // Within the limit, an unknown field is ignored as before.
        let mut e = create();
        e["Extra"] = json!("DEEP");
        let raw = e.to_string().replace("\"DEEP\"", &deep(100));
        assert!(parse_raw(&raw).is_ok());
        // Deep without any CloudFormation field: an error without a reply.
        let err = parse_raw(&format!("{{\"x\": {}}}", deep(300))).unwrap_err();
        assert!(err.reply.is_none() && err.problems[0].contains("x is nested"));
        let err = parse_raw(&deep(300)).unwrap_err();
        assert!(err.to_string().contains("must be a JSON object"), "{err}");
    }

    #[test]
    fn null_ids_are_refused_by_name() {
        for field in ["StackId", "RequestId", "LogicalResourceId"] {
            let mut e = create();
            e[field] = Value::Null;
            let err = parse(&e).unwrap_err();
            assert_eq!(
                err.problems,
                vec![format!("{field} is null: it must be a non-empty string")]
            );
        }
        // Optional fields may be null.
        let mut e = create();
        e["PhysicalResourceId"] = Value::Null;
        assert!(parse(&e).is_ok());
    }

    #[test]
    fn the_service_token_is_kept() {
        let Request::CloudFormation(r) = parse(&create()).unwrap() else {
            panic!()
        };
        assert_eq!(
            r.reply.service_token.as_deref(),
            Some("arn:aws:lambda:us-east-1:123456789012:function:db-setup")
        );
    }

    #[test]
    fn migrate_takes_a_validated_database_from_the_input() {
        let Request::Action(Action::Migrate { database, .. }) = parse(&json!({
            "action": "migrate",
            "database": {"name": "t1", "secretId": "arn:aws:secretsmanager:x:1:secret:t1", "host": "h1", "dbname": "app"}
        }))
        .unwrap() else {
            panic!("not a migrate")
        };
        let database = database.expect("the database");
        assert_eq!(
            (database.name.as_str(), database.host.as_deref()),
            ("t1", Some("h1"))
        );
        let err = parse(&json!({"action": "migrate", "database": {"name": "t1"}})).unwrap_err();
        assert!(
            err.to_string().contains("database.secretId is required"),
            "{err}"
        );
        let err = parse(&json!({"action": "status", "database": {"name": "t", "secretId": "s"}}))
            .unwrap_err();
        assert!(
            err.to_string().contains("only with the migrate action"),
            "{err}"
        );
    }

    #[test]
    fn manual_actions_parse_with_options() {
        assert_eq!(
            parse(&json!({"action": "status"})).unwrap(),
            Request::Action(Action::Status)
        );
        assert_eq!(
            parse(&json!({"action": "migrate", "to": "003_x", "mode": "each"})).unwrap(),
            Request::Action(Action::Migrate {
                to: Some("003_x".into()),
                mode: Some(TransactionMode::Each),
                database: None,
                phase: None,
            })
        );
        assert_eq!(
            parse(&json!({"action": "plan", "phase": "expand"})).unwrap(),
            Request::Action(Action::Plan {
                to: None,
                mode: None,
                phase: Some(Phase::Expand)
            })
        );
        assert!(
            parse(&json!({"action": "plan", "phase": "soon"}))
                .unwrap_err()
                .to_string()
                .contains("phase: unknown phase \"soon\"")
        );
        assert_eq!(
            parse(&json!({"action": "users", "ensure": true})).unwrap(),
            Request::Action(Action::Users { ensure: true })
        );
        let err = parse(&json!({"action": "drop"})).unwrap_err();
        assert!(err.to_string().contains(
            "unknown action `drop`: use status, plan, migrate, verify, insight, users, baseline or repair"
        ));
        assert!(parse(&json!({"action": "plan", "mode": "x"})).is_err());
        assert_eq!(
            parse(&json!({"action": "insight"})).unwrap(),
            Request::Action(Action::Insight(InsightOptions::default()))
        );
        assert_eq!(
            parse(&json!({"action": "insight", "top": "25", "long_running": "5min"})).unwrap(),
            Request::Action(Action::Insight(InsightOptions {
                top: 25,
                long_running: std::time::Duration::from_secs(300)
            }))
        );
        for (bad, why) in [
            (
                json!({"action": "insight", "top": 0}),
                "top must be a whole number from 1 to 1000, not `0`",
            ),
            (
                json!({"action": "insight", "top": "all"}),
                "top must be a whole number",
            ),
            (
                json!({"action": "insight", "long_running": "soon"}),
                "long_running:",
            ),
        ] {
            let err = parse(&bad).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn every_sample_event_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let request = parse_raw(&text);
            assert!(request.is_ok(), "{}: {request:?}", path.display());
            seen += 1;
        }
        assert!(seen >= 13, "{seen} sample events");
    }

    #[test]
    fn history_changes_parse_and_are_dry_runs_without_confirm() {
        assert_eq!(
            parse(&json!({"action": "baseline", "to": "007_x", "confirm": true})).unwrap(),
            Request::Action(Action::Baseline {
                to: "007_x".into(),
                force: false,
                confirm: true
            })
        );
        assert_eq!(
            parse(&json!({"action": "baseline", "to": "007_x", "force": "true"})).unwrap(),
            Request::Action(Action::Baseline {
                to: "007_x".into(),
                force: true,
                confirm: false
            })
        );
        assert!(
            parse(&json!({"action": "baseline"}))
                .unwrap_err()
                .to_string()
                .contains("baseline needs `to`")
        );
        assert_eq!(
            parse(&json!({"action": "repair", "accept_checksums": ["003_x"], "forget": "009_gone", "confirm": true}))
                .unwrap(),
            Request::Action(Action::Repair {
                accept_checksums: vec!["003_x".into()],
                forget: vec!["009_gone".into()],
                confirm: true
            })
        );
        let err = parse(&json!({"action": "repair", "forget": [1], "confirm": "yes"})).unwrap_err();
        assert!(
            err.to_string().contains("forget must list migration names"),
            "{err}"
        );
        assert!(err.to_string().contains("confirm must be"), "{err}");
    }

    #[test]
    fn other_payloads_are_refused_with_what_to_send() {
        for payload in [
            json!(null),
            json!([1]),
            json!("Create"),
            json!({}),
            json!({"hello": 1}),
        ] {
            let err = parse(&payload).unwrap_err();
            assert!(err.reply.is_none());
            assert!(
                err.to_string().contains("{\"action\": \"status\"}"),
                "{err}"
            );
        }
    }
}
