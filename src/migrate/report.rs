//! What the engine reports: a run (`migrate`), the state of a database
//! against the migrations (`status`) and what a migrate would do (`plan`,
//! also as Markdown). Serialized the same way by the Lambda's actions and
//! the CLI.

use serde::Serialize;

use super::foreign::ForeignHistory;
use super::history::TableState;
use super::lock::LockHolder;
use super::maintain::RepairHint;
use super::options::{Phase, TransactionMode};
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
    /// The deploy phase this run was (`null`: no phase, everything pending ran).
    pub phase: Option<Phase>,
    /// Not run because this was the expand phase: the first pending
    /// `phase=contract` migration and everything after it, for the contract step.
    pub waits_for_contract: Vec<String>,
    /// Not run because this invocation's time for starting work was over
    /// (see [`super::options::RunOptions::yield_at`]): the next invocation of
    /// the chain runs them.
    pub left_for_next: Vec<String>,
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
    /// Its deploy phase (`expand` or `contract`).
    pub phase: Phase,
}

/// A migration whose header allows a breaking change in the expand phase
/// (`-- db-setup: allow-breaking=<reason>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakingAllowed {
    /// The migration.
    pub migration: String,
    /// The reason written in its header.
    pub reason: String,
}

impl BreakingAllowed {
    /// Every use of the override in `migrations`, in order.
    pub fn list(migrations: &[super::parse::Migration]) -> Vec<BreakingAllowed> {
        migrations
            .iter()
            .filter_map(|m| {
                m.directives
                    .allow_breaking
                    .as_ref()
                    .map(|reason| BreakingAllowed {
                        migration: m.name.clone(),
                        reason: reason.clone(),
                    })
            })
            .collect()
    }
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
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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
    /// The deploy phase these options select (`null`: no phase, everything).
    pub phase: Option<Phase>,
    /// Pending migrations an expand step leaves to the contract step.
    pub waits_for_contract: Vec<String>,
    /// Every migration that overrides the expand phase's breaking-change
    /// guard, with its reason.
    pub breaking_allowed: Vec<BreakingAllowed>,
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

/// What a migrate would do, and what it would refuse: the answer to `plan`,
/// the Lambda's action and `db-setup-cli plan` alike. Built from the
/// [`StatusReport`] read with the run's options.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanReport {
    /// The steps a migrate would run, in order (an empty list: nothing to
    /// do); `null` when it would refuse to run (see `problems`).
    pub would_run: Option<Vec<PlannedStep>>,
    /// Pending migrations held back by the target (`to`).
    pub held_back: Vec<String>,
    /// The deploy phase planned (`null`: no phase, everything pending).
    pub phase: Option<Phase>,
    /// Pending migrations this (expand) step leaves to the contract step:
    /// the first pending `phase=contract` migration and all after it.
    pub waits_for_contract: Vec<String>,
    /// Every migration that overrides the expand phase's breaking-change
    /// guard (`allow-breaking=<reason>`), applied or not, with its reason.
    pub breaking_allowed: Vec<BreakingAllowed>,
    /// Why a migrate would refuse to run.
    pub problems: Vec<Problem>,
    /// Applied rows without a checksum (written by node-pg-migrate) that the
    /// next migrate records.
    pub checksums_to_record: Vec<String>,
    /// Who holds the migration lock now (a migrate would wait for it).
    pub lock_holder: Option<LockHolder>,
    /// The `repair` that would clear the problems it can clear.
    pub repair: Option<RepairHint>,
    /// What to do about what was found, in sentences.
    pub advice: Vec<String>,
}

impl From<StatusReport> for PlanReport {
    fn from(status: StatusReport) -> Self {
        PlanReport {
            would_run: status.plan,
            held_back: status.held_back,
            phase: status.phase,
            waits_for_contract: status.waits_for_contract,
            breaking_allowed: status.breaking_allowed,
            problems: status.problems,
            checksums_to_record: status.checksums_not_recorded,
            lock_holder: status.lock_holder,
            repair: status.repair,
            advice: status.advice,
        }
    }
}

impl PlanReport {
    /// True when a migrate would refuse to run.
    pub fn refused(&self) -> bool {
        self.would_run.is_none() || !self.problems.is_empty()
    }

    /// The plan as Markdown, for a pull-request comment: what runs, in
    /// which transactions, what is held back, what is refused and why.
    pub fn to_markdown(&self) -> String {
        let mut md = String::from("### db-setup plan\n\n");
        let names = |ms: &[String]| {
            ms.iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.would_run {
            None => md.push_str("**A migrate would refuse to run**: nothing would be applied.\n"),
            Some(steps) if steps.is_empty() => {
                md.push_str("Nothing to run: every migration is applied.\n")
            }
            Some(steps) => {
                let count: usize = steps.iter().map(|s| s.migrations.len()).sum();
                md.push_str(&format!(
                    "**{count} migration{} would run**, in {} step{}:\n\n",
                    plural(count),
                    steps.len(),
                    plural(steps.len())
                ));
                md.push_str("| step | runs as | migrations |\n|---:|---|---|\n");
                for (i, step) in steps.iter().enumerate() {
                    let runs_as = match step.kind {
                        StepKind::Transaction if step.migrations.len() > 1 => {
                            "one transaction for all"
                        }
                        StepKind::Transaction => "one transaction",
                        StepKind::NoTransaction => "no transaction: each statement commits",
                    };
                    md.push_str(&format!(
                        "| {} | {runs_as} | {} |\n",
                        i + 1,
                        names(&step.migrations)
                    ));
                }
            }
        }
        if !self.held_back.is_empty() {
            md.push_str(&format!(
                "\nHeld back by the target: {}.\n",
                names(&self.held_back)
            ));
        }
        if !self.waits_for_contract.is_empty() {
            md.push_str(&format!(
                "\nWaits for the contract phase (after the application is updated): {}.\n",
                names(&self.waits_for_contract)
            ));
        }
        if !self.breaking_allowed.is_empty() {
            md.push_str("\nBreaking changes allowed in the expand phase (`allow-breaking`):\n\n");
            for b in &self.breaking_allowed {
                md.push_str(&format!("- `{}`: {}\n", b.migration, b.reason));
            }
        }
        if !self.problems.is_empty() {
            md.push_str(&format!(
                "\n**Refused** ({} problem{}):\n\n",
                self.problems.len(),
                plural(self.problems.len())
            ));
            for p in &self.problems {
                md.push_str(&format!("- {p}\n"));
            }
        }
        if !self.checksums_to_record.is_empty() {
            md.push_str(&format!(
                "\nChecksums to record (rows written by node-pg-migrate): {}.\n",
                names(&self.checksums_to_record)
            ));
        }
        for advice in &self.advice {
            md.push_str(&format!("\n> {advice}\n"));
        }
        if let Some(holder) = &self.lock_holder {
            md.push_str(&format!(
                "\nThe migration lock is held now ({holder}): a migrate would wait for it.\n"
            ));
        }
        md
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::history::TableState;

    fn status() -> StatusReport {
        StatusReport {
            embedded: 4,
            history_table: TableState::Tracked,
            checksums_not_recorded: vec!["001_a".into()],
            plan: Some(vec![
                PlannedStep {
                    kind: StepKind::Transaction,
                    migrations: vec!["002_b".into(), "003_c".into()],
                },
                PlannedStep {
                    kind: StepKind::NoTransaction,
                    migrations: vec!["004_d".into()],
                },
            ]),
            held_back: vec!["005_e".into()],
            ..StatusReport::default()
        }
    }

    #[test]
    fn the_plan_report_has_its_keys_and_shapes() {
        let plan = PlanReport::from(status());
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "would_run": [
                    {"kind": "transaction", "migrations": ["002_b", "003_c"]},
                    {"kind": "no-transaction", "migrations": ["004_d"]}
                ],
                "held_back": ["005_e"],
                "phase": null,
                "waits_for_contract": [],
                "breaking_allowed": [],
                "problems": [],
                "checksums_to_record": ["001_a"],
                "lock_holder": null,
                "repair": null,
                "advice": []
            })
        );
        assert!(!plan.refused());
    }

    #[test]
    fn a_refused_plan_has_no_steps_and_its_problems() {
        let mut s = status();
        s.plan = None;
        s.held_back.clear();
        s.problems = vec![Problem::MissingFile {
            name: "009_gone".into(),
        }];
        let plan = PlanReport::from(s);
        assert!(plan.refused());
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["would_run"], serde_json::Value::Null);
        assert_eq!(json["problems"][0]["kind"], "missing_file");
        let md = plan.to_markdown();
        assert!(md.contains("**A migrate would refuse to run**"), "{md}");
        assert!(md.contains("**Refused** (1 problem):"), "{md}");
        assert!(
            md.contains("- migration 009_gone is recorded in pgmigrations but has no file"),
            "{md}"
        );
        assert!(!md.contains("| step |"), "{md}");
    }

    #[test]
    fn the_markdown_shows_each_transaction() {
        let md = PlanReport::from(status()).to_markdown();
        assert!(md.starts_with("### db-setup plan\n"), "{md}");
        assert!(
            md.contains("**3 migrations would run**, in 2 steps:"),
            "{md}"
        );
        assert!(
            md.contains("| 1 | one transaction for all | `002_b`, `003_c` |"),
            "{md}"
        );
        assert!(
            md.contains("| 2 | no transaction: each statement commits | `004_d` |"),
            "{md}"
        );
        assert!(md.contains("Held back by the target: `005_e`."), "{md}");
        assert!(md.contains("Checksums to record"), "{md}");
        assert!(!md.contains("Refused"), "{md}");
    }

    #[test]
    fn an_expand_plan_says_what_waits_for_the_contract_phase() {
        let mut s = status();
        s.phase = Some(Phase::Expand);
        s.waits_for_contract = vec!["006_drop_old".into(), "007_f".into()];
        s.breaking_allowed = vec![BreakingAllowed {
            migration: "002_b".into(),
            reason: "the staging table was never read".into(),
        }];
        let plan = PlanReport::from(s);
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["phase"], "expand");
        assert_eq!(
            json["waits_for_contract"],
            serde_json::json!(["006_drop_old", "007_f"])
        );
        let md = plan.to_markdown();
        assert_eq!(
            json["breaking_allowed"],
            serde_json::json!([{"migration": "002_b", "reason": "the staging table was never read"}])
        );
        assert!(
            md.contains("- `002_b`: the staging table was never read"),
            "{md}"
        );
        assert!(
            md.contains(
                "Waits for the contract phase (after the application is updated): `006_drop_old`, `007_f`."
            ),
            "{md}"
        );
    }

    #[test]
    fn an_up_to_date_database_has_nothing_to_run() {
        let mut s = status();
        s.plan = Some(Vec::new());
        s.held_back.clear();
        s.checksums_not_recorded.clear();
        let md = PlanReport::from(s).to_markdown();
        assert_eq!(
            md,
            "### db-setup plan\n\nNothing to run: every migration is applied.\n"
        );
    }
}
