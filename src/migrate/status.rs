//! `status` and `plan`: the state of a database against the migrations,
//! read only (no lock taken, nothing written).

use super::MigrationSet;
use super::error::MigrateError;
use super::foreign;
use super::lock;
use super::maintain::RepairHint;
use super::options::TransactionMode;
use super::plan::{self, Plan, Step, steps};
use super::report::{BreakingAllowed, PendingMigration, PlannedStep, StatusReport, StepKind};
use super::runner::Migrator;

/// The steps a migrate would run for `plan` (already cut to its phase), as
/// the status and plan reports name them.
pub fn planned_steps(plan: &Plan<'_>, mode: TransactionMode) -> Vec<PlannedStep> {
    steps(&plan.to_run, mode)
        .into_iter()
        .map(|s| match s {
            Step::Transaction(ms) => PlannedStep {
                kind: StepKind::Transaction,
                migrations: ms.iter().map(|m| m.name.clone()).collect(),
            },
            Step::NoTransaction(m) => PlannedStep {
                kind: StepKind::NoTransaction,
                migrations: vec![m.name.clone()],
            },
        })
        .collect()
}

impl Migrator<'_> {
    /// Reads the state of the database against `set`: history, pending,
    /// problems, the lock holder. Takes no lock and writes nothing.
    pub async fn status(&self, set: &MigrationSet) -> Result<StatusReport, MigrateError> {
        let (table, applied) = self.read_history().await?;
        let recorded: std::collections::HashSet<&str> =
            applied.iter().map(|r| r.name.as_str()).collect();
        let pending = set
            .migrations()
            .iter()
            .filter(|m| !recorded.contains(m.name.as_str()))
            .map(|m| PendingMigration {
                name: m.name.clone(),
                checksum: m.checksum.clone(),
                no_transaction: m.directives.no_transaction,
                phase: m.directives.phase,
            })
            .collect();
        let checksums_not_recorded = applied
            .iter()
            .filter(|r| r.checksum.is_none())
            .map(|r| r.name.clone())
            .collect();
        let (problems, planned, held_back, waits_for_contract) =
            match plan::plan(&applied, set.migrations(), self.options.up_to.as_deref()) {
                Ok(p) => {
                    let p = p.in_phase(self.options.phase);
                    let planned = planned_steps(&p, self.options.mode);
                    (
                        Vec::new(),
                        Some(planned),
                        p.held_back.iter().map(|m| m.name.clone()).collect(),
                        p.waits_for_contract
                            .iter()
                            .map(|m| m.name.clone())
                            .collect(),
                    )
                }
                Err(e) => (e.0, None, Vec::new(), Vec::new()),
            };
        let other_histories = foreign::find(self.client)
            .await
            .map_err(|e| MigrateError::database("looking for other tools' history tables", &e))?;
        let mut advice: Vec<String> = other_histories.iter().map(|h| h.advice()).collect();
        let repair = RepairHint::from_problems(&problems);
        if let Some(hint) = &repair {
            advice.push(hint.advice());
        }
        Ok(StatusReport {
            other_histories,
            advice,
            repair,
            embedded: set.migrations().len(),
            history_table: table,
            applied,
            pending,
            problems,
            checksums_not_recorded,
            plan: planned,
            held_back,
            phase: self.options.phase,
            waits_for_contract,
            breaking_allowed: BreakingAllowed::list(set.migrations()),
            lock_holder: lock::holder(self.client, lock::KEY)
                .await
                .map_err(|e| MigrateError::database("looking up the lock holder", &e))?,
            invalid_indexes: self
                .invalid_indexes()
                .await
                .map_err(|e| MigrateError::database("checking for invalid indexes", &e))?,
        })
    }
}
