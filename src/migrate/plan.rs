//! History + embedded set → what to run, or every reason not to. Pure.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use super::options::TransactionMode;
use super::parse::{Migration, Phase};

/// One row of `pgmigrations`, as read (ordered by `run_on, id`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppliedMigration {
    /// `pgmigrations.id`.
    pub id: i64,
    /// `pgmigrations.name`.
    pub name: String,
    /// `pgmigrations.run_on`, as PostgreSQL prints it.
    pub run_on: String,
    /// The recorded checksum; `None` for rows node-pg-migrate wrote.
    pub checksum: Option<String>,
    /// The recorded execution time in milliseconds, when this tool wrote the row.
    pub execution_ms: Option<f64>,
}

/// A problem that stops a run, naming the migrations involved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// An unapplied file sorts before an applied one (node-pg-migrate's rule).
    NotRunPreceding {
        /// The file that was never run.
        not_run: String,
        /// The applied migration it precedes.
        applied: String,
    },
    /// A name in the history has no file.
    MissingFile {
        /// The recorded name.
        name: String,
    },
    /// Names in the history with no file, all applied after every migration
    /// this code knows: a newer version of the code applied them (on a
    /// CloudFormation rollback, the older code meets exactly this).
    AheadOfFiles {
        /// The unknown names, in history order.
        names: Vec<String>,
    },
    /// An applied file was edited after it ran.
    ChecksumDrift {
        /// The migration.
        name: String,
        /// The checksum in the history.
        recorded: String,
        /// The checksum of the file now.
        embedded: String,
    },
    /// The same name appears twice in the history.
    RecordedTwice {
        /// The migration.
        name: String,
    },
    /// The requested last migration (`to`) is not a known migration.
    UnknownTarget {
        /// The requested name.
        name: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotRunPreceding { not_run, applied } => write!(
                f,
                "Not run migration {not_run} is preceding already run migration {applied}: \
                 give {not_run} a number after the last applied migration"
            ),
            Problem::MissingFile { name } => write!(
                f,
                "migration {name} is recorded in pgmigrations but has no file: \
                 restore the file (applied migrations are never deleted)"
            ),
            Problem::AheadOfFiles { names } => write!(
                f,
                "the database is ahead of these migrations: {} applied after all of them with no file here \
                 (a newer version of this code applied them); deploy the newer code, or restore the files",
                names.join(", ")
            ),
            Problem::ChecksumDrift {
                name,
                recorded,
                embedded,
            } => write!(
                f,
                "migration {name} was edited after it was applied (checksum {} recorded, {} now): \
                 restore the applied content and put the change in a new migration",
                short(recorded),
                short(embedded)
            ),
            Problem::RecordedTwice { name } => write!(
                f,
                "migration {name} is recorded more than once in pgmigrations: \
                 delete the duplicate row after checking which one is right"
            ),
            Problem::UnknownTarget { name } => {
                write!(f, "there is no migration named {name} to migrate up to")
            }
        }
    }
}

fn short(checksum: &str) -> &str {
    checksum.get(..12).unwrap_or(checksum)
}

/// Every problem found, reported together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PlanError(pub Vec<Problem>);

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} problems with the migration history:", many.len())?;
                for p in many {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for PlanError {}

impl PlanError {
    /// True when the only problem is a history ahead of the files (see
    /// [`Problem::AheadOfFiles`]).
    pub fn is_database_ahead(&self) -> bool {
        matches!(self.0.as_slice(), [Problem::AheadOfFiles { .. }])
    }
}

/// A history row written by node-pg-migrate (no checksum) whose checksum
/// will now be recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Adoption {
    /// `pgmigrations.id` of the row.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// The checksum to record.
    pub checksum: String,
}

/// What a run will do.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan<'a> {
    /// Migrations to run, in order.
    pub to_run: Vec<&'a Migration>,
    /// Migrations left pending because they come after the requested last migration.
    pub held_back: Vec<&'a Migration>,
    /// Rows whose checksum is recorded for the first time.
    pub adopt: Vec<Adoption>,
    /// How many migrations are already applied.
    pub already_applied: usize,
    /// Pending migrations this step leaves to the contract phase: the first
    /// pending `phase=contract` migration and everything after it (see
    /// [`Plan::in_phase`]).
    pub waits_for_contract: Vec<&'a Migration>,
}

impl<'a> Plan<'a> {
    /// Restricts the plan to one deploy phase. `None` (no phase asked) runs
    /// everything, as before phases existed. `Expand` runs the pending
    /// migrations up to, not including, the first `phase=contract` one, and
    /// leaves it and everything after it in `waits_for_contract`, so no
    /// migration ever runs before one with a lower number. `Contract` runs
    /// everything pending (an expand migration numbered after a contract
    /// one can only run after it).
    pub fn in_phase(mut self, phase: Option<Phase>) -> Self {
        if phase == Some(Phase::Expand) {
            if let Some(cut) = self
                .to_run
                .iter()
                .position(|m| m.directives.phase == Phase::Contract)
            {
                self.waits_for_contract = self.to_run.split_off(cut);
            }
        }
        self
    }
}

/// Decides what to run. `applied` is the history ordered by `run_on, id`;
/// `files` the migrations ordered by number; `up_to`, when given, is the
/// last migration to run (inclusive).
pub fn plan<'a>(
    applied: &[AppliedMigration],
    files: &'a [Migration],
    up_to: Option<&str>,
) -> Result<Plan<'a>, PlanError> {
    let mut problems = Vec::new();
    let by_name: HashMap<&str, &Migration> = files.iter().map(|m| (m.name.as_str(), m)).collect();

    let mut seen = HashMap::new();
    let mut adopt = Vec::new();
    let mut unknown = Vec::new();
    // Position in the history after which every row is unknown to the files.
    let last_known = applied
        .iter()
        .rposition(|r| by_name.contains_key(r.name.as_str()));
    for (index, row) in applied.iter().enumerate() {
        if seen.insert(row.name.as_str(), ()).is_some() {
            problems.push(Problem::RecordedTwice {
                name: row.name.clone(),
            });
            continue;
        }
        let Some(file) = by_name.get(row.name.as_str()) else {
            if last_known.is_some_and(|k| index > k) {
                unknown.push(row.name.clone());
            } else {
                problems.push(Problem::MissingFile {
                    name: row.name.clone(),
                });
            }
            continue;
        };
        match &row.checksum {
            Some(recorded) if *recorded != file.checksum => problems.push(Problem::ChecksumDrift {
                name: row.name.clone(),
                recorded: recorded.clone(),
                embedded: file.checksum.clone(),
            }),
            Some(_) => {}
            None => adopt.push(Adoption {
                id: row.id,
                name: row.name.clone(),
                checksum: file.checksum.clone(),
            }),
        }
    }
    if !unknown.is_empty() {
        // Ahead only when everything this code knows is applied.
        let recorded: std::collections::HashSet<&str> =
            applied.iter().map(|r| r.name.as_str()).collect();
        if files.iter().all(|f| recorded.contains(f.name.as_str())) {
            problems.push(Problem::AheadOfFiles { names: unknown });
        } else {
            problems.extend(
                unknown
                    .into_iter()
                    .map(|name| Problem::MissingFile { name }),
            );
        }
    }

    // node-pg-migrate's positional rule: the i-th applied row must be the i-th file.
    // Rows already reported (no file, recorded twice) are left out of the comparison.
    let known: Vec<&AppliedMigration> = {
        let mut once = HashMap::new();
        applied
            .iter()
            .filter(|r| {
                by_name.contains_key(r.name.as_str()) && once.insert(r.name.as_str(), ()).is_none()
            })
            .collect()
    };
    for (row, file) in known.iter().zip(files) {
        if row.name != file.name {
            problems.push(Problem::NotRunPreceding {
                not_run: file.name.clone(),
                applied: row.name.clone(),
            });
            break;
        }
    }

    let already_applied = known.len();
    let pending = files.get(already_applied..).unwrap_or(&[]);
    let (to_run, held_back) = match up_to {
        None => (pending.iter().collect(), Vec::new()),
        Some(name) => match files.iter().position(|m| m.name == name) {
            None => {
                problems.push(Problem::UnknownTarget { name: name.into() });
                (Vec::new(), Vec::new())
            }
            Some(index) => {
                let cut = (index + 1)
                    .saturating_sub(already_applied)
                    .min(pending.len());
                let (run, rest) = pending.split_at(cut);
                (run.iter().collect(), rest.iter().collect())
            }
        },
    };

    if problems.is_empty() {
        Ok(Plan {
            to_run,
            held_back,
            adopt,
            already_applied,
            waits_for_contract: Vec::new(),
        })
    } else {
        Err(PlanError(problems))
    }
}

/// The migrations of one step of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<'m> {
    /// Run together in one transaction.
    Transaction(Vec<&'m Migration>),
    /// Run statement by statement outside any transaction.
    NoTransaction(&'m Migration),
}

impl<'m> Step<'m> {
    /// The migrations of this step, in order.
    pub fn migrations(&self) -> &[&'m Migration] {
        match self {
            Step::Transaction(batch) => batch,
            Step::NoTransaction(m) => std::slice::from_ref(m),
        }
    }
}

/// Groups the migrations to run into steps: in `batch` mode consecutive
/// transactional migrations share one transaction; in `each` mode every
/// migration has its own. A no-transaction migration is always alone.
pub fn steps<'m>(to_run: &[&'m Migration], mode: TransactionMode) -> Vec<Step<'m>> {
    let mut steps = Vec::new();
    for &m in to_run {
        if m.directives.no_transaction {
            steps.push(Step::NoTransaction(m));
            continue;
        }
        match (mode, steps.last_mut()) {
            (TransactionMode::Batch, Some(Step::Transaction(batch))) => batch.push(m),
            _ => steps.push(Step::Transaction(vec![m])),
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::super::parse::{parse_set, test_set as set};
    use super::*;

    fn files(names: &[&str]) -> Vec<Migration> {
        parse_set(
            names
                .iter()
                .map(|n| (format!("{n}.sql"), format!("SELECT '{n}';").into_bytes())),
        )
        .unwrap()
    }

    fn shape(steps: &[Step<'_>]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Transaction(ms) => format!(
                    "tx[{}]",
                    ms.iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                Step::NoTransaction(m) => format!("no-tx[{}]", m.name),
            })
            .collect()
    }

    #[test]
    fn batch_mode_groups_around_no_transaction_files() {
        let ms = set(&[
            ("1_a.sql", "select 1"),
            ("2_b.sql", "select 1"),
            (
                "3_idx.sql",
                "-- db-setup: no-transaction\nCREATE INDEX CONCURRENTLY i ON t (x)",
            ),
            ("4_c.sql", "select 1"),
        ]);
        let refs: Vec<&Migration> = ms.iter().collect();
        assert_eq!(
            shape(&steps(&refs, TransactionMode::Batch)),
            ["tx[1_a,2_b]", "no-tx[3_idx]", "tx[4_c]"]
        );
        assert_eq!(
            shape(&steps(&refs, TransactionMode::Each)),
            ["tx[1_a]", "tx[2_b]", "no-tx[3_idx]", "tx[4_c]"]
        );
    }

    fn row(id: i64, name: &str, checksum: Option<&str>) -> AppliedMigration {
        AppliedMigration {
            id,
            name: name.into(),
            run_on: "2025-01-01 00:00:00".into(),
            checksum: checksum.map(str::to_string),
            execution_ms: None,
        }
    }

    fn applied(files: &[Migration], n: usize) -> Vec<AppliedMigration> {
        files
            .iter()
            .take(n)
            .enumerate()
            .map(|(i, m)| row(i as i64 + 1, &m.name, Some(&m.checksum)))
            .collect()
    }

    fn names(ms: &[&Migration]) -> Vec<String> {
        ms.iter().map(|m| m.name.clone()).collect()
    }

    fn phased() -> Vec<Migration> {
        set(&[
            ("001_add_col.sql", "ALTER TABLE t ADD COLUMN b int"),
            ("002_backfill.sql", "UPDATE t SET b = a"),
            (
                "003_drop_old.sql",
                "-- db-setup: phase=contract\nALTER TABLE t DROP COLUMN a",
            ),
            ("004_more.sql", "CREATE TABLE u (id int)"),
            (
                "005_drop_more.sql",
                "-- db-setup: phase=contract\nDROP TABLE old",
            ),
        ])
    }

    #[test]
    fn the_expand_phase_stops_before_the_first_pending_contract_migration() {
        let f = phased();
        let p = plan(&[], &f, None).unwrap().in_phase(Some(Phase::Expand));
        assert_eq!(names(&p.to_run), ["001_add_col", "002_backfill"]);
        assert_eq!(
            names(&p.waits_for_contract),
            ["003_drop_old", "004_more", "005_drop_more"]
        );
        // After the contract step, the next expand runs the new expand files only.
        let p = plan(&applied(&f, 3), &f, None)
            .unwrap()
            .in_phase(Some(Phase::Expand));
        assert_eq!(names(&p.to_run), ["004_more"]);
        assert_eq!(names(&p.waits_for_contract), ["005_drop_more"]);
    }

    #[test]
    fn the_contract_phase_and_no_phase_run_everything_pending_in_order() {
        let f = phased();
        for phase in [Some(Phase::Contract), None] {
            let p = plan(&applied(&f, 2), &f, None).unwrap().in_phase(phase);
            assert_eq!(
                names(&p.to_run),
                ["003_drop_old", "004_more", "005_drop_more"],
                "{phase:?}"
            );
            assert!(p.waits_for_contract.is_empty());
        }
    }

    #[test]
    fn the_expand_phase_with_a_contract_migration_first_runs_nothing() {
        let f = phased();
        let p = plan(&applied(&f, 2), &f, None)
            .unwrap()
            .in_phase(Some(Phase::Expand));
        assert!(p.to_run.is_empty());
        assert_eq!(p.waits_for_contract.len(), 3);
        // Everything applied: nothing runs and nothing waits.
        let p = plan(&applied(&f, 5), &f, None)
            .unwrap()
            .in_phase(Some(Phase::Expand));
        assert!(p.to_run.is_empty() && p.waits_for_contract.is_empty());
    }

    #[test]
    fn the_phase_applies_after_the_target() {
        let f = phased();
        // A target before the contract file: nothing waits for contract, the rest is held back.
        let p = plan(&[], &f, Some("001_add_col"))
            .unwrap()
            .in_phase(Some(Phase::Expand));
        assert_eq!(names(&p.to_run), ["001_add_col"]);
        assert!(p.waits_for_contract.is_empty());
        assert_eq!(p.held_back.len(), 4);
        // A target past it: the expand step still stops before it.
        let p = plan(&[], &f, Some("004_more"))
            .unwrap()
            .in_phase(Some(Phase::Expand));
        assert_eq!(names(&p.to_run), ["001_add_col", "002_backfill"]);
        assert_eq!(names(&p.waits_for_contract), ["003_drop_old", "004_more"]);
        assert_eq!(names(&p.held_back), ["005_drop_more"]);
    }

    #[test]
    fn fresh_database_runs_everything() {
        let f = files(&["001_a", "002_b"]);
        let p = plan(&[], &f, None).unwrap();
        assert_eq!(names(&p.to_run), ["001_a", "002_b"]);
        assert_eq!(p.already_applied, 0);
        assert!(p.adopt.is_empty() && p.held_back.is_empty());
    }

    #[test]
    fn only_new_files_run() {
        let f = files(&["001_a", "002_b", "003_c"]);
        let p = plan(&applied(&f, 2), &f, None).unwrap();
        assert_eq!(names(&p.to_run), ["003_c"]);
        assert_eq!(p.already_applied, 2);
    }

    #[test]
    fn everything_applied_is_a_no_op() {
        let f = files(&["001_a", "002_b"]);
        let p = plan(&applied(&f, 2), &f, None).unwrap();
        assert!(p.to_run.is_empty());
    }

    #[test]
    fn rows_without_checksum_are_adopted_not_refused() {
        let f = files(&["001_a", "002_b", "003_c"]);
        let history = vec![row(1, "001_a", None), row(2, "002_b", None)];
        let p = plan(&history, &f, None).unwrap();
        assert_eq!(names(&p.to_run), ["003_c"]);
        assert_eq!(
            p.adopt,
            [
                Adoption {
                    id: 1,
                    name: "001_a".into(),
                    checksum: f[0].checksum.clone()
                },
                Adoption {
                    id: 2,
                    name: "002_b".into(),
                    checksum: f[1].checksum.clone()
                },
            ]
        );
    }

    #[test]
    fn a_file_inserted_before_applied_ones_is_an_order_violation() {
        let f = files(&["010_a", "020_b", "015_mid", "030_c"]);
        let history = vec![
            row(1, "010_a", Some(&f[0].checksum)),
            row(2, "020_b", Some(&f[2].checksum)),
            row(3, "030_c", Some(&f[3].checksum)),
        ];
        assert_eq!(
            names(&f.iter().collect::<Vec<_>>()),
            ["010_a", "015_mid", "020_b", "030_c"]
        );
        let err = plan(&history, &f, None).unwrap_err();
        assert_eq!(
            err.0,
            [Problem::NotRunPreceding {
                not_run: "015_mid".into(),
                applied: "020_b".into()
            }]
        );
        assert!(
            err.to_string()
                .starts_with("Not run migration 015_mid is preceding already run migration 020_b")
        );
    }

    #[test]
    fn leading_zeros_do_not_make_a_file_sort_early() {
        // 0015 is 15, after 003, as node-pg-migrate 9 orders it: it simply runs.
        let f = files(&["001_a", "002_b", "003_c", "0015_mid"]);
        let p = plan(&applied(&f, 3), &f, None).unwrap();
        assert_eq!(names(&p.to_run), ["0015_mid"]);
    }

    #[test]
    fn an_applied_name_without_a_file_is_refused() {
        let f = files(&["001_a", "003_c"]);
        let history = vec![
            row(1, "001_a", Some(&f[0].checksum)),
            row(2, "002_gone", Some("x")),
        ];
        let err = plan(&history, &f, None).unwrap_err();
        assert_eq!(
            err.0,
            [Problem::MissingFile {
                name: "002_gone".into()
            }]
        );
        assert!(
            err.to_string()
                .contains("002_gone is recorded in pgmigrations but has no file")
        );
    }

    #[test]
    fn names_applied_after_all_known_files_mean_the_database_is_ahead() {
        let f = files(&["001_a", "002_b"]);
        let mut history = applied(&f, 2);
        history.push(row(3, "003_new", Some("x")));
        history.push(row(4, "004_newer", Some("y")));
        let err = plan(&history, &f, None).unwrap_err();
        assert_eq!(
            err.0,
            [Problem::AheadOfFiles {
                names: vec!["003_new".into(), "004_newer".into()]
            }]
        );
        assert!(err.is_database_ahead());
        assert!(
            err.to_string()
                .contains("the database is ahead of these migrations: 003_new, 004_newer")
        );
        // Not ahead when a known file is still unapplied: that is a missing file.
        let f3 = files(&["001_a", "002_b", "005_c"]);
        let err = plan(&history, &f3, None).unwrap_err();
        assert!(!err.is_database_ahead(), "{err}");
    }

    #[test]
    fn an_edited_applied_migration_is_drift() {
        let f = files(&["001_a", "002_b"]);
        let history = vec![row(1, "001_a", Some("0123456789abcdef"))];
        let err = plan(&history, &f, None).unwrap_err();
        assert_eq!(
            err.0,
            [Problem::ChecksumDrift {
                name: "001_a".into(),
                recorded: "0123456789abcdef".into(),
                embedded: f[0].checksum.clone()
            }]
        );
        let text = err.to_string();
        assert!(
            text.contains("001_a was edited after it was applied"),
            "{text}"
        );
        assert!(text.contains("0123456789ab recorded"), "{text}");
    }

    #[test]
    fn a_duplicated_history_row_is_refused() {
        let f = files(&["001_a", "002_b"]);
        let history = vec![
            row(1, "001_a", Some(&f[0].checksum)),
            row(2, "001_a", Some(&f[0].checksum)),
        ];
        let err = plan(&history, &f, None).unwrap_err();
        assert_eq!(
            err.0,
            [Problem::RecordedTwice {
                name: "001_a".into()
            }]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let f = files(&["001_a", "002_b", "003_c"]);
        let history = vec![
            row(1, "001_a", Some("bad")),
            row(2, "003_c", Some(&f[2].checksum)),
            row(3, "009_gone", None),
        ];
        let err = plan(&history, &f, None).unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        assert!(
            err.to_string()
                .starts_with("3 problems with the migration history:")
        );
    }

    #[test]
    fn target_runs_up_to_and_including_it() {
        let f = files(&["001_a", "002_b", "003_c", "004_d"]);
        let p = plan(&applied(&f, 1), &f, Some("003_c")).unwrap();
        assert_eq!(names(&p.to_run), ["002_b", "003_c"]);
        assert_eq!(names(&p.held_back), ["004_d"]);
    }

    #[test]
    fn target_already_applied_runs_nothing() {
        let f = files(&["001_a", "002_b", "003_c"]);
        let p = plan(&applied(&f, 2), &f, Some("001_a")).unwrap();
        assert!(p.to_run.is_empty());
        assert_eq!(names(&p.held_back), ["003_c"]);
    }

    #[test]
    fn unknown_target_is_refused() {
        let f = files(&["001_a"]);
        let err = plan(&[], &f, Some("002_nope")).unwrap_err();
        assert_eq!(
            err.0,
            [Problem::UnknownTarget {
                name: "002_nope".into()
            }]
        );
    }
}
