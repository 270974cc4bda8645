//! The actions that change the history without running migrations:
//! `baseline` (adopt a database whose schema was built another way) and
//! `repair` (accept a harmless edit of an applied file, forget the rows of
//! deleted files). Never part of a deploy.
//!
//! Without `confirm` they read the history (no lock, no write) and answer
//! with what they would do. With it they take the migration lock, re-read
//! the history inside one transaction, decide again on what they read
//! there, write, and commit: a migration run in between cannot interleave.
//! The decisions are pure ([`baseline_plan`], [`repair_plan`]); every
//! reason to refuse is reported together and nothing is changed.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use tokio_postgres::SimpleQueryMessage;
use tracing::{info, warn};

use super::MigrationSet;
use super::error::MigrateError;
use super::history::{self, TABLE, TableState};
use super::lock;
use super::parse::Migration;
use super::plan::{AppliedMigration, Problem};
use super::runner::Migrator;
use crate::pg::literal;
use crate::verify::{self, ItemStatus, Spec};

/// One migration recorded by a baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recorded {
    /// Its name.
    pub name: String,
    /// The checksum recorded with it.
    pub checksum: String,
}

/// A declared object that a baselined migration creates and the database lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingObject {
    /// `table`, `index`, `constraint`, ...
    pub kind: String,
    /// Its name.
    pub name: String,
    /// What is missing inside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl std::fmt::Display for MissingObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.name)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

/// What a baseline did, or would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BaselineReport {
    /// True when `confirm` was given.
    pub confirmed: bool,
    /// True when the history was changed.
    pub changed: bool,
    /// The last migration recorded.
    pub to: String,
    /// The migrations recorded as applied (or that would be), in order.
    pub recorded: Vec<Recorded>,
    /// Declared objects those migrations create that the database lacks
    /// (only with `force`: without it they refuse the baseline).
    pub missing_objects: Vec<MissingObject>,
    /// True when `force` overrode missing objects.
    pub forced: bool,
    /// What happened, in a sentence.
    pub message: String,
}

/// A checksum accepted by a repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChecksumChange {
    /// The migration.
    pub name: String,
    /// The checksum recorded before.
    pub old: String,
    /// The file's checksum, recorded now.
    pub new: String,
}

/// A history row removed by a repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forgotten {
    /// `pgmigrations.id`.
    pub id: i64,
    /// The migration.
    pub name: String,
    /// When it had been applied.
    pub run_on: String,
}

/// What a repair does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct RepairPlan {
    /// Checksums to record.
    pub accept_checksums: Vec<ChecksumChange>,
    /// Rows to delete.
    pub forget: Vec<Forgotten>,
}

/// What a repair did, or would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// True when `confirm` was given.
    pub confirmed: bool,
    /// True when the history was changed.
    pub changed: bool,
    /// The changes.
    #[serde(flatten)]
    pub plan: RepairPlan,
    /// What happened, in a sentence.
    pub message: String,
}

/// What a repair could fix, read from the problems of a status: the
/// arguments of the `repair` that would clear them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct RepairHint {
    /// Applied files edited since (only if the edit is harmless).
    pub accept_checksums: Vec<String>,
    /// History rows without a file.
    pub forget: Vec<String>,
}

impl RepairHint {
    /// The hint for `problems`, when there is something to repair.
    pub fn from_problems(problems: &[Problem]) -> Option<RepairHint> {
        let mut hint = RepairHint::default();
        for p in problems {
            match p {
                Problem::ChecksumDrift { name, .. } => hint.accept_checksums.push(name.clone()),
                Problem::MissingFile { name } => hint.forget.push(name.clone()),
                _ => {}
            }
        }
        (!hint.accept_checksums.is_empty() || !hint.forget.is_empty()).then_some(hint)
    }

    /// The sentence that tells when and how to run the repair.
    pub fn advice(&self) -> String {
        let mut when = Vec::new();
        if !self.accept_checksums.is_empty() {
            when.push(format!(
                "the edits of {} are known to be harmless (a comment, whitespace)",
                self.accept_checksums.join(", ")
            ));
        }
        if !self.forget.is_empty() {
            when.push(format!(
                "the files of {} are gone for good",
                self.forget.join(", ")
            ));
        }
        format!(
            "if {}, {} records that; without confirm it only shows what it would change",
            when.join(" and "),
            serde_json::json!({
                "action": "repair",
                "accept_checksums": self.accept_checksums,
                "forget": self.forget,
                "confirm": true,
            })
        )
    }
}

/// The migrations a baseline up to `to` records, or every reason to refuse.
pub fn baseline_plan<'a>(
    applied: &[AppliedMigration],
    files: &'a [Migration],
    to: &str,
) -> Result<Vec<&'a Migration>, Vec<String>> {
    let Some(end) = files.iter().position(|m| m.name == to) else {
        return Err(vec![format!(
            "there is no migration named {to} to baseline up to"
        )]);
    };
    let recorded: HashMap<&str, &AppliedMigration> =
        applied.iter().map(|r| (r.name.as_str(), r)).collect();
    let problems: Vec<String> = files
        .iter()
        .filter_map(|m| recorded.get(m.name.as_str()))
        .map(|r| {
            format!(
                "{} is already recorded in pgmigrations (applied {}): a baseline only records \
                 migrations that have no history; use migrate, or repair for a wrong row",
                r.name, r.run_on
            )
        })
        .collect();
    if problems.is_empty() {
        Ok(files[..=end].iter().collect())
    } else {
        Err(problems)
    }
}

/// The repair of the named migrations, or every reason to refuse. A name
/// that needs no repair is an error: nothing unnamed, and nothing not
/// broken, is touched.
pub fn repair_plan(
    applied: &[AppliedMigration],
    files: &[Migration],
    accept: &[String],
    forget: &[String],
) -> Result<RepairPlan, Vec<String>> {
    let mut problems = Vec::new();
    if accept.is_empty() && forget.is_empty() {
        problems.push(
            "name what to repair: accept_checksums (applied files edited harmlessly) and/or \
             forget (history rows whose files are gone)"
                .to_string(),
        );
    }
    let files_by_name: HashMap<&str, &Migration> =
        files.iter().map(|m| (m.name.as_str(), m)).collect();
    let rows = |name: &str| -> Vec<&AppliedMigration> {
        applied.iter().filter(|r| r.name == name).collect()
    };
    let mut seen = HashSet::new();
    let mut plan = RepairPlan::default();
    for name in accept.iter().chain(forget) {
        if !seen.insert(name.as_str()) {
            problems.push(format!(
                "{name} is named twice: name it once, in accept_checksums or in forget"
            ));
        }
    }
    for name in accept {
        match (rows(name).as_slice(), files_by_name.get(name.as_str())) {
            ([], _) => problems.push(format!(
                "{name} is not in pgmigrations: there is no checksum to accept"
            )),
            (_, None) => problems.push(format!(
                "{name} has no file: its row cannot take a file's checksum (use forget if the file is gone for good)"
            )),
            ([row], Some(file)) => match &row.checksum {
                None => problems.push(format!(
                    "{name} has no recorded checksum (written by node-pg-migrate): the next migrate records it, no repair needed"
                )),
                Some(old) if *old == file.checksum => problems.push(format!(
                    "{name}'s recorded checksum already matches its file: no repair needed"
                )),
                Some(old) => plan.accept_checksums.push(ChecksumChange {
                    name: name.clone(),
                    old: old.clone(),
                    new: file.checksum.clone(),
                }),
            },
            (_, Some(_)) => problems.push(format!(
                "{name} is recorded more than once: delete the duplicate row by hand first"
            )),
        }
    }
    for name in forget {
        let found = rows(name);
        if found.is_empty() {
            problems.push(format!("{name} is not in pgmigrations: nothing to forget"));
        } else if files_by_name.contains_key(name.as_str()) {
            problems.push(format!(
                "{name} still has a file: only the rows of migrations whose files are gone can be forgotten"
            ));
        } else {
            plan.forget.extend(found.into_iter().map(|r| Forgotten {
                id: r.id,
                name: r.name.clone(),
                run_on: r.run_on.clone(),
            }));
        }
    }
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(problems)
    }
}

/// The rows a baseline inserts: no execution time (nothing ran).
pub fn baseline_insert_sql(migrations: &[&Migration]) -> Option<String> {
    if migrations.is_empty() {
        return None;
    }
    let values = migrations
        .iter()
        .map(|m| format!("({}, NOW(), {})", literal(&m.name), literal(&m.checksum)))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "INSERT INTO {TABLE} (name, run_on, checksum) VALUES {values}"
    ))
}

/// The statements of a repair, each bound to the row it read (a checksum
/// changed meanwhile, or a row already gone, changes nothing).
pub fn repair_sql(plan: &RepairPlan) -> Vec<String> {
    let mut sql: Vec<String> = plan
        .accept_checksums
        .iter()
        .map(|c| {
            format!(
                "UPDATE {TABLE} SET checksum = {} WHERE name = {} AND checksum = {}",
                literal(&c.new),
                literal(&c.name),
                literal(&c.old)
            )
        })
        .collect();
    if !plan.forget.is_empty() {
        let ids: Vec<String> = plan.forget.iter().map(|f| f.id.to_string()).collect();
        sql.push(format!(
            "DELETE FROM {TABLE} WHERE id IN ({})",
            ids.join(", ")
        ));
    }
    sql
}

fn refused(action: &'static str, problems: Vec<String>) -> MigrateError {
    MigrateError::Refused { action, problems }
}

impl Migrator<'_> {
    /// Records the migrations of `set` up to `to` as applied without running
    /// them (see the module docs). Refuses when any of them has history, or
    /// when objects they create (the items of `spec` they mention) are
    /// missing, unless `force`.
    pub async fn baseline(
        &self,
        set: &MigrationSet,
        spec: &Spec,
        to: &str,
        force: bool,
        confirm: bool,
    ) -> Result<BaselineReport, MigrateError> {
        let (_, applied) = self.read_history().await?;
        let chosen =
            baseline_plan(&applied, set.migrations(), to).map_err(|p| refused("baseline", p))?;
        let scripts: Vec<&str> = chosen.iter().map(|m| m.sql()).collect();
        let items = verify::verify(self.client, &spec.created_by(&scripts))
            .await
            .map_err(|e| MigrateError::database("verifying the objects to baseline", &e))?
            .items;
        let missing: Vec<MissingObject> = items
            .into_iter()
            .filter(|i| {
                i.status == ItemStatus::Missing
                    || (i.kind == "table" && i.status == ItemStatus::Different)
            })
            .map(|i| MissingObject {
                kind: i.kind.to_string(),
                name: i.name,
                detail: i.detail,
            })
            .collect();
        if !missing.is_empty() && !force {
            let shown: Vec<String> = missing.iter().map(ToString::to_string).collect();
            return Err(refused(
                "baseline",
                vec![format!(
                    "the database lacks objects that migrations up to {to} create: {}. Run those \
                     migrations instead, baseline to an earlier one, or pass force if these objects \
                     are known to be elsewhere",
                    shown.join(", ")
                )],
            ));
        }
        let recorded = |ms: &[&Migration]| -> Vec<Recorded> {
            ms.iter()
                .map(|m| Recorded {
                    name: m.name.clone(),
                    checksum: m.checksum.clone(),
                })
                .collect()
        };
        let forced = force && !missing.is_empty();
        if !confirm {
            return Ok(BaselineReport {
                confirmed: false,
                changed: false,
                to: to.to_string(),
                recorded: recorded(&chosen),
                message: format!(
                    "nothing was changed: with \"confirm\": true, {} migration(s) up to {to} would be recorded as applied without running them{}",
                    chosen.len(),
                    if forced {
                        " (forced over missing objects)"
                    } else {
                        ""
                    }
                ),
                missing_objects: missing,
                forced,
            });
        }
        let written = self
            .in_locked_transaction("baseline", |applied| {
                let chosen = baseline_plan(applied, set.migrations(), to)?;
                Ok((
                    baseline_insert_sql(&chosen).into_iter().collect(),
                    recorded(&chosen),
                ))
            })
            .await?;
        if forced {
            warn!(
                to,
                missing = missing.len(),
                "baseline forced over missing objects"
            );
        }
        info!(to, recorded = written.len(), "baseline recorded");
        Ok(BaselineReport {
            confirmed: true,
            changed: !written.is_empty(),
            to: to.to_string(),
            message: format!(
                "recorded {} migration(s) up to {to} as applied without running them{}; the next deploy runs only the ones after it",
                written.len(),
                if forced {
                    ", forced over the missing objects listed"
                } else {
                    ""
                }
            ),
            recorded: written,
            missing_objects: missing,
            forced,
        })
    }

    /// Accepts the checksums of `accept` and forgets the rows of `forget`
    /// (see [`repair_plan`]); with `confirm`, under the lock in one transaction.
    pub async fn repair(
        &self,
        set: &MigrationSet,
        accept: &[String],
        forget: &[String],
        confirm: bool,
    ) -> Result<RepairReport, MigrateError> {
        let (_, applied) = self.read_history().await?;
        let plan = repair_plan(&applied, set.migrations(), accept, forget)
            .map_err(|p| refused("repair", p))?;
        if !confirm {
            return Ok(RepairReport {
                confirmed: false,
                changed: false,
                message: format!(
                    "nothing was changed: with \"confirm\": true, {} checksum(s) would be accepted and {} row(s) forgotten",
                    plan.accept_checksums.len(),
                    plan.forget.len()
                ),
                plan,
            });
        }
        let plan = self
            .in_locked_transaction("repair", |applied| {
                let plan = repair_plan(applied, set.migrations(), accept, forget)?;
                Ok((repair_sql(&plan), plan))
            })
            .await?;
        info!(
            accepted = plan.accept_checksums.len(),
            forgotten = plan.forget.len(),
            "history repaired"
        );
        Ok(RepairReport {
            confirmed: true,
            changed: true,
            message: format!(
                "accepted {} checksum(s) and forgot {} row(s); nothing else was touched",
                plan.accept_checksums.len(),
                plan.forget.len()
            ),
            plan,
        })
    }

    /// Reads the history as it is now (no lock).
    pub(super) async fn read_history(
        &self,
    ) -> Result<(TableState, Vec<AppliedMigration>), MigrateError> {
        let messages = self
            .client
            .simple_query(&format!("SELECT {}", history::STATE_COLUMNS))
            .await
            .map_err(|e| MigrateError::database("checking pgmigrations", &e))?;
        let table = messages
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(TableState::from_flags(r.get(0), r.get(1))),
                _ => None,
            })
            .unwrap_or(TableState::Missing);
        if table == TableState::Missing {
            return Ok((table, Vec::new()));
        }
        let rows = self
            .client
            .simple_query(&history::select_sql(table))
            .await
            .map_err(|e| MigrateError::database("reading pgmigrations", &e))?;
        Ok((table, history::read_rows(&rows)?))
    }

    /// Takes the migration lock, opens a transaction, makes sure the table
    /// has this tool's columns, reads the history (rows locked), lets
    /// `decide` turn it into statements (or reasons to refuse, reported as
    /// `step` refused), runs them and commits; on any error rolls back. The lock is released on every path.
    async fn in_locked_transaction<T, F>(
        &self,
        step: &'static str,
        decide: F,
    ) -> Result<T, MigrateError>
    where
        F: FnOnce(&[AppliedMigration]) -> Result<(Vec<String>, T), Vec<String>>,
    {
        let (table, _waited) = self.acquire_lock().await?;
        let result = async {
            let mut prepare = vec!["BEGIN".to_string()];
            prepare.extend(history::prepare_statements(table));
            prepare.push(format!(
                "{} FOR UPDATE",
                history::select_sql(TableState::Tracked)
            ));
            let applied = self.read_prepared(&prepare).await?;
            let (statements, value) = decide(&applied).map_err(|p| refused(step, p))?;
            let mut all = statements;
            all.push("COMMIT".into());
            self.client
                .simple_query(&all.join("; "))
                .await
                .map_err(|e| MigrateError::database(step, &e))?;
            Ok(value)
        }
        .await;
        if result.is_err() {
            if let Err(e) = self.client.simple_query("ROLLBACK").await {
                warn!(error = %e, "rollback after a refused history change failed; the server rolls back when the session ends");
            }
        }
        if let Err(e) = self.client.simple_query(&lock::unlock_sql()).await {
            warn!(error = %e, "could not release the migration lock; the server releases it when the session ends");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse_migration;
    use super::*;

    fn files() -> Vec<Migration> {
        vec![
            parse_migration("001_a.sql", b"CREATE TABLE a (x int)").unwrap(),
            parse_migration("002_b.sql", b"CREATE TABLE b (x int)").unwrap(),
            parse_migration("003_c.sql", b"CREATE TABLE c (x int)").unwrap(),
        ]
    }

    fn row(id: i64, name: &str, checksum: Option<&str>) -> AppliedMigration {
        AppliedMigration {
            id,
            name: name.into(),
            run_on: "2026-01-01 00:00:00".into(),
            checksum: checksum.map(str::to_string),
            execution_ms: None,
        }
    }

    #[test]
    fn baseline_records_up_to_the_target_on_an_empty_history() {
        let files = files();
        let chosen = baseline_plan(&[], &files, "002_b").unwrap();
        let names: Vec<&str> = chosen.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["001_a", "002_b"]);
        let sql = baseline_insert_sql(&chosen).unwrap();
        assert!(
            sql.contains(&format!("('001_a', NOW(), '{}')", files[0].checksum)),
            "{sql}"
        );
        assert!(!sql.contains("execution_ms"), "nothing ran: {sql}");
    }

    #[test]
    fn baseline_refuses_an_unknown_target_and_existing_history() {
        let files = files();
        assert!(
            baseline_plan(&[], &files, "009_x").unwrap_err()[0]
                .contains("no migration named 009_x")
        );
        let problems = baseline_plan(
            &[row(1, "001_a", None), row(2, "003_c", None)],
            &files,
            "002_b",
        )
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("001_a is already recorded"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("003_c is already recorded"),
            "{problems:?}"
        );
    }

    #[test]
    fn repair_changes_only_what_is_named_and_broken() {
        let files = files();
        let history = [
            row(1, "001_a", Some("old")),
            row(2, "002_b", Some(&files[1].checksum)),
            row(3, "009_gone", Some("x")),
            row(4, "010_gone_too", Some("y")),
        ];
        let plan = repair_plan(&history, &files, &["001_a".into()], &["009_gone".into()]).unwrap();
        assert_eq!(
            plan.accept_checksums,
            [ChecksumChange {
                name: "001_a".into(),
                old: "old".into(),
                new: files[0].checksum.clone()
            }]
        );
        assert_eq!(plan.forget.len(), 1);
        assert_eq!(plan.forget[0].id, 3);
        let sql = repair_sql(&plan);
        assert_eq!(sql.len(), 2);
        assert!(
            sql[0].ends_with("WHERE name = '001_a' AND checksum = 'old'"),
            "{sql:?}"
        );
        assert!(sql[1].ends_with("WHERE id IN (3)"), "{sql:?}");
    }

    #[test]
    fn repair_refuses_names_that_need_no_repair() {
        let files = files();
        let history = [
            row(1, "001_a", None),
            row(2, "002_b", Some(&files[1].checksum)),
            row(3, "009_gone", Some("x")),
        ];
        let err = |accept: &[&str], forget: &[&str]| {
            repair_plan(
                &history,
                &files,
                &accept.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                &forget.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap_err()
            .join(" | ")
        };
        assert!(err(&[], &[]).contains("name what to repair"));
        assert!(err(&["002_b"], &[]).contains("already matches"));
        assert!(err(&["001_a"], &[]).contains("the next migrate records it"));
        assert!(err(&["003_c"], &[]).contains("not in pgmigrations"));
        assert!(err(&["009_gone"], &[]).contains("has no file"));
        assert!(err(&[], &["002_b"]).contains("still has a file"));
        assert!(err(&[], &["042_never"]).contains("nothing to forget"));
        assert!(err(&[], &["009_gone", "009_gone"]).contains("named twice"));
    }

    #[test]
    fn the_hint_names_what_a_repair_could_clear() {
        let problems = [
            Problem::ChecksumDrift {
                name: "003_x".into(),
                recorded: "a".into(),
                embedded: "b".into(),
            },
            Problem::MissingFile {
                name: "009_gone".into(),
            },
            Problem::RecordedTwice {
                name: "001_a".into(),
            },
        ];
        let hint = RepairHint::from_problems(&problems).unwrap();
        assert_eq!(hint.accept_checksums, ["003_x"]);
        assert_eq!(hint.forget, ["009_gone"]);
        let advice = hint.advice();
        assert!(
            advice.starts_with("if the edits of 003_x are known to be harmless"),
            "{advice}"
        );
        assert!(advice.contains(r#"{"accept_checksums":["003_x"],"action":"repair","confirm":true,"forget":["009_gone"]}"#), "{advice}");
        assert_eq!(RepairHint::from_problems(&[]), None);
    }
}
