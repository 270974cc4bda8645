//! Many databases in one deploy: the target of one run taken from the input
//! ([`DatabaseTarget`], validated), and the fan-out ([`run_bounded`]) that
//! runs a list of databases with at most `concurrency` at a time and
//! aggregates the outcomes ([`FleetReport`]): SUCCESS only when every
//! database succeeded, FAILED naming each failed one and saying what was
//! applied where. On AWS the construct's Step Functions Map does the fan-out
//! and its isComplete handler the same aggregation; `db-setup-cli fleet` and
//! the tests use this module. See docs/scale.md.

use std::fmt;

use futures_util::StreamExt;
use futures_util::stream;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::config::DbOverrides;
use crate::db::{self, ConnectOptions, Target, Tls};
use crate::migrate::{MigrationSet, Migrator, RunOptions};

/// The longest database label accepted.
pub const MAX_NAME_LEN: usize = 128;
/// The longest secret id (name or ARN) accepted; Secrets Manager's own limit.
pub const MAX_SECRET_ID_LEN: usize = 2048;
/// The longest host name accepted (DNS).
pub const MAX_HOST_LEN: usize = 253;
/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
pub const MAX_DBNAME_LEN: usize = 63;

/// One database of a fleet, from the input: a label, the admin secret that
/// reaches it, and optionally where to connect (else the secret's `host`,
/// `port`, `dbname`). Its `Debug` and `Serialize` show only the label: the
/// secret id and the endpoint are never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseTarget {
    /// A label for reports (a tenant or a Region); not a secret.
    pub name: String,
    /// The admin secret's name or ARN.
    pub secret_id: String,
    /// Overrides the secret's host.
    pub host: Option<String>,
    /// Overrides the secret's port.
    pub port: Option<u16>,
    /// Overrides the secret's database name.
    pub dbname: Option<String>,
}

impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseTarget")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Serialize for DatabaseTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = Map::new();
        map.insert("name".into(), Value::String(self.name.clone()));
        map.serialize(s)
    }
}

impl DatabaseTarget {
    /// Reads `{"name", "secretId", "host"?, "port"?, "dbname"?}`; every problem
    /// is named (by field, never echoing a value other than its kind).
    pub fn parse(value: &Value) -> Result<DatabaseTarget, Vec<String>> {
        let mut problems = Vec::new();
        let Value::Object(map) = value else {
            return Err(vec![
                "database must be an object {\"name\", \"secretId\", \"host\", \"port\", \"dbname\"}"
                    .into(),
            ]);
        };
        for key in map.keys() {
            if !["name", "secretId", "host", "port", "dbname"].contains(&key.as_str()) {
                problems.push(format!(
                    "database: unknown field `{}`: use name, secretId, host, port, dbname",
                    key.chars().take(40).collect::<String>()
                ));
            }
        }
        let mut text = |key: &str, max: usize, required: bool| -> Option<String> {
            match map.get(key) {
                None | Some(Value::Null) if !required => None,
                None | Some(Value::Null) => {
                    problems.push(format!("database.{key} is required"));
                    None
                }
                Some(Value::String(s)) if s.trim().is_empty() => {
                    problems.push(format!("database.{key} must not be empty"));
                    None
                }
                Some(Value::String(s)) if s.len() > max => {
                    problems.push(format!("database.{key} is longer than {max} bytes"));
                    None
                }
                Some(Value::String(s)) if s.chars().any(char::is_control) => {
                    problems.push(format!("database.{key} holds control characters"));
                    None
                }
                Some(Value::String(s)) => Some(s.trim().to_string()),
                Some(_) => {
                    problems.push(format!("database.{key} must be a string"));
                    None
                }
            }
        };
        let name = text("name", MAX_NAME_LEN, true);
        let secret_id = text("secretId", MAX_SECRET_ID_LEN, true);
        let host = text("host", MAX_HOST_LEN, false);
        let dbname = text("dbname", MAX_DBNAME_LEN, false);
        if let Some(h) = &host
            && !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            problems.push(
                "database.host must be a host name or IP address (letters, digits, . - _ :)".into(),
            );
        }
        let port = match map.get("port") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let n = match v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse::<u64>().ok(),
                    _ => None,
                };
                match n {
                    Some(p @ 1..=65535) => u16::try_from(p).ok(),
                    _ => {
                        problems.push("database.port must be a number from 1 to 65535".into());
                        None
                    }
                }
            }
        };
        match (name, secret_id) {
            (Some(name), Some(secret_id)) if problems.is_empty() => Ok(DatabaseTarget {
                name,
                secret_id,
                host,
                port,
                dbname,
            }),
            _ => Err(problems),
        }
    }

    /// Where to connect, over what the admin secret says.
    pub fn overrides(&self) -> DbOverrides {
        DbOverrides {
            host: self.host.clone(),
            port: self.port,
            dbname: self.dbname.clone(),
        }
    }
}

/// How one database of a fleet went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseOutcome {
    /// The database's label.
    pub name: String,
    /// `SUCCESS` or `FAILED`.
    pub status: Status,
    /// The migrations this run applied there (on FAILED: those committed before the error).
    pub applied: Vec<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A database's or the whole fleet's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Done.
    Success,
    /// Not done.
    Failed,
}

/// The fleet's result: every database's outcome, in the input's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetReport {
    /// SUCCESS only when every database succeeded.
    pub status: Status,
    /// How many databases.
    pub databases: usize,
    /// How many failed.
    pub failed: usize,
    /// One per database, in the input's order.
    pub outcomes: Vec<DatabaseOutcome>,
}

impl FleetReport {
    /// Aggregates outcomes (kept in the order given).
    pub fn aggregate(outcomes: Vec<DatabaseOutcome>) -> FleetReport {
        let failed = outcomes
            .iter()
            .filter(|o| o.status == Status::Failed)
            .count();
        FleetReport {
            status: if failed == 0 {
                Status::Success
            } else {
                Status::Failed
            },
            databases: outcomes.len(),
            failed,
            outcomes,
        }
    }

    /// One line for CloudFormation's Reason or a log: each failed database
    /// with its error, then what was applied where (databases with nothing
    /// applied are counted, not listed).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.failed > 0 {
            let failed: Vec<String> = self
                .outcomes
                .iter()
                .filter(|o| o.status == Status::Failed)
                .map(|o| format!("{}: {}", o.name, o.error.as_deref().unwrap_or("failed")))
                .collect();
            parts.push(format!(
                "{} of {} databases failed: {}",
                self.failed,
                self.databases,
                failed.join("; ")
            ));
        } else {
            parts.push(format!("all {} databases migrated", self.databases));
        }
        let applied: Vec<String> = self
            .outcomes
            .iter()
            .filter(|o| !o.applied.is_empty())
            .map(|o| format!("{}: {}", o.name, o.applied.join(", ")))
            .collect();
        let untouched = self.databases - applied.len();
        if applied.is_empty() {
            parts.push("nothing applied anywhere".into());
        } else {
            parts.push(format!(
                "applied: {} ({untouched} with nothing applied)",
                applied.join("; ")
            ));
        }
        parts.join(". ")
    }
}

/// Runs `run` on every item with at most `concurrency` (at least 1) running
/// at once, and aggregates the outcomes in the items' order. Every item runs,
/// whatever the others did: one failed database never stops the rest.
pub async fn run_bounded<T, F, Fut>(items: Vec<T>, concurrency: usize, run: F) -> FleetReport
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = DatabaseOutcome>,
{
    let mut indexed: Vec<(usize, DatabaseOutcome)> =
        stream::iter(items.into_iter().enumerate().map(|(i, item)| {
            let fut = run(item);
            async move { (i, fut.await) }
        }))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    indexed.sort_by_key(|(i, _)| *i);
    FleetReport::aggregate(indexed.into_iter().map(|(_, o)| o).collect())
}

/// Migrates one database of a fleet (connect, run, disconnect) and says how
/// it went; used by `db-setup-cli fleet` and the tests (on AWS, each Map
/// iteration is one invoke of the function instead).
pub async fn migrate_one(
    name: String,
    target: &Target,
    tls: &Tls,
    connect: &ConnectOptions,
    set: &MigrationSet,
    options: RunOptions,
) -> DatabaseOutcome {
    let failed = |name: String, error: String| DatabaseOutcome {
        name,
        status: Status::Failed,
        applied: Vec::new(),
        error: Some(error),
    };
    let labelled = ConnectOptions {
        label: Some(name.clone()),
        ..connect.clone()
    };
    let connection = match db::connect(target, tls, &labelled).await {
        Ok(c) => c,
        Err(e) => return failed(name, e.to_string()),
    };
    match Migrator::new(connection.client(), options)
        .migrate(set)
        .await
    {
        Ok(report) => DatabaseOutcome {
            name,
            status: Status::Success,
            applied: report.applied.into_iter().map(|a| a.name).collect(),
            error: None,
        },
        Err(e) => failed(name, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn outcome(name: &str, ok: bool, applied: &[&str]) -> DatabaseOutcome {
        DatabaseOutcome {
            name: name.into(),
            status: if ok { Status::Success } else { Status::Failed },
            applied: applied.iter().map(|s| s.to_string()).collect(),
            error: (!ok).then(|| format!("{name} broke")),
        }
    }

    #[test]
    fn success_only_when_all_succeeded() {
        let all =
            FleetReport::aggregate(vec![outcome("a", true, &["001"]), outcome("b", true, &[])]);
        assert_eq!(all.status, Status::Success);
        assert_eq!(
            all.summary(),
            "all 2 databases migrated. applied: a: 001 (1 with nothing applied)"
        );
        let some = FleetReport::aggregate(vec![
            outcome("a", true, &["001", "002"]),
            outcome("b", false, &["001"]),
            outcome("c", false, &[]),
        ]);
        assert_eq!(some.status, Status::Failed);
        assert_eq!(some.failed, 2);
        assert_eq!(
            some.summary(),
            "2 of 3 databases failed: b: b broke; c: c broke. \
             applied: a: 001, 002; b: 001 (1 with nothing applied)"
        );
        assert_eq!(FleetReport::aggregate(vec![]).status, Status::Success);
    }

    #[tokio::test]
    async fn fan_out_respects_the_bound_and_keeps_the_order() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let items: Vec<usize> = (0..20).collect();
        let report = run_bounded(items, 3, |i| {
            let (running, peak) = (running.clone(), peak.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // Finish out of order: later items yield fewer times.
                for _ in 0..(20 - i) {
                    tokio::task::yield_now().await;
                }
                running.fetch_sub(1, Ordering::SeqCst);
                outcome(&format!("db{i}"), i % 7 != 3, &[])
            }
        })
        .await;
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        let names: Vec<String> = report.outcomes.iter().map(|o| o.name.clone()).collect();
        let expected: Vec<String> = (0..20).map(|i| format!("db{i}")).collect();
        assert_eq!(names, expected);
        assert_eq!(report.failed, 3, "db3, db10, db17");
        assert_eq!(report.status, Status::Failed);
    }

    #[test]
    fn target_parses_and_validates_without_echoing_values() {
        let t = DatabaseTarget::parse(&json!({
            "name": "tenant-7", "secretId": "arn:aws:secretsmanager:eu-west-1:1:secret:t7",
            "host": "t7.cluster-x.eu-west-1.rds.amazonaws.com", "port": "5433", "dbname": "app"
        }))
        .unwrap();
        assert_eq!(t.port, Some(5433));
        assert_eq!(t.overrides().dbname.as_deref(), Some("app"));
        let shown = format!("{t:?} {}", serde_json::to_string(&t).unwrap());
        assert!(shown.contains("tenant-7"));
        assert!(
            !shown.contains("secret:t7") && !shown.contains("rds.amazonaws"),
            "{shown}"
        );

        let err = DatabaseTarget::parse(&json!({
            "secretId": "", "host": "evil host;", "port": 70000, "dbname": "x".repeat(64),
            "password": "hunter2"
        }))
        .unwrap_err();
        assert_eq!(
            err,
            vec![
                "database: unknown field `password`: use name, secretId, host, port, dbname",
                "database.name is required",
                "database.secretId must not be empty",
                "database.dbname is longer than 63 bytes",
                "database.host must be a host name or IP address (letters, digits, . - _ :)",
                "database.port must be a number from 1 to 65535",
            ]
        );
        assert!(!err.join(" ").contains("hunter2"));
        assert!(DatabaseTarget::parse(&json!("db")).is_err());
    }
}
