//! Why a run failed, with what remains and what to do next.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::history::UnreadableRow;
use super::lock::{KEY, LockHolder};
use super::parse::{Location, SourceErrors};
use super::plan::PlanError;
use crate::pg::{ServerError, SqlState};

impl Serialize for Location {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Location", 2)?;
        st.serialize_field("line", &self.line)?;
        st.serialize_field("column", &self.column)?;
        st.end()
    }
}

/// What became of a failed transaction, asked of the server after the
/// failure (`txid_status` of the transaction's id), never assumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionFate {
    /// The server rolled it back: nothing of it remains.
    RolledBack,
    /// The server committed it, though db-setup did not: a statement inside
    /// the batch (a COMMIT the statement splitter did not see) ended it.
    Committed,
    /// It could not be asked (the connection was lost, ...): why.
    Unchecked(String),
}

/// How a failed migration ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RanAs {
    /// In the run's one transaction (`DB_SETUP_TRANSACTION_MODE=batch`).
    Batch,
    /// In a transaction of its own (`each`).
    Each,
    /// Outside any transaction (`-- db-setup: no-transaction`).
    NoTransaction,
}

impl From<super::options::TransactionMode> for RanAs {
    fn from(mode: super::options::TransactionMode) -> Self {
        match mode {
            super::options::TransactionMode::Batch => RanAs::Batch,
            super::options::TransactionMode::Each => RanAs::Each,
        }
    }
}

/// A migration that failed, and the state it left.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationFailure {
    /// The migration; `None` when the transaction itself failed (at COMMIT).
    pub migration: Option<String>,
    /// Where in the file, when PostgreSQL gave a position.
    pub location: Option<Location>,
    /// For a file run outside a transaction: which statement (from 1).
    pub statement: Option<usize>,
    /// What PostgreSQL said.
    pub error: ServerError,
    /// How the failed migration ran.
    pub ran_as: RanAs,
    /// For a transaction: what the server says became of it. `None` for a
    /// file run outside a transaction.
    pub transaction: Option<TransactionFate>,
    /// The migration inside which the batch's transaction ended: the batch
    /// marker was gone after it (a COMMIT or ROLLBACK the splitter did not see).
    pub ended_inside: Option<String>,
    /// Of its batch, checked: nothing of these remains.
    pub rolled_back: Vec<String>,
    /// Of its batch, checked: committed by a statement inside the batch,
    /// WITHOUT their history rows (the migrations before `ended_inside`).
    pub committed: Vec<String>,
    /// Applied and committed earlier in this run; they stay applied.
    pub kept: Vec<String>,
    /// Invalid indexes in the database after the failure (a failed
    /// `CREATE INDEX CONCURRENTLY` leaves one).
    pub invalid_indexes: Vec<String>,
    /// How many times it was tried (lock timeouts are retried).
    pub attempts: u32,
    /// The run's timeouts, for the advice.
    #[serde(skip)]
    pub timeouts: (Duration, Duration),
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

impl MigrationFailure {
    /// What remains of the failed transaction, as checked on the server.
    fn describe_transaction(
        &self,
        f: &mut fmt::Formatter<'_>,
        fate: &TransactionFate,
    ) -> fmt::Result {
        match fate {
            TransactionFate::RolledBack => {
                if let Some(by) = &self.ended_inside {
                    write!(
                        f,
                        "Its transaction was ended inside {by} by a statement db-setup's statement splitter did not see (a ROLLBACK or similar); checked: the server rolled it back. "
                    )?;
                }
                match self.rolled_back.as_slice() {
                    [] | [_] => write!(f, "Nothing of it was kept.")?,
                    all => write!(
                        f,
                        "Nothing of its batch was kept (rolled back: {}).",
                        all.join(", ")
                    )?,
                }
                match &self.ended_inside {
                    Some(by) => write!(
                        f,
                        " Remove the transaction control from {by} and deploy again."
                    ),
                    None => Ok(()),
                }
            }
            TransactionFate::Committed => {
                let by = self.ended_inside.as_deref().or(self.migration.as_deref());
                let mut kept = self.committed.clone();
                match by {
                    Some(by) => {
                        write!(
                            f,
                            "Its transaction was committed by a statement inside {by}"
                        )?;
                        kept.push(format!("{by} (up to that statement)"));
                    }
                    None => write!(f, "Its transaction was committed by a statement inside it")?,
                }
                write!(
                    f,
                    " (a COMMIT, END or similar that db-setup's statement splitter did not see, e.g. a backslash in a string with standard_conforming_strings off), not by db-setup: "
                )?;
                match kept.as_slice() {
                    [] => write!(
                        f,
                        "what ran before that statement stays applied WITHOUT history rows, so the next run would run it again."
                    )?,
                    [one] => write!(
                        f,
                        "{one} stays applied WITHOUT its history row, so the next run would run it again."
                    )?,
                    all => write!(
                        f,
                        "{} stay applied WITHOUT history rows, so the next run would run them again.",
                        and_list(all)
                    )?,
                }
                if !self.rolled_back.is_empty() {
                    write!(
                        f,
                        " What ran after it was rolled back: {} left nothing.",
                        and_list(&self.rolled_back)
                    )?;
                }
                write!(
                    f,
                    " Remove the transaction control from {}, and make what stays applied safe to run again (or undo it by hand) before deploying again.",
                    by.unwrap_or("the file")
                )
            }
            TransactionFate::Unchecked(reason) => write!(
                f,
                "db-setup did not commit its transaction ({}), and the server rolls back what is not committed; whether a statement inside it committed could not be checked ({reason}).",
                self.batch_names().join(", ")
            ),
        }
    }

    /// Every migration of the failed transaction.
    fn batch_names(&self) -> Vec<String> {
        let mut all = self.committed.clone();
        all.extend(self.ended_inside.clone());
        all.extend(self.rolled_back.iter().cloned());
        if all.is_empty() {
            all.extend(self.migration.clone());
        }
        all
    }
}

impl fmt::Display for MigrationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.migration, &self.ended_inside) {
            (_, Some(by)) => write!(
                f,
                "migration {by} ended the transaction db-setup runs it in (its batch marker was gone after it). "
            )?,
            (Some(name), None) => write!(f, "migration {name} failed")?,
            (None, None) => write!(f, "the migration transaction failed at COMMIT")?,
        }
        if self.ended_inside.is_none() {
            if let Some(n) = self.statement {
                write!(f, " in statement {n}")?;
            }
            if let Some(l) = self.location {
                write!(f, " at {l}")?;
            }
            write!(f, ": {}", self.error)?;
            if self.attempts > 1 {
                write!(f, " (after {} attempts)", self.attempts)?;
            }
            write!(f, ". ")?;
        }
        match &self.transaction {
            None => write!(
                f,
                "It ran outside a transaction: statements before the failing one stay done; it is not recorded and runs again from its first statement next time."
            )?,
            Some(fate) => self.describe_transaction(f, fate)?,
        }
        if !self.kept.is_empty() {
            write!(
                f,
                " Applied earlier in this run and kept: {}.",
                self.kept.join(", ")
            )?;
        }
        if !self.invalid_indexes.is_empty() {
            write!(
                f,
                " Invalid index(es) left: {}; drop them (DROP INDEX CONCURRENTLY) or start the migration with DROP INDEX CONCURRENTLY IF EXISTS.",
                self.invalid_indexes.join(", ")
            )?;
        }
        if self.ended_inside.is_some() {
            return Ok(());
        }
        let (lock_timeout, statement_timeout) = self.timeouts;
        let error = &self.error;
        let advice = if error.is(&SqlState::LOCK_NOT_AVAILABLE) {
            format!(
                " Another session held a lock this migration needs for longer than lock_timeout ({}ms): find it in pg_locks/pg_stat_activity, or deploy when it is idle.",
                lock_timeout.as_millis()
            )
        } else if error.is(&SqlState::QUERY_CANCELED) {
            format!(
                " The statement ran longer than statement_timeout ({}ms) or was cancelled: raise DB_SETUP_STATEMENT_TIMEOUT, or put `-- db-setup: statement-timeout=<duration>` at the top of the file.",
                statement_timeout.as_millis()
            )
        } else if error.is(&SqlState::OUT_OF_MEMORY) {
            " One transaction took more locks than the server's lock table holds \
                (each table a migration creates or alters is one): use DB_SETUP_TRANSACTION_MODE=each for this \
                deploy, or raise max_locks_per_transaction."
                .into()
        } else if error.code.is_none() {
            " The database connection was lost; check the database, then deploy again.".into()
        } else {
            " Fix the SQL (in a new migration if this one was applied elsewhere) and deploy again."
                .into()
        };
        f.write_str(&advice)
    }
}

/// Why a migrate or status call failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The migration files are invalid.
    #[error(transparent)]
    Source(#[from] SourceErrors),
    /// Another run holds the advisory lock.
    #[error(
        "another migration is already running: the advisory lock {KEY} is held{} and was not released within {}s; wait for it to finish, or if that session is stuck end it with pg_terminate_backend(pid)",
        .holder.as_ref().map(|h| format!(" by {h}")).unwrap_or_default(),
        .waited.as_secs()
    )]
    LockTimeout {
        /// How long this run waited.
        waited: Duration,
        /// Who holds it, if visible.
        holder: Option<LockHolder>,
    },
    /// The history and the files disagree.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A migration failed.
    #[error("{0}")]
    Migration(Box<MigrationFailure>),
    /// A migration outside a transaction left invalid indexes behind.
    #[error(
        "migration {migration} completed but the database has invalid index(es) {}: a concurrent index build failed or was skipped over by IF NOT EXISTS; drop them with DROP INDEX CONCURRENTLY and deploy again. The migration was not recorded.",
        .indexes.join(", ")
    )]
    InvalidIndexes {
        /// The migration.
        migration: String,
        /// The indexes, schema-qualified.
        indexes: Vec<String>,
    },
    /// The history table has a row that cannot be read.
    #[error(transparent)]
    History(#[from] UnreadableRow),
    /// A history change (`baseline`, `repair`) was refused; nothing was changed.
    #[error("{action} refused, nothing was changed: {}", .problems.join("; "))]
    Refused {
        /// `baseline` or `repair`.
        action: &'static str,
        /// Every reason, each naming the migration or object.
        problems: Vec<String>,
    },
    /// A bookkeeping query failed (lock, history read, unlock).
    #[error("{step} failed: {error}")]
    Database {
        /// Which step.
        step: &'static str,
        /// What PostgreSQL said.
        error: ServerError,
    },
}

impl MigrateError {
    /// What PostgreSQL said, when it said it (for the log: its DETAIL is not
    /// in the message).
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            MigrateError::Migration(f) => Some(&f.error),
            MigrateError::Database { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Wraps a bookkeeping query error.
    pub fn database(step: &'static str, e: &tokio_postgres::Error) -> Self {
        MigrateError::Database {
            step,
            error: ServerError::from_pg(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: Option<&str>) -> MigrationFailure {
        MigrationFailure {
            migration: Some("003_c".into()),
            location: Some(Location { line: 4, column: 7 }),
            statement: None,
            error: ServerError {
                code: code.map(str::to_string),
                message: "relation \"nope\" does not exist".into(),
                detail: None,
                hint: None,
                context: None,
                position: Some(40),
            },
            ran_as: RanAs::Batch,
            transaction: Some(TransactionFate::RolledBack),
            ended_inside: None,
            rolled_back: vec!["002_b".into(), "003_c".into()],
            committed: vec![],
            kept: vec![],
            invalid_indexes: vec![],
            attempts: 1,
            timeouts: (Duration::from_secs(5), Duration::from_secs(300)),
        }
    }

    #[test]
    fn a_detail_is_not_in_the_message() {
        let e = ServerError {
            code: Some("23502".into()),
            message: "null value in column \"email\" violates not-null constraint".into(),
            detail: Some("Failing row contains (7, alice@example.com, null).".into()),
            hint: Some("a hint".into()),
            context: None,
            position: None,
        };
        let text = e.to_string();
        assert!(!text.contains("alice@example.com"), "{text}");
        assert!(
            text.contains("not-null constraint (DETAIL in the function's log) (HINT: a hint)"),
            "{text}"
        );
        let failure = MigrationFailure {
            error: e,
            ..failure(Some("23502"))
        };
        assert!(!failure.to_string().contains("alice@example.com"));
        let err = MigrateError::Migration(Box::new(failure));
        assert_eq!(
            err.server_error().and_then(|s| s.detail.as_deref()),
            Some("Failing row contains (7, alice@example.com, null).")
        );
    }

    #[test]
    fn a_failure_names_the_migration_the_code_the_place_and_what_remains() {
        let text = failure(Some("42P01")).to_string();
        assert_eq!(
            text,
            "migration 003_c failed at line 4, column 7: 42P01 relation \"nope\" does not exist. \
             Nothing of its batch was kept (rolled back: 002_b, 003_c). \
             Fix the SQL (in a new migration if this one was applied elsewhere) and deploy again."
        );
    }

    #[test]
    fn nothing_kept_is_said_only_when_the_server_said_so() {
        let mut f = failure(None);
        f.transaction = Some(TransactionFate::Unchecked(
            "the connection to the server was lost".into(),
        ));
        f.rolled_back = vec![];
        let text = f.to_string();
        assert!(!text.contains("Nothing of"), "{text}");
        assert!(
            text.contains("db-setup did not commit its transaction (003_c)")
                && text.contains("could not be checked (the connection to the server was lost)"),
            "{text}"
        );

        f.transaction = Some(TransactionFate::Committed);
        f.committed = vec!["001_a".into(), "002_b".into()];
        f.rolled_back = vec!["004_d".into()];
        let text = f.to_string();
        assert!(!text.contains("Nothing of"), "{text}");
        assert!(
            text.contains(
                "001_a, 002_b and 003_c (up to that statement) stay applied WITHOUT history rows"
            ) && text.contains("004_d left nothing"),
            "{text}"
        );
    }

    #[test]
    fn timeouts_get_their_own_advice() {
        assert!(
            failure(Some(SqlState::LOCK_NOT_AVAILABLE.code()))
                .to_string()
                .contains("lock_timeout (5000ms)")
        );
        assert!(
            failure(Some(SqlState::QUERY_CANCELED.code()))
                .to_string()
                .contains("-- db-setup: statement-timeout=<duration>")
        );
        assert!(failure(None).to_string().contains("connection was lost"));
        assert!(
            failure(Some(SqlState::OUT_OF_MEMORY.code()))
                .to_string()
                .contains("DB_SETUP_TRANSACTION_MODE=each")
        );
    }

    #[test]
    fn lock_timeout_names_the_holder() {
        let e = MigrateError::LockTimeout {
            waited: Duration::from_secs(3),
            holder: Some(LockHolder {
                pid: 77,
                user: None,
                application_name: Some("psql".into()),
                client_addr: None,
                backend_start: None,
                state: None,
            }),
        };
        assert_eq!(
            e.to_string(),
            "another migration is already running: the advisory lock 7241865325823964 is held by backend pid 77 (application 'psql') and was not released within 3s; wait for it to finish, or if that session is stuck end it with pg_terminate_backend(pid)"
        );
    }
}
