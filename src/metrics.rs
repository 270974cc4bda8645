//! Deploy metrics as CloudWatch Embedded Metric Format (EMF) records: one
//! JSON log line per CloudFormation request, which CloudWatch Logs turns
//! into metrics without an API call (no `cloudwatch:PutMetricData`
//! permission, no network round trip).
//!
//! A record, per the EMF specification:
//!
//! ```json
//! {"_aws": {"Timestamp": 1764434911000,
//!           "CloudWatchMetrics": [{"Namespace": "DbSetup",
//!                                  "Dimensions": [["Stack", "RequestType"]],
//!                                  "Metrics": [{"Name": "MigrationsApplied", "Unit": "Count"}, ...]}]},
//!  "Stack": "MyStack", "RequestType": "Create",
//!  "MigrationsApplied": 12, "DeployDuration": 1840, "LockWait": 0, "UsersRotated": 2, "Failures": 0}
//! ```
//!
//! [`record`] builds it (pure) and [`validate`] checks a record against the
//! specification (used by the unit tests and by the integration test that
//! reads the function's log). [`emit`] sends it as a tracing event of
//! target [`TARGET`]; [`EmfLayer`] writes such events verbatim, one line on
//! stdout, whatever the log format and filter (the other log layers leave
//! that target out).

use serde_json::{Map, Value, json};
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

/// The tracing target of EMF records.
pub const TARGET: &str = "db_setup::emf";

/// The dimension set of every metric: by stack and request type.
pub const DIMENSIONS: [&str; 2] = ["Stack", "RequestType"];

/// What one CloudFormation request did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeployMetrics {
    /// The stack's name (from `StackId`).
    pub stack: String,
    /// `Create`, `Update` or `Delete`.
    pub request_type: String,
    /// Migrations applied by this request.
    pub migrations_applied: u64,
    /// Time from the request to the answer's start, in milliseconds.
    pub duration_ms: u64,
    /// Time spent waiting for the migration lock, in milliseconds.
    pub lock_wait_ms: u64,
    /// Users whose password was rotated.
    pub users_rotated: u64,
    /// 1 when the request failed.
    pub failures: u64,
    /// The error type of a failure (a property, not a dimension).
    pub error_type: Option<String>,
}

/// The stack's name in a `StackId` ARN
/// (`arn:aws:cloudformation:<region>:<account>:stack/<name>/<id>`), else
/// the id as it is.
pub fn stack_name(stack_id: &str) -> &str {
    stack_id
        .split_once(":stack/")
        .and_then(|(_, rest)| rest.split('/').next())
        .filter(|name| !name.is_empty())
        .unwrap_or(stack_id)
}

/// The EMF record of `m` at `timestamp_ms` (milliseconds since the epoch).
pub fn record(namespace: &str, timestamp_ms: u64, m: &DeployMetrics) -> Value {
    let metrics: [(&str, &str, u64); 5] = [
        ("MigrationsApplied", "Count", m.migrations_applied),
        ("DeployDuration", "Milliseconds", m.duration_ms),
        ("LockWait", "Milliseconds", m.lock_wait_ms),
        ("UsersRotated", "Count", m.users_rotated),
        ("Failures", "Count", m.failures),
    ];
    let mut top = Map::new();
    top.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [DIMENSIONS],
                "Metrics": metrics.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    top.insert("Stack".into(), json!(m.stack));
    top.insert("RequestType".into(), json!(m.request_type));
    for (name, _, value) in metrics {
        top.insert(name.into(), json!(value));
    }
    if let Some(e) = &m.error_type {
        top.insert("ErrorType".into(), json!(e));
    }
    Value::Object(top)
}

/// The units CloudWatch accepts.
const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks `v` against the EMF specification: `_aws.Timestamp` a
/// non-negative integer; `_aws.CloudWatchMetrics` a non-empty list of
/// directives, each with a `Namespace` string, `Dimensions` (a list of
/// dimension sets, each a list of at most 30 names whose values are strings
/// at the top level) and `Metrics` (at most 100, each a `Name` string with a
/// number, or a list of numbers, at the top level, and an optional valid
/// `Unit`). Every violation is returned.
pub fn validate(v: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(top) = v.as_object() else {
        return vec!["a record must be a JSON object".into()];
    };
    let Some(aws) = top.get("_aws").and_then(Value::as_object) else {
        return vec!["_aws is missing or not an object".into()];
    };
    if !aws.get("Timestamp").is_some_and(Value::is_u64) {
        problems.push("_aws.Timestamp must be a non-negative integer (ms since the epoch)".into());
    }
    let directives = match aws.get("CloudWatchMetrics").and_then(Value::as_array) {
        Some(d) if !d.is_empty() => d,
        _ => {
            problems.push("_aws.CloudWatchMetrics must be a non-empty list".into());
            return problems;
        }
    };
    for (i, d) in directives.iter().enumerate() {
        let at = format!("CloudWatchMetrics[{i}]");
        if !d
            .get("Namespace")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty() && n.len() <= 255)
        {
            problems.push(format!(
                "{at}.Namespace must be a string of 1 to 255 characters"
            ));
        }
        match d.get("Dimensions").and_then(Value::as_array) {
            None => problems.push(format!("{at}.Dimensions must be a list of dimension sets")),
            Some(sets) => {
                for set in sets {
                    let Some(names) = set.as_array().filter(|n| n.len() <= 30) else {
                        problems.push(format!(
                            "{at}.Dimensions: each set must be a list of at most 30 names"
                        ));
                        continue;
                    };
                    for name in names {
                        match name.as_str() {
                            Some(n) if top.get(n).is_some_and(Value::is_string) => {}
                            Some(n) => problems.push(format!(
                                "dimension {n} must have a string value at the top level"
                            )),
                            None => problems.push(format!("{at}.Dimensions: names are strings")),
                        }
                    }
                }
            }
        }
        match d.get("Metrics").and_then(Value::as_array) {
            Some(ms) if !ms.is_empty() && ms.len() <= 100 => {
                for m in ms {
                    let Some(name) = m.get("Name").and_then(Value::as_str) else {
                        problems.push(format!("{at}.Metrics: each needs a Name string"));
                        continue;
                    };
                    let numeric = match top.get(name) {
                        Some(Value::Number(_)) => true,
                        Some(Value::Array(xs)) => xs.iter().all(Value::is_number),
                        _ => false,
                    };
                    if !numeric {
                        problems.push(format!(
                            "metric {name} must have a number (or a list of numbers) at the top level"
                        ));
                    }
                    if let Some(unit) = m.get("Unit") {
                        if !unit.as_str().is_some_and(|u| UNITS.contains(&u)) {
                            problems
                                .push(format!("metric {name}: {unit} is not a CloudWatch unit"));
                        }
                    }
                }
            }
            _ => problems.push(format!("{at}.Metrics must list 1 to 100 metrics")),
        }
    }
    problems
}

/// Emits the record of `m` now (see [`EmfLayer`]).
pub fn emit(namespace: &str, m: &DeployMetrics) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let line = record(namespace, now_ms, m).to_string();
    tracing::info!(target: TARGET, emf = %line);
}

/// Writes the `emf` field of [`TARGET`] events as they are, one line each
/// on stdout (Lambda sends stdout to CloudWatch Logs, which extracts the
/// metrics). Other events are ignored.
pub struct EmfLayer;

struct EmfField(Option<String>);

impl Visit for EmfField {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "emf" {
            self.0 = Some(format!("{value:?}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "emf" {
            self.0 = Some(value.to_string());
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for EmfLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut field = EmfField(None);
        event.record(&mut field);
        if let Some(line) = field.0 {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            // A log line that cannot be written has nowhere else to go.
            let _ = writeln!(out, "{line}");
        }
    }
}

/// True for events that are EMF records (the other log layers skip them).
pub fn is_emf(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() == TARGET
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DeployMetrics {
        DeployMetrics {
            stack: "MyStack".into(),
            request_type: "Create".into(),
            migrations_applied: 12,
            duration_ms: 1840,
            lock_wait_ms: 3,
            users_rotated: 2,
            failures: 0,
            error_type: None,
        }
    }

    #[test]
    fn a_record_follows_the_emf_specification() {
        let r = record("DbSetup", 1_764_434_911_000, &sample());
        assert_eq!(validate(&r), Vec::<String>::new());
        assert_eq!(r["_aws"]["Timestamp"], 1_764_434_911_000u64);
        let d = &r["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(d["Namespace"], "DbSetup");
        assert_eq!(d["Dimensions"], json!([["Stack", "RequestType"]]));
        let names: Vec<&str> = d["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "MigrationsApplied",
                "DeployDuration",
                "LockWait",
                "UsersRotated",
                "Failures"
            ]
        );
        assert_eq!(d["Metrics"][1]["Unit"], "Milliseconds");
        assert_eq!(d["Metrics"][0]["Unit"], "Count");
        assert_eq!(r["Stack"], "MyStack");
        assert_eq!(r["RequestType"], "Create");
        assert_eq!(r["MigrationsApplied"], 12);
        assert_eq!(r["DeployDuration"], 1840);
        assert!(r.get("ErrorType").is_none());
        let failed = record(
            "Team/Db",
            1,
            &DeployMetrics {
                failures: 1,
                error_type: Some("MigrationError".into()),
                ..sample()
            },
        );
        assert_eq!(validate(&failed), Vec::<String>::new());
        assert_eq!(failed["ErrorType"], "MigrationError");
        assert_eq!(failed["Failures"], 1);
    }

    #[test]
    fn the_validator_names_each_violation() {
        let mut r = record("DbSetup", 5, &sample());
        r["_aws"]["Timestamp"] = json!("now");
        r["Stack"] = json!(7);
        r["LockWait"] = json!("3");
        r["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = json!("Things");
        let problems = validate(&r).join(" | ");
        assert!(problems.contains("_aws.Timestamp"), "{problems}");
        assert!(
            problems.contains("dimension Stack must have a string value"),
            "{problems}"
        );
        assert!(
            problems.contains("metric LockWait must have a number"),
            "{problems}"
        );
        assert!(
            problems.contains("\"Things\" is not a CloudWatch unit"),
            "{problems}"
        );
        assert_eq!(
            validate(&json!({"a": 1})),
            ["_aws is missing or not an object"]
        );
        let mut empty = record("DbSetup", 5, &sample());
        empty["_aws"]["CloudWatchMetrics"] = json!([]);
        assert_eq!(
            validate(&empty),
            ["_aws.CloudWatchMetrics must be a non-empty list"]
        );
    }

    #[test]
    fn the_stack_name_comes_from_the_stack_arn() {
        assert_eq!(
            stack_name("arn:aws:cloudformation:eu-west-1:123456789012:stack/MyStack/6a1d2e00-1111"),
            "MyStack"
        );
        assert_eq!(stack_name("local-stack"), "local-stack");
    }
}
