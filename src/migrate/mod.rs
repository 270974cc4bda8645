//! Forward-only migrations: the embedded set, the pure planner and the
//! PostgreSQL runner.
//!
//! ```text
//! migrations/*.sql ──parse──> MigrationSet ──plan(history)──> Plan ──runner──> RunReport
//! ```

pub mod breaking;
pub mod error;
pub mod files;
pub mod foreign;
pub mod hash;
pub mod history;
pub mod lock;
pub mod maintain;
pub mod options;
pub mod parse;
pub mod plan;
pub mod report;
pub mod runner;
pub mod sql;
pub mod status;

use std::path::Path;

use include_dir::{Dir, include_dir};

pub use error::{MigrateError, MigrationFailure, RanAs, TransactionFate};
pub use options::{RunOptions, TransactionMode};
pub use parse::{Migration, SourceError, SourceErrors};
pub use plan::{AppliedMigration, Plan, PlanError, Problem};
pub use report::{PlanReport, RunReport, StatusReport};
pub use runner::Migrator;

/// The project's migrations, embedded at compile time (`build.rs` makes
/// cargo rebuild when one is added, removed or edited, and refuses an
/// invalid directory).
static EMBEDDED: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/migrations");

/// A checked, ordered set of migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSet {
    migrations: Vec<Migration>,
    hash: String,
}

pub use hash::set_hash;

/// The embedded set's [`set_hash`], computed by `build.rs` over the same
/// files, as a marker in the binary: `scripts/migrations-hash.sh` reads it
/// from a built `bootstrap`, and `make package` writes it beside it as
/// `migrations.sha256`, which the CDK construct compares with the
/// `MigrationsHash` it puts in the template (a stale package fails `cdk synth`).
pub const PACKAGE_MARKER: &str = concat!(
    "db-setup-migrations-sha256:",
    env!("DB_SETUP_MIGRATIONS_SHA256")
);

/// The hash in [`PACKAGE_MARKER`], read through the marker so that the whole
/// marker stays in the binary.
pub fn package_hash() -> &'static str {
    let marker: &'static str = std::hint::black_box(PACKAGE_MARKER);
    marker.split_once(':').map(|(_, h)| h).unwrap_or(marker)
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
        let files = files::read_dir(dir).map_err(|e| {
            SourceErrors(vec![SourceError::Unreadable {
                file: e.what,
                message: e.error.to_string(),
            }])
        })?;
        Self::from_files(files)
    }

    /// Checks and orders `(file name, content)` pairs.
    pub fn from_files<I>(files: I) -> Result<Self, SourceErrors>
    where
        I: IntoIterator<Item = (String, Vec<u8>)>,
    {
        let files: Vec<(String, Vec<u8>)> = files.into_iter().collect();
        let hash = set_hash(&files);
        parse::parse_set(files).map(|migrations| MigrationSet { migrations, hash })
    }

    /// The `MigrationsHash` of these files (see [`set_hash`]).
    pub fn hash(&self) -> &str {
        &self.hash
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
    fn set_hash_matches_the_cdk_constructs_definition() {
        // Same value as infra's hashMigrations over these two files (checked in
        // infra/test: "hashMigrations matches the Rust definition").
        let files = vec![
            ("002_b.sql".to_string(), b"SELECT 2;\n".to_vec()),
            ("001_a.sql".to_string(), b"SELECT 1;\n".to_vec()),
            ("README.md".to_string(), b"ignored".to_vec()),
        ];
        assert_eq!(
            set_hash(&files),
            "89a5bca71d5f7e63caa0ffd859688deae02069c7d1acb204d35dabdc1583de4f"
        );
    }

    #[test]
    fn the_build_scripts_hash_is_the_embedded_sets() {
        assert_eq!(package_hash(), MigrationSet::embedded().unwrap().hash());
        assert_eq!(package_hash().len(), 64);
    }

    #[test]
    fn the_embedded_migrations_are_valid() {
        let set = MigrationSet::embedded().unwrap();
        assert!(!set.migrations().is_empty());
    }
}
