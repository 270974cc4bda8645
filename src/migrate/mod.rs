//! Forward-only migrations: the embedded set, the pure planner and the
//! PostgreSQL runner.
//!
//! ```text
//! migrations/*.sql ──parse──> MigrationSet ──plan(history)──> Plan ──runner──> RunReport
//! ```

pub mod error;
pub mod history;
pub mod lock;
pub mod parse;
pub mod plan;
pub mod runner;
pub mod sql;

use std::path::Path;

use include_dir::{Dir, include_dir};

pub use error::{MigrateError, MigrationFailure, ServerError};
pub use parse::{Migration, SourceError, SourceErrors};
pub use plan::{AppliedMigration, Plan, PlanError, Problem};
pub use runner::{Migrator, RunOptions, RunReport, StatusReport, TransactionMode};

/// The project's migrations, embedded at compile time (`build.rs` makes
/// cargo rebuild when one is added, removed or edited, and refuses an
/// invalid directory).
static EMBEDDED: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/migrations");

/// A checked, ordered set of migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSet {
    migrations: Vec<Migration>,
}

impl MigrationSet {
    /// The migrations embedded in this binary.
    pub fn embedded() -> Result<Self, SourceErrors> {
        Self::from_files(EMBEDDED.entries().iter().map(|entry| {
            let name = entry
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let bytes = entry
                .as_file()
                .map(|f| f.contents().to_vec())
                .unwrap_or_default();
            (name, bytes)
        }))
    }

    /// The migrations in a directory, read now (tools and tests).
    pub fn from_dir(dir: &Path) -> Result<Self, SourceErrors> {
        let unreadable = |e: std::io::Error| {
            SourceErrors(vec![SourceError::Unreadable {
                file: dir.display().to_string(),
                message: e.to_string(),
            }])
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let bytes = if entry.path().is_dir() {
                Vec::new()
            } else {
                std::fs::read(entry.path()).map_err(|e| {
                    SourceErrors(vec![SourceError::Unreadable {
                        file: name.clone(),
                        message: e.to_string(),
                    }])
                })?
            };
            files.push((name, bytes));
        }
        Self::from_files(files)
    }

    /// Checks and orders `(file name, content)` pairs.
    pub fn from_files<I>(files: I) -> Result<Self, SourceErrors>
    where
        I: IntoIterator<Item = (String, Vec<u8>)>,
    {
        parse::parse_set(files).map(|migrations| MigrationSet { migrations })
    }

    /// The migrations, in order.
    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }

    /// The last migration's name.
    pub fn last(&self) -> Option<&str> {
        self.migrations.last().map(|m| m.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_migrations_are_valid() {
        let set = MigrationSet::embedded().unwrap();
        assert!(!set.migrations().is_empty());
    }
}
