//! Runs a plan against PostgreSQL: the lock, the history table, the
//! transactions, retries on `lock_timeout`, and the run report.
//!
//! Round trips: a no-op run costs three after connecting (lock + table
//! check, history read, unlock). A run with work adds two for a whole batch
//! in `batch` mode (every migration of it pipelined, then its history rows
//! and COMMIT), one per migration in `each` mode, and for a no-transaction
//! file one per statement plus three (timeouts and invalid indexes before
//! it, the same after it, its history row).
//!
//! Guards: a transaction carries a marker (`db_setup.batch`, local to it)
//! that every migration's query and the history write check, so a COMMIT
//! the statement lexer missed never gets history rows nor a partial batch
//! committed silently; a failed transaction's fate is asked of the server.
//! After a no-transaction file, only the invalid indexes it left stop it
//! from being recorded.

use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};
use tracing::{info, warn};

use super::MigrationSet;
use super::error::{MigrateError, MigrationFailure, RanAs, TransactionFate};
use super::history::{self, TableState};
use super::lock;
use super::options::RunOptions;
use super::parse::{Migration, Phase};
use super::plan::{self, Plan, Step, steps};
use super::report::{AppliedStep, RunReport};
use super::sql;
use crate::db::pipeline;
use crate::duration::pg_setting;
use crate::pg::{ServerError, SqlState};

/// The setting that marks a batch's own transaction: set with `SET LOCAL`
/// semantics right after BEGIN, so it is gone as soon as that transaction
/// ends, whatever ended it (a COMMIT, END or ROLLBACK inside a migration
/// that the statement splitter did not see).
const BATCH_MARKER: &str = "db_setup.batch";

/// The setting a guard asks for when the marker is gone: no such setting
/// exists, so the guard fails with "unrecognized configuration parameter".
const MARKER_LOST: &str = "db_setup.batch_marker_lost";

/// A token for one transaction: unique in this process, and never the
/// empty value the marker takes back when its transaction ends.
fn batch_token() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Sets the marker and returns the transaction's id (for [`Migrator::fate`]).
fn mark_sql(token: &str) -> String {
    format!(
        "SELECT pg_catalog.set_config('{BATCH_MARKER}', {}, true), pg_catalog.txid_current()",
        crate::pg::literal(token)
    )
}

/// Fails unless the marker of `token` is still set: the statement is still
/// in the batch's own transaction. Appended to every query of a batch, in
/// the same simple query, so after a hidden COMMIT it rolls back the rest of
/// that query (which then runs in an implicit transaction of its own) and
/// keeps the history rows from being written.
fn guard_sql(token: &str) -> String {
    format!(
        "SELECT CASE WHEN pg_catalog.current_setting('{BATCH_MARKER}', true) = {} THEN 'in batch' \
         ELSE pg_catalog.current_setting('{MARKER_LOST}') END",
        crate::pg::literal(token)
    )
}

/// True when `error` is a guard's: the batch's transaction had ended.
fn is_guard_error(error: &ServerError) -> bool {
    error.is(&SqlState::UNDEFINED_OBJECT) && error.message.contains(MARKER_LOST)
}

/// The invalid indexes: qualified name, name, oid, and whether another
/// session is building an index on its table right now (a concurrent
/// `CREATE INDEX` or `REINDEX`, whose `_ccnew` index is invalid meanwhile).
const INVALID_INDEXES_SQL: &str = "SELECT format('%I.%I', n.nspname, c.relname), c.relname, c.oid::text, \
     EXISTS (SELECT 1 FROM pg_catalog.pg_stat_progress_create_index p \
             WHERE p.relid = i.indrelid AND p.pid <> pg_catalog.pg_backend_pid()) \
     FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE NOT i.indisvalid ORDER BY 1";

/// One row of [`INVALID_INDEXES_SQL`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct InvalidIndex {
    qualified: String,
    name: String,
    oid: String,
    built_by_another_session: bool,
}

fn invalid_index_rows(messages: &[SimpleQueryMessage]) -> Vec<InvalidIndex> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(InvalidIndex {
                qualified: r.get(0)?.to_string(),
                name: r.get(1)?.to_string(),
                oid: r.get(2)?.to_string(),
                built_by_another_session: r.get(3) == Some("t"),
            }),
            _ => None,
        })
        .collect()
}

/// The invalid indexes a no-transaction migration is answerable for: those
/// that appeared while it ran, and older ones it names (a leftover that its
/// `CREATE INDEX CONCURRENTLY IF NOT EXISTS` would skip over). Not those
/// another session is building at this moment, nor unrelated old ones.
fn indexes_left_by(m: &Migration, before: &[InvalidIndex], after: &[InvalidIndex]) -> Vec<String> {
    let names = sql::mentioned_names(m.sql());
    after
        .iter()
        .filter(|i| !i.built_by_another_session)
        .filter(|i| !before.iter().any(|b| b.oid == i.oid) || names.contains(&i.name))
        .map(|i| i.qualified.clone())
        .collect()
}

fn first_column(messages: &[SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Applies migrations over one connection.
pub struct Migrator<'c> {
    pub(super) client: &'c Client,
    pub(super) options: RunOptions,
}

impl<'c> Migrator<'c> {
    /// A migrator over `client` with `options`.
    pub fn new(client: &'c Client, options: RunOptions) -> Self {
        Migrator { client, options }
    }

    fn session_timeouts(
        &self,
        scope: &str,
        lock_timeout: Duration,
        statement_timeout: Duration,
    ) -> String {
        format!(
            "SET {scope}lock_timeout = {}; SET {scope}statement_timeout = {}",
            pg_setting(lock_timeout),
            pg_setting(statement_timeout)
        )
    }

    fn effective_timeouts(&self, m: &Migration) -> (Duration, Duration) {
        (
            m.directives
                .lock_timeout
                .unwrap_or(self.options.lock_timeout),
            m.directives
                .statement_timeout
                .unwrap_or(self.options.statement_timeout),
        )
    }

    /// Applies the pending migrations of `set` under the advisory lock, which
    /// is released on every path (and by the server if the connection drops).
    pub async fn migrate(&self, set: &MigrationSet) -> Result<RunReport, MigrateError> {
        let started = Instant::now();
        let (table, waited) = self.acquire_lock().await?;
        let result = self.migrate_locked(set, table, waited, started).await;
        match self.client.simple_query(&lock::unlock_sql()).await {
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "could not release the migration lock; the server releases it when the session ends")
            }
        }
        result
    }

    /// Takes the lock (polling `pg_try_advisory_lock` until `lock_wait`) and
    /// reads the history table's state in the same round trip.
    pub(super) async fn acquire_lock(&self) -> Result<(TableState, Duration), MigrateError> {
        let probe = format!(
            "SELECT {}, {}",
            lock::try_lock_expr(),
            history::STATE_COLUMNS
        );
        // The first try also sets the session's timeouts: no round trip of its own.
        let first = format!(
            "{}; {probe}",
            self.session_timeouts(
                "",
                self.options.lock_timeout,
                self.options.statement_timeout
            )
        );
        let mut query = &first;
        let polled = lock::poll(self.options.lock_wait, || {
            let sql = query.clone();
            query = &probe;
            async move {
                let messages = self
                    .client
                    .simple_query(&sql)
                    .await
                    .map_err(|e| MigrateError::database("taking the migration lock", &e))?;
                Ok::<_, MigrateError>(messages.iter().find_map(|m| match m {
                    SimpleQueryMessage::Row(r) if r.get(0) == Some("t") => {
                        Some(TableState::from_flags(r.get(1), r.get(2)))
                    }
                    _ => None,
                }))
            }
        })
        .await?;
        match polled {
            lock::Polled::Taken(table, waited) => {
                info!(waited_ms = millis(waited), "migration lock taken");
                Ok((table, waited))
            }
            lock::Polled::TimedOut(waited) => Err(MigrateError::LockTimeout {
                waited,
                holder: lock::holder(self.client, lock::KEY).await.ok().flatten(),
            }),
        }
    }

    async fn migrate_locked(
        &self,
        set: &MigrationSet,
        table: TableState,
        waited: Duration,
        started: Instant,
    ) -> Result<RunReport, MigrateError> {
        let mut prepare = history::prepare_statements(table);
        prepare.push(history::select_sql(TableState::Tracked));
        let applied = self.read_prepared(&prepare).await?;
        let plan = plan::plan(&applied, set.migrations(), self.options.up_to.as_deref())?
            .in_phase(self.options.phase);
        info!(
            already_applied = plan.already_applied,
            to_run = plan.to_run.len(),
            held_back = plan.held_back.len(),
            waits_for_contract = plan.waits_for_contract.len(),
            phase = self.options.phase.map(Phase::as_str),
            "plan ready"
        );

        if let Some(sql) = history::adopt_sql(&plan.adopt) {
            self.client.simple_query(&sql).await.map_err(|e| {
                MigrateError::database("recording checksums of node-pg-migrate rows", &e)
            })?;
            info!(
                rows = plan.adopt.len(),
                "recorded checksums of rows written by node-pg-migrate"
            );
        }

        let (applied_steps, left_for_next) = self.run_steps(&plan).await?;
        let last_migration = applied_steps
            .last()
            .map(|s| s.name.clone())
            .or_else(|| applied.last().map(|r| r.name.clone()));
        let report = RunReport {
            mode: self.options.mode,
            applied: applied_steps,
            already_applied: plan.already_applied,
            pending: plan.held_back.iter().map(|m| m.name.clone()).collect(),
            phase: self.options.phase,
            waits_for_contract: plan
                .waits_for_contract
                .iter()
                .map(|m| m.name.clone())
                .collect(),
            left_for_next,
            adopted_checksums: plan.adopt.iter().map(|a| a.name.clone()).collect(),
            last_migration,
            lock_wait_ms: millis(waited),
            total_ms: millis(started.elapsed()),
        };
        info!(
            applied = report.applied.len(),
            already_applied = report.already_applied,
            duration_ms = report.total_ms,
            "migrations done"
        );
        Ok(report)
    }

    /// Runs `statements` (table preparation, ending with a history read)
    /// in one round trip and reads the history rows.
    pub(super) async fn read_prepared(
        &self,
        statements: &[String],
    ) -> Result<Vec<super::plan::AppliedMigration>, MigrateError> {
        let messages = self
            .client
            .simple_query(&statements.join("; "))
            .await
            .map_err(|e| MigrateError::database("reading pgmigrations", &e))?;
        Ok(history::read_rows(&messages)?)
    }

    /// Runs the plan's units in order; stops before a unit once the run's
    /// [`RunOptions::yield_at`] has passed (after at least one unit, so that
    /// every invocation of a chain makes progress) and returns what is left.
    async fn run_steps(
        &self,
        plan: &Plan<'_>,
    ) -> Result<(Vec<AppliedStep>, Vec<String>), MigrateError> {
        let mut done: Vec<AppliedStep> = Vec::new();
        let units = steps(&plan.to_run, self.options.mode);
        for (index, step) in units.iter().enumerate() {
            if index > 0 && self.options.yield_at.is_some_and(|at| Instant::now() >= at) {
                let left: Vec<String> = units[index..]
                    .iter()
                    .flat_map(Step::migrations)
                    .map(|m| m.name.clone())
                    .collect();
                info!(
                    applied = done.len(),
                    left = left.len(),
                    "this invocation's time for new work is over: the rest is left for the next one"
                );
                return Ok((done, left));
            }
            let result = match step {
                Step::Transaction(batch) => self.with_retries(|| self.run_transaction(batch)).await,
                Step::NoTransaction(m) => self.run_outside(m).await,
            };
            match result {
                Ok(mut steps) => done.append(&mut steps),
                Err(StepError::Failed(mut failure)) => {
                    failure.kept = done.iter().map(|s| s.name.clone()).collect();
                    warn!(error = %failure, "migration failed");
                    return Err(MigrateError::Migration(failure));
                }
                Err(StepError::Other(e)) => return Err(e),
            }
        }
        Ok((done, Vec::new()))
    }

    /// Retries `attempt` after a `lock_timeout`, with a doubling pause.
    async fn with_retries<'a, F, Fut>(
        &'a self,
        mut attempt: F,
    ) -> Result<Vec<AppliedStep>, StepError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<AppliedStep>, StepError>> + 'a,
    {
        let mut pause = self.options.retry_pause;
        let mut tries = 1;
        loop {
            match attempt().await {
                Err(StepError::Failed(mut f)) if f.error.is_lock_timeout() => {
                    if tries > self.options.lock_retries {
                        f.attempts = tries;
                        return Err(StepError::Failed(f));
                    }
                    warn!(
                        migration = f.migration.as_deref().unwrap_or(""),
                        attempt = tries,
                        pause_ms = millis(pause),
                        "lock_timeout: retrying"
                    );
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// One transaction, pipelined: BEGIN, each migration's SQL as one query.
    /// A lone migration carries its history row in the same query (measured
    /// by the server) and COMMIT follows in the same round trip. Several
    /// migrations get their rows in one INSERT sent with COMMIT once they all
    /// succeeded (a second round trip), each timed by the gap between its
    /// answer and the previous one: the server runs them back to back.
    ///
    /// The batch marker: BEGIN sets [`BATCH_MARKER`], and every migration's
    /// query ends with a guard ([`guard_sql`]) that fails once the marker is
    /// gone, as does the history write. So a transaction ended inside a
    /// migration never gets history rows, what follows it is rolled back, and
    /// the failure says what the server kept ([`Migrator::fate`]).
    async fn run_transaction(&self, batch: &[&Migration]) -> Result<Vec<AppliedStep>, StepError> {
        let started = Instant::now();
        let inline = batch.len() == 1;
        let defaults = (self.options.lock_timeout, self.options.statement_timeout);
        let token = batch_token();
        let guard = guard_sql(&token);
        let mut queries = vec![format!(
            "BEGIN; {}; {}",
            mark_sql(&token),
            self.session_timeouts("LOCAL ", defaults.0, defaults.1)
        )];
        // For each query, the migration it belongs to.
        let mut owner: Vec<Option<usize>> = vec![None];
        let mut migration_query = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            let timeouts = self.effective_timeouts(m);
            let overridden = timeouts != defaults;
            if overridden {
                queries.push(self.session_timeouts("LOCAL ", timeouts.0, timeouts.1));
                owner.push(Some(i));
            }
            queries.push(if inline {
                format!(
                    "{}\n;\n{guard};\n{}",
                    m.sql(),
                    history::insert_measured_sql(m)
                )
            } else {
                format!("{}\n;\n{guard}", m.sql())
            });
            owner.push(Some(i));
            migration_query.push(queries.len() - 1);
            if overridden {
                queries.push(self.session_timeouts("LOCAL ", defaults.0, defaults.1));
                owner.push(Some(i));
            }
        }
        if inline {
            queries.push("COMMIT".into());
            owner.push(None);
        }

        let results = pipeline(self.client, &queries).await;
        // The transaction's id, read from the answer to BEGIN's query.
        let xid = results
            .first()
            .and_then(|(r, _)| r.as_ref().ok())
            .and_then(|messages| history::last_value(messages))
            .and_then(|v| v.parse::<u64>().ok());
        if let Some((index, error)) = results
            .iter()
            .enumerate()
            .find_map(|(i, (r, _))| r.as_ref().err().map(|e| (i, ServerError::from_pg(e))))
        {
            let failed = owner.get(index).copied().flatten().map(|i| batch[i]);
            return Err(self.transaction_failed(batch, failed, error, xid).await);
        }
        let mut steps = Vec::with_capacity(batch.len());
        for (m, &q) in batch.iter().zip(&migration_query) {
            let (answer, answered_at) = &results[q];
            let execution_ms = if inline {
                answer
                    .as_ref()
                    .ok()
                    .and_then(|messages| history::last_value(messages))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0)
            } else {
                let previous = results[q - 1].1;
                (answered_at
                    .saturating_duration_since(previous)
                    .as_secs_f64()
                    * 1e6)
                    .round()
                    / 1e3
            };
            info!(migration = %m.name, execution_ms, "applied");
            steps.push(AppliedStep {
                name: m.name.clone(),
                execution_ms,
                no_transaction: false,
            });
        }
        if !inline {
            let rows: Vec<(&Migration, f64)> = batch
                .iter()
                .copied()
                .zip(steps.iter().map(|s| s.execution_ms))
                .collect();
            let finish = [
                format!("{guard};\n{}", history::insert_sql(&rows)),
                "COMMIT".to_string(),
            ];
            if let Some(error) = pipeline(self.client, &finish)
                .await
                .iter()
                .find_map(|(r, _)| r.as_ref().err().map(ServerError::from_pg))
            {
                return Err(self.transaction_failed(batch, None, error, xid).await);
            }
        }
        info!(
            migrations = batch.len(),
            duration_ms = millis(started.elapsed()),
            "transaction committed"
        );
        Ok(steps)
    }

    /// Closes a failed transaction and describes the failure with what the
    /// server kept of it; `failed` is the migration at fault, `None` for the
    /// history write or the COMMIT.
    async fn transaction_failed(
        &self,
        batch: &[&Migration],
        failed: Option<&Migration>,
        error: ServerError,
        xid: Option<u64>,
    ) -> StepError {
        let ended_inside = failed.filter(|_| is_guard_error(&error));
        let fate = self.fate(xid).await;
        let names = |ms: &[&Migration]| ms.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
        // Where the transaction ended, when a statement inside it committed it:
        // inside the migration whose guard failed, or else the one that failed after it.
        let split_at = match fate {
            TransactionFate::Committed => ended_inside
                .or(failed)
                .and_then(|by| batch.iter().position(|m| m.name == by.name)),
            _ => None,
        };
        let (committed, rolled_back) = match (&fate, split_at) {
            (TransactionFate::RolledBack, _) => (Vec::new(), names(batch)),
            (TransactionFate::Committed, Some(at)) => {
                (names(&batch[..at]), names(&batch[at + 1..]))
            }
            _ => (Vec::new(), Vec::new()),
        };
        let timeouts = failed
            .map(|m| self.effective_timeouts(m))
            .unwrap_or((self.options.lock_timeout, self.options.statement_timeout));
        StepError::Failed(Box::new(MigrationFailure {
            migration: failed.map(|m| m.name.clone()),
            location: failed
                .filter(|_| ended_inside.is_none())
                .zip(error.position)
                .map(|(m, p)| m.location_of_error(0, p)),
            statement: None,
            error,
            ran_as: self.options.mode.into(),
            transaction: Some(fate),
            ended_inside: ended_inside.map(|m| m.name.clone()),
            rolled_back,
            committed,
            kept: Vec::new(),
            invalid_indexes: Vec::new(),
            attempts: 1,
            timeouts,
        }))
    }

    /// Rolls back what is left of a failed transaction (a pipelined COMMIT
    /// may already have) and asks the server what became of it: rolled back,
    /// or committed by a statement inside it.
    async fn fate(&self, xid: Option<u64>) -> TransactionFate {
        let Some(xid) = xid else {
            let _ = self.client.simple_query("ROLLBACK").await;
            return TransactionFate::Unchecked("its transaction id was not read".into());
        };
        let sql = format!("ROLLBACK; SELECT pg_catalog.txid_status({xid})");
        match self.client.simple_query(&sql).await {
            Ok(messages) => match history::last_value(&messages) {
                Some("aborted") => TransactionFate::RolledBack,
                Some("committed") => TransactionFate::Committed,
                other => TransactionFate::Unchecked(format!(
                    "the server reports its status as {}",
                    other.unwrap_or("unknown")
                )),
            },
            Err(e) => TransactionFate::Unchecked(ServerError::from_pg(&e).message),
        }
    }

    /// A no-transaction migration: each statement on its own (autocommit),
    /// in order; the history row only after all succeed and no index it is
    /// answerable for is left invalid ([`indexes_left_by`]: the invalid
    /// indexes are read before and after it).
    async fn run_outside(&self, m: &Migration) -> Result<Vec<AppliedStep>, StepError> {
        let started = Instant::now();
        let (lock_timeout, statement_timeout) = self.effective_timeouts(m);
        // The timeouts and the invalid indexes before it, in one round trip.
        let set = format!(
            "{}; {INVALID_INDEXES_SQL}",
            self.session_timeouts("", lock_timeout, statement_timeout)
        );
        let before = invalid_index_rows(&self.client.simple_query(&set).await.map_err(|e| {
            StepError::Other(MigrateError::database(
                "setting timeouts and reading invalid indexes",
                &e,
            ))
        })?);
        let result = self
            .run_statements(m, (lock_timeout, statement_timeout))
            .await;
        let restore = format!(
            "{}; {INVALID_INDEXES_SQL}",
            self.session_timeouts(
                "",
                self.options.lock_timeout,
                self.options.statement_timeout
            )
        );
        let after = self.client.simple_query(&restore).await;
        if let Err(e) = &after {
            warn!(error = %e, "could not restore the session timeouts");
        }
        if let Err(StepError::Failed(mut failure)) = result {
            if let Ok(after) = &after {
                failure.invalid_indexes = indexes_left_by(m, &before, &invalid_index_rows(after));
            }
            return Err(StepError::Failed(failure));
        }
        result?;

        let after = after.map_err(|e| {
            StepError::Other(MigrateError::database("checking for invalid indexes", &e))
        })?;
        let invalid = indexes_left_by(m, &before, &invalid_index_rows(&after));
        if !invalid.is_empty() {
            return Err(StepError::Other(MigrateError::InvalidIndexes {
                migration: m.name.clone(),
                indexes: invalid,
            }));
        }
        // Microsecond precision, like the server-measured values.
        let execution_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        self.client
            .simple_query(&history::insert_sql(&[(m, execution_ms)]))
            .await
            .map_err(|e| {
                StepError::Other(MigrateError::database(
                    "recording a no-transaction migration",
                    &e,
                ))
            })?;
        info!(migration = %m.name, execution_ms, "applied outside a transaction");
        Ok(vec![AppliedStep {
            name: m.name.clone(),
            execution_ms,
            no_transaction: true,
        }])
    }

    async fn run_statements(
        &self,
        m: &Migration,
        timeouts: (Duration, Duration),
    ) -> Result<(), StepError> {
        for (n, (offset, text)) in m.statement_texts().enumerate() {
            let text = text.to_string();
            let run = || async {
                self.client
                    .simple_query(&text)
                    .await
                    .map(|_| Vec::new())
                    .map_err(|e| {
                        let error = ServerError::from_pg(&e);
                        StepError::Failed(Box::new(MigrationFailure {
                            migration: Some(m.name.clone()),
                            location: error.position.map(|p| m.location_of_error(offset, p)),
                            statement: Some(n + 1),
                            error,
                            ran_as: RanAs::NoTransaction,
                            transaction: None,
                            ended_inside: None,
                            rolled_back: Vec::new(),
                            committed: Vec::new(),
                            kept: Vec::new(),
                            invalid_indexes: Vec::new(),
                            attempts: 1,
                            timeouts,
                        }))
                    })
            };
            self.with_retries(run).await?;
        }
        Ok(())
    }

    /// Every invalid index of the database (for `status`).
    pub(super) async fn invalid_indexes(&self) -> Result<Vec<String>, tokio_postgres::Error> {
        Ok(first_column(
            &self.client.simple_query(INVALID_INDEXES_SQL).await?,
        ))
    }
}

/// A step's failure: a migration's (retryable on lock timeout) or another.
enum StepError {
    Failed(Box<MigrationFailure>),
    Other(MigrateError),
}

#[cfg(test)]
mod tests {
    use super::super::parse::test_set as set;
    use super::*;

    #[test]
    fn a_no_transaction_file_answers_for_new_invalid_indexes_and_those_it_names() {
        let ms = set(&[(
            "002_idx.sql",
            "-- db-setup: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS Mine_X ON t (x);\nREINDEX INDEX CONCURRENTLY \"Quoted\"\"Idx\";",
        )]);
        let index = |name: &str, oid: &str, building: bool| InvalidIndex {
            qualified: format!("s.{name}"),
            name: name.into(),
            oid: oid.into(),
            built_by_another_session: building,
        };
        let before = [
            index("old_unrelated", "1", false),
            index("mine_x", "2", false),
            index("Quoted\"Idx", "3", false),
        ];
        let after = [
            index("old_unrelated", "1", false),
            index("mine_x", "2", false),
            index("Quoted\"Idx", "3", false),
            index("new_one", "4", false),
            index("t_x_ccnew", "5", true),
        ];
        assert_eq!(
            indexes_left_by(&ms[0], &before, &after),
            ["s.mine_x", "s.Quoted\"Idx", "s.new_one"]
        );
    }
}
