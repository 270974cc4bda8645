//! Work longer than one invocation (direct mode): the function stops between
//! two units of work (a transaction, or one no-transaction migration), records
//! where the chain is, and invokes itself asynchronously with the same event
//! and a continuation marker; only the chain's last invocation answers
//! CloudFormation. The whole chain is bounded by the custom resource's
//! `ServiceTimeout`.
//!
//! Lambda may deliver an asynchronous event twice, and retries one whose
//! process died. The chain's record (a row per request in
//! [`TABLE`], written only when a chain starts) makes every such copy
//! harmless: an invocation runs only when the record says its turn has come
//! and nobody alive is running it (the runner's backend is looked up in
//! `pg_stat_activity`); otherwise it ends quietly, without answering.
//!
//! The pure part ([`decide`], [`Chain`], [`Marker`], [`next_payload`]) is unit
//! tested here; [`Record`] is the database side.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::pg::{ServerError, literal};

/// The event field that carries the marker.
pub const MARKER_FIELD: &str = "DbSetupContinuation";

/// The chain's record, beside `pgmigrations`.
pub const TABLE: &str = r#""public"."db_setup_continuations""#;

/// How long finished chains' rows are kept.
const KEEP_ROWS: &str = "7 days";

/// The marker a continuation event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// 1 for the first continuation, then 2, 3, ...
    #[serde(rename = "Sequence")]
    pub sequence: u32,
    /// When the whole operation must have answered (ms since the epoch):
    /// the first invocation's start plus `ServiceTimeout`.
    #[serde(rename = "DeadlineMs")]
    pub deadline_ms: u64,
    /// Migrations the history held before the deploy's first invocation.
    #[serde(rename = "Before", default)]
    pub before: usize,
    /// Provider mode: the work was finished by the `onEvent` call, so
    /// `isComplete` has nothing left to run.
    #[serde(rename = "Done", default, skip_serializing_if = "std::ops::Not::not")]
    pub done: bool,
}

/// What an invocation knows of its place in a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    /// 0 for the invocation CloudFormation made, else the marker's.
    pub sequence: u32,
    /// When the whole operation must have answered (ms since the epoch).
    pub deadline_ms: u64,
    /// Migrations the history held before the deploy's first invocation
    /// (`None` in that first invocation: its plan tells).
    pub before: Option<usize>,
    /// True when the chain keeps a record in the database (direct mode,
    /// where Lambda may deliver an event twice); provider mode's calls come
    /// one at a time from the framework, and the lock and the history suffice.
    pub record: bool,
    /// Stop before starting a new unit of work after this instant and continue
    /// in a new invocation; `None` when continuing is off (the work runs to the
    /// end or to the invocation's deadline).
    pub yield_at: Option<Instant>,
}

impl Chain {
    /// An invocation that may not continue (manual runs, continuation off).
    pub fn single() -> Chain {
        Chain {
            sequence: 0,
            deadline_ms: u64::MAX,
            before: None,
            record: false,
            yield_at: None,
        }
    }

    /// The marker of the next invocation; `before` is the history's size
    /// before the deploy.
    pub fn next(&self, before: usize) -> Marker {
        Marker {
            sequence: self.sequence + 1,
            deadline_ms: self.deadline_ms,
            before,
            done: false,
        }
    }
}

/// The operation's deadline for an invocation CloudFormation made at `now_ms`:
/// `ServiceTimeout` (CloudFormation's default, one hour, when the template
/// does not set it) from now.
pub fn operation_deadline(now_ms: u64, service_timeout: Option<Duration>) -> u64 {
    let timeout = service_timeout.unwrap_or(crate::defaults::SERVICE_TIMEOUT);
    now_ms.saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
}

/// When to stop starting units: `reserve` before the earlier of the
/// invocation's work deadline and the operation's.
pub fn yield_at(work_until: Instant, operation_until: Instant, reserve: Duration) -> Instant {
    let end = work_until.min(operation_until);
    end.checked_sub(reserve).unwrap_or(end)
}

/// The next invocation's payload: the event as received, with the marker set.
pub fn next_payload(raw: &str, marker: Marker) -> Result<String, serde_json::Error> {
    let mut event: Value = serde_json::from_str(raw)?;
    if let Value::Object(map) = &mut event {
        map.insert(MARKER_FIELD.into(), serde_json::to_value(marker)?);
    }
    serde_json::to_string(&event)
}

/// The state of a chain, as its record holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The invocation whose turn it is.
    pub sequence: u32,
    /// `continuing` (sent, not yet started), `running` or `finished`.
    pub state: String,
    /// True when the backend that claimed the turn is still connected.
    pub runner_alive: bool,
}

/// Whether an invocation runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Its turn: it runs.
    Run,
    /// A copy (duplicate, late or retried after someone else took over): it
    /// ends without answering; the text says why.
    Skip(String),
    /// Its record is missing: the chain cannot be trusted; answer FAILED.
    Lost(String),
}

/// Decides whether invocation `sequence` of a request runs, given its record.
pub fn decide(row: Option<&Row>, sequence: u32) -> Claim {
    match (row, sequence) {
        (None, 0) => Claim::Run,
        (None, n) => Claim::Lost(format!(
            "continuation {n} finds no record of its chain in {TABLE}: the table or its row was removed \
             while the deploy ran; deploy again"
        )),
        (Some(r), 0) => Claim::Skip(format!(
            "this request already continues (invocation {}, {}): this copy of CloudFormation's event is ignored",
            r.sequence, r.state
        )),
        (Some(r), _) if r.state == "finished" => {
            Claim::Skip("the chain already answered CloudFormation".into())
        }
        (Some(r), n) if r.sequence != n => Claim::Skip(format!(
            "invocation {} has the turn: continuation {n} is a late or duplicate copy",
            r.sequence
        )),
        (Some(r), n) if r.state == "running" && r.runner_alive => Claim::Skip(format!(
            "continuation {n} is already running in another invocation: this is a duplicate copy"
        )),
        (Some(_), _) => Claim::Run,
    }
}

/// Why a chain of invocations failed.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// Its record could not be read or written.
    #[error("{0}")]
    Record(#[from] RecordError),
    /// Its record is missing.
    #[error("{0}")]
    Lost(String),
    /// The next invocation could not be started.
    #[error(
        "could not start invocation {sequence} of this deploy's chain: {message}. The function's role needs \
         lambda:InvokeFunction on the function itself (the DbSetup construct grants it); applied so far: {applied}"
    )]
    Invoke {
        /// The invocation that was to start.
        sequence: u32,
        /// What Lambda said.
        message: String,
        /// Migrations applied by the chain so far (names), or "none".
        applied: String,
    },
    /// A continuation arrived after the operation's deadline.
    #[error(
        "invocation {sequence} of this deploy's chain started after the deploy's ServiceTimeout had passed: \
         nothing more was run. What was applied stays applied; deploy again to finish"
    )]
    Expired {
        /// The late invocation.
        sequence: u32,
    },
    /// The operation's deadline (`ServiceTimeout`) leaves no time for another invocation.
    #[error(
        "the deploy's time ran out: after {invocations} invocation(s), {left} migration(s) are left and \
         ServiceTimeout ends in {remaining_s}s, too little for another invocation. What was applied stays \
         applied; raise the resource's ServiceTimeout (at most 3600 s), or run the long migrations out of band \
         (docs/scale.md)"
    )]
    OutOfTime {
        /// Invocations so far, this one included.
        invocations: u32,
        /// Migrations left.
        left: usize,
        /// Seconds to the operation's deadline.
        remaining_s: u64,
    },
}

/// The chain's record in the database.
pub struct Record<'c> {
    client: &'c Client,
    request_id: &'c str,
}

/// A database error of the record, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{step} ({TABLE}): {error}")]
pub struct RecordError {
    /// What was being done.
    pub step: &'static str,
    /// What the server said.
    pub error: ServerError,
}

fn failed(step: &'static str) -> impl Fn(tokio_postgres::Error) -> RecordError {
    move |e| RecordError {
        step,
        error: ServerError::from_pg(&e),
    }
}

fn row_values(messages: &[SimpleQueryMessage]) -> Option<Vec<Option<String>>> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => {
            Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
        }
        _ => None,
    })
}

impl<'c> Record<'c> {
    /// The record of `request_id`'s chain.
    pub fn new(client: &'c Client, request_id: &'c str) -> Self {
        Record { client, request_id }
    }

    /// Claims invocation `sequence`'s turn (see [`decide`]), atomically: the
    /// row is locked while it is read and updated.
    pub async fn claim(&self, sequence: u32) -> Result<Claim, RecordError> {
        let id = literal(self.request_id);
        if sequence == 0 {
            // No row can exist unless a chain started: read without creating the table.
            let exists = self
                .client
                .simple_query(
                    "SELECT (to_regclass('public.db_setup_continuations') IS NOT NULL)::text",
                )
                .await
                .map_err(failed("reading the chain's record"))?;
            if row_values(&exists)
                .and_then(|v| v.into_iter().next().flatten())
                .as_deref()
                != Some("true")
            {
                return Ok(Claim::Run);
            }
            let sql = format!(
                "SELECT sequence::text || ' ' || state FROM {TABLE} WHERE request_id = {id}"
            );
            let messages = self
                .client
                .simple_query(&sql)
                .await
                .map_err(failed("reading the chain's record"))?;
            let row = row_values(&messages)
                .and_then(|v| v.into_iter().next().flatten())
                .and_then(|text| {
                    let (seq, state) = text.split_once(' ')?;
                    Some(Row {
                        sequence: seq.parse().ok()?,
                        state: state.to_string(),
                        runner_alive: false,
                    })
                });
            return Ok(decide(row.as_ref(), 0));
        }
        let read = format!(
            "BEGIN; SELECT sequence::text, state, \
             EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a \
                     WHERE a.pid = r.runner_pid AND a.backend_start = r.runner_started)::text \
             FROM {TABLE} r WHERE request_id = {id} FOR UPDATE"
        );
        let result = self.client.simple_query(&read).await;
        let messages = match result {
            Ok(m) => m,
            Err(e) => {
                let _ = self.client.simple_query("ROLLBACK").await;
                if ServerError::from_pg(&e).is(&crate::pg::SqlState::UNDEFINED_TABLE) {
                    return Ok(decide(None, sequence));
                }
                return Err(failed("reading the chain's record")(e));
            }
        };
        let row = row_values(&messages).map(|v| Row {
            sequence: v
                .first()
                .cloned()
                .flatten()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            state: v.get(1).cloned().flatten().unwrap_or_default(),
            runner_alive: v.get(2).cloned().flatten().as_deref() == Some("true"),
        });
        let claim = decide(row.as_ref(), sequence);
        let finish = if claim == Claim::Run {
            format!(
                "UPDATE {TABLE} SET state = 'running', runner_pid = pg_catalog.pg_backend_pid(), \
                 runner_started = (SELECT backend_start FROM pg_catalog.pg_stat_activity \
                                   WHERE pid = pg_catalog.pg_backend_pid()), updated = now() \
                 WHERE request_id = {id}; COMMIT"
            )
        } else {
            "ROLLBACK".to_string()
        };
        if let Err(e) = self.client.simple_query(&finish).await {
            let _ = self.client.simple_query("ROLLBACK").await;
            return Err(failed("claiming the chain's turn")(e));
        }
        Ok(claim)
    }

    /// Hands the turn to invocation `next` (before it is invoked). The
    /// first hand-over of a chain creates the table (DDL only then) and drops
    /// old chains' rows.
    pub async fn hand_over(&self, next: u32) -> Result<(), RecordError> {
        let id = literal(self.request_id);
        let create = if next == 1 {
            format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (request_id text PRIMARY KEY, sequence integer NOT NULL, \
                 state text NOT NULL, runner_pid integer, runner_started timestamptz, \
                 updated timestamptz NOT NULL DEFAULT now()); \
                 REVOKE ALL ON {TABLE} FROM PUBLIC; \
                 DELETE FROM {TABLE} WHERE updated < now() - interval '{KEEP_ROWS}'; "
            )
        } else {
            String::new()
        };
        let sql = format!(
            "{create}INSERT INTO {TABLE} (request_id, sequence, state) VALUES ({id}, {next}, 'continuing') \
             ON CONFLICT (request_id) DO UPDATE SET sequence = EXCLUDED.sequence, state = 'continuing', \
             runner_pid = NULL, runner_started = NULL, updated = now()"
        );
        self.client
            .simple_query(&sql)
            .await
            .map_err(failed("handing the chain over to the next invocation"))?;
        Ok(())
    }

    /// Marks the chain finished: later copies of its events end quietly.
    pub async fn finish(&self) -> Result<(), RecordError> {
        let sql = format!(
            "UPDATE {TABLE} SET state = 'finished', runner_pid = NULL, updated = now() \
             WHERE request_id = {}",
            literal(self.request_id)
        );
        self.client
            .simple_query(&sql)
            .await
            .map_err(failed("marking the chain finished"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sequence: u32, state: &str, alive: bool) -> Row {
        Row {
            sequence,
            state: state.into(),
            runner_alive: alive,
        }
    }

    #[test]
    fn the_first_invocation_runs_unless_a_chain_exists() {
        assert_eq!(decide(None, 0), Claim::Run);
        assert!(matches!(
            decide(Some(&row(1, "continuing", false)), 0),
            Claim::Skip(s) if s.contains("already continues")
        ));
    }

    #[test]
    fn a_continuation_runs_on_its_turn_or_after_its_runner_died() {
        assert_eq!(decide(Some(&row(2, "continuing", false)), 2), Claim::Run);
        assert_eq!(decide(Some(&row(2, "running", false)), 2), Claim::Run);
    }

    #[test]
    fn duplicates_late_copies_and_finished_chains_are_skipped() {
        for (r, n) in [
            (row(2, "running", true), 2),
            (row(3, "continuing", false), 2),
            (row(3, "running", true), 1),
            (row(2, "finished", false), 2),
            (row(1, "continuing", false), 2),
        ] {
            assert!(matches!(decide(Some(&r), n), Claim::Skip(_)), "{r:?} / {n}");
        }
    }

    #[test]
    fn a_continuation_without_a_record_fails() {
        assert!(matches!(decide(None, 3), Claim::Lost(s) if s.contains("continuation 3")));
    }

    #[test]
    fn the_next_payload_is_the_event_with_the_marker() {
        let raw = r#"{"RequestType":"Create","ResourceProperties":{"A":"1"},"DbSetupContinuation":{"Sequence":1,"DeadlineMs":5}}"#;
        let next = Chain {
            sequence: 1,
            deadline_ms: 5,
            before: Some(3),
            record: true,
            yield_at: None,
        }
        .next(3);
        let out: Value = serde_json::from_str(&next_payload(raw, next).unwrap()).unwrap();
        assert_eq!(out["RequestType"], "Create");
        assert_eq!(out["ResourceProperties"]["A"], "1");
        assert_eq!(
            out[MARKER_FIELD],
            serde_json::json!({"Sequence": 2, "DeadlineMs": 5, "Before": 3})
        );
        assert!(next_payload("not json", next).is_err());
    }

    #[test]
    fn deadlines() {
        assert_eq!(
            operation_deadline(1_000, Some(Duration::from_secs(60))),
            61_000
        );
        assert_eq!(operation_deadline(0, None), 3_600_000);
        let now = Instant::now();
        let work = now + Duration::from_secs(100);
        let op = now + Duration::from_secs(50);
        assert_eq!(
            yield_at(work, op, Duration::from_secs(20)),
            now + Duration::from_secs(30)
        );
        assert_eq!(
            yield_at(op, work, Duration::from_secs(20)),
            now + Duration::from_secs(30)
        );
    }
}
