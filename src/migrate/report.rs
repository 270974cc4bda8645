//! What the engine reports: a run (`migrate`) and the state of a database
//! against the migrations (`status`, `plan`). Serialized the same way by
//! the Lambda's actions and the CLI.

use serde::Serialize;

use super::foreign::ForeignHistory;
use super::history::TableState;
use super::lock::LockHolder;
use super::maintain::RepairHint;
use super::options::TransactionMode;
use super::plan::{AppliedMigration, Problem};

/// One migration applied by a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppliedStep {
    /// Its name.
    pub name: String,
    /// Execution time in milliseconds, as recorded in `pgmigrations.execution_ms`.
    pub execution_ms: f64,
    /// True when it ran outside a transaction.
    pub no_transaction: bool,
}

/// What a migrate run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    /// Transaction mode used.
    pub mode: TransactionMode,
    /// Applied by this run, in order.
    pub applied: Vec<AppliedStep>,
    /// Already applied before this run (skipped).
    pub already_applied: usize,
    /// Not run because they come after the target.
    pub pending: Vec<String>,
    /// node-pg-migrate rows whose checksum was recorded by this run.
    pub adopted_checksums: Vec<String>,
    /// The last applied migration after the run.
    pub last_migration: Option<String>,
    /// Time spent waiting for the advisory lock.
    pub lock_wait_ms: u64,
    /// Time of the whole run.
    pub total_ms: u64,
}

/// A migration not applied yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingMigration {
    /// Its name.
    pub name: String,
    /// Its checksum.
    pub checksum: String,
    /// True when it will run outside a transaction.
    pub no_transaction: bool,
}

/// How a step of a run runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// Its migrations share one transaction.
    Transaction,
    /// One file, statement by statement, each autocommitted.
    NoTransaction,
}

/// One transaction (or one no-transaction file) of a planned run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedStep {
    /// `transaction` or `no-transaction`.
    pub kind: StepKind,
    /// The migrations, in order.
    pub migrations: Vec<String>,
}

/// The state of the database against the migrations: read only, no lock taken.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    /// Migrations embedded in this build.
    pub embedded: usize,
    /// The history table: `missing`, `node_pg_migrate` or `tracked`.
    pub history_table: TableState,
    /// The history, in order, with run times.
    pub applied: Vec<AppliedMigration>,
    /// Files not applied yet.
    pub pending: Vec<PendingMigration>,
    /// Why a migrate would refuse to run (order, missing files, checksum drift).
    pub problems: Vec<Problem>,
    /// Applied rows without a recorded checksum (written by node-pg-migrate);
    /// the next migrate records them.
    pub checksums_not_recorded: Vec<String>,
    /// What a migrate with these options would do, when it would run at all.
    pub plan: Option<Vec<PlannedStep>>,
    /// Migrations held back by the target.
    pub held_back: Vec<String>,
    /// Who holds the migration lock now.
    pub lock_holder: Option<LockHolder>,
    /// Invalid indexes (left by a failed concurrent build).
    pub invalid_indexes: Vec<String>,
    /// Other migration tools' history tables found (Prisma, Drizzle, Knex,
    /// node-pg-migrate in another schema, a custom runner).
    pub other_histories: Vec<ForeignHistory>,
    /// What to do about what was found, in sentences (adopting another
    /// tool's database, a repair).
    pub advice: Vec<String>,
    /// The `repair` that would clear the problems it can clear.
    pub repair: Option<RepairHint>,
}
