//! How a run is configured: transaction grouping, lock and statement
//! timeouts, the last migration to run.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::defaults;

/// How pending migrations are grouped into transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransactionMode {
    /// All pending migrations of a run in one transaction (a no-transaction
    /// file splits the batch): a failed run leaves the database as it was.
    #[default]
    Batch,
    /// One transaction per migration: earlier ones stay applied on failure.
    Each,
}

impl FromStr for TransactionMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "batch" => Ok(TransactionMode::Batch),
            "each" => Ok(TransactionMode::Each),
            other => Err(format!(
                "`{other}` is not a transaction mode: write batch or each"
            )),
        }
    }
}

impl fmt::Display for TransactionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransactionMode::Batch => "batch",
            TransactionMode::Each => "each",
        })
    }
}

pub use super::parse::Phase;

impl serde::Serialize for Phase {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Settings of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Transaction grouping.
    pub mode: TransactionMode,
    /// How long to wait for the advisory lock.
    pub lock_wait: Duration,
    /// PostgreSQL `lock_timeout` for migration statements.
    pub lock_timeout: Duration,
    /// PostgreSQL `statement_timeout` for migration statements.
    pub statement_timeout: Duration,
    /// Retries after a `lock_timeout`.
    pub lock_retries: u32,
    /// Pause before the first retry; doubles after.
    pub retry_pause: Duration,
    /// Run only up to this migration (inclusive).
    pub up_to: Option<String>,
    /// The deploy phase this run is (`None`: everything pending, no phases).
    pub phase: Option<Phase>,
    /// Start no unit of work (a transaction, a no-transaction migration)
    /// after this instant, once one has run: what is left is reported in
    /// [`super::report::RunReport::left_for_next`] for the next invocation.
    pub yield_at: Option<Instant>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            mode: TransactionMode::Batch,
            lock_wait: defaults::LOCK_WAIT,
            lock_timeout: defaults::LOCK_TIMEOUT,
            statement_timeout: defaults::STATEMENT_TIMEOUT,
            lock_retries: defaults::LOCK_RETRIES,
            retry_pause: defaults::LOCK_RETRY_PAUSE,
            up_to: None,
            phase: None,
            yield_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!("batch".parse(), Ok(TransactionMode::Batch));
        assert_eq!("each".parse(), Ok(TransactionMode::Each));
        assert!(
            "all"
                .parse::<TransactionMode>()
                .unwrap_err()
                .contains("batch or each")
        );
    }
}
