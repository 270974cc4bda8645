//! The function's error: one variant per boundary, each carrying its
//! context; [`SetupError::reason`] is what CloudFormation (or the invoker)
//! reads, [`SetupError::kind`] the Lambda error type, and the runtime gets
//! both as a [`Diagnostic`] (`From<&SetupError>`).

use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::Diagnostic;

use crate::config::ConfigError;
use crate::continuation::ChainError;
use crate::db::{ConnectError, TlsSetupError};
use crate::migrate::{MigrateError, SourceErrors};
use crate::pg::ServerError;
use crate::secrets::{SecretFormatError, SecretsError};
use crate::snapshot::SnapshotError;
use crate::users::apply::UsersError;
use crate::verify::SpecError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The process could not start: every request is answered with why
    /// (the start-up error itself, with its advice).
    #[error("the function could not start: {0}")]
    Startup(Arc<SetupError>),
    /// The environment is invalid.
    #[error("{0}; fix the function's environment variables (see docs/configuration.md)")]
    Config(#[from] ConfigError),
    /// The extra CA file is unusable.
    #[error("TLS setup: {0}")]
    Tls(#[from] TlsSetupError),
    /// The admin secret could not be read.
    #[error("admin secret: {0}")]
    AdminSecret(SecretsError),
    /// The admin secret's content is unusable.
    #[error("{0}")]
    AdminSecretFormat(#[from] SecretFormatError),
    /// Neither the secret nor the configuration gives the host.
    #[error(
        "the admin secret has no `host` and DB_SETUP_DB_HOST is not set: set DB_SETUP_DB_HOST (an RDS-managed master secret holds only username and password)"
    )]
    NoHost,
    /// The database could not be reached or refused the login.
    #[error("{0}")]
    Connect(#[from] ConnectError),
    /// The snapshot before migrating could not be taken (or is not
    /// available yet): nothing was migrated.
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    /// Migrations did not complete.
    #[error("{0}")]
    Migrate(#[from] MigrateError),
    /// The users step failed (roles, ownership, credentials).
    #[error("{0}")]
    Users(#[from] UsersError),
    /// The verification list is invalid (a build defect).
    #[error("{0}")]
    Spec(#[from] SpecError),
    /// The embedded migrations are invalid (a build defect: `build.rs`
    /// refuses such a directory, so only a tampered package gets here).
    #[error("the embedded migrations are invalid: {0}; rebuild the package (make package)")]
    Migrations(#[from] SourceErrors),
    /// A chain of invocations (work longer than one) could not go on.
    #[error("{0}")]
    Chain(#[from] ChainError),
    /// A database query outside the migrations failed.
    #[error("{step} failed: {error}")]
    Database {
        /// The step.
        step: &'static str,
        /// What PostgreSQL said.
        error: ServerError,
    },
    /// The work did not finish in its time budget.
    #[error(
        "timed out after {}s while {step}; the work was stopped and the database rolls back what was not committed. \
         If the database is slow to answer, check its load and connectivity; if a migration is long, raise the function's timeout",
        .budget.as_secs_f64().round()
    )]
    Timeout {
        /// The budget that ran out.
        budget: Duration,
        /// What was going on.
        step: String,
    },
    /// A bug: the work panicked.
    #[error(
        "internal error (a panic) while {step}; nothing more was done: please report it with the function's logs"
    )]
    Panic {
        /// What was going on.
        step: String,
    },
}

impl SetupError {
    /// The Reason sent to CloudFormation or the invoker.
    pub fn reason(&self) -> String {
        self.to_string()
    }

    /// PostgreSQL's DETAIL, for the log only: it can hold row values, so
    /// [`SetupError::reason`] leaves it out.
    pub fn server_detail(&self) -> Option<&str> {
        let server = match self {
            SetupError::Migrate(e) => e.server_error(),
            SetupError::Users(e) => e.server_error(),
            SetupError::Database { error, .. } => Some(error),
            SetupError::Chain(ChainError::Record(r)) => Some(&r.error),
            _ => None,
        };
        server.and_then(|s| s.detail.as_deref())
    }

    /// A short error type for the Lambda diagnostic.
    pub fn kind(&self) -> &'static str {
        match self {
            SetupError::Startup(cause) => cause.kind(),
            SetupError::Config(_)
            | SetupError::Tls(_)
            | SetupError::Spec(_)
            | SetupError::Migrations(_) => "ConfigurationError",
            SetupError::AdminSecret(_) | SetupError::AdminSecretFormat(_) | SetupError::NoHost => {
                "AdminSecretError"
            }
            SetupError::Connect(_) => "DatabaseConnectionError",
            SetupError::Snapshot(e) => e.kind(),
            SetupError::Migrate(MigrateError::LockTimeout { .. }) => "MigrationLockHeld",
            SetupError::Migrate(_) => "MigrationError",
            SetupError::Users(UsersError::RoleLockTimeout { .. }) => "RoleLockHeld",
            SetupError::Users(_) => "UsersError",
            SetupError::Database { .. } => "DatabaseError",
            SetupError::Chain(_) => "ContinuationError",
            SetupError::Timeout { .. } => "Timeout",
            SetupError::Panic { .. } => "InternalError",
        }
    }
}

impl From<&SetupError> for Diagnostic {
    fn from(e: &SetupError) -> Self {
        Diagnostic {
            error_type: e.kind().into(),
            error_message: e.reason(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;
    use crate::db::TlsSetupError;

    #[test]
    fn a_start_up_error_keeps_its_kind_and_advice() {
        let config = SetupError::Startup(Arc::new(SetupError::Config(ConfigError(vec![
            "DB_SETUP_ADMIN_SECRET_ID is required".into(),
        ]))));
        let d = Diagnostic::from(&config);
        assert_eq!(d.error_type, "ConfigurationError");
        assert!(
            d.error_message
                .starts_with("the function could not start: invalid configuration"),
            "{}",
            d.error_message
        );
        assert!(
            d.error_message
                .ends_with("fix the function's environment variables (see docs/configuration.md)"),
            "{}",
            d.error_message
        );
        let tls = SetupError::Startup(Arc::new(SetupError::Tls(TlsSetupError::CaFile {
            path: "/ca.pem".into(),
            message: "No such file or directory".into(),
        })));
        let d = Diagnostic::from(&tls);
        assert_eq!(d.error_type, "ConfigurationError");
        assert!(
            d.error_message
                .contains("TLS setup: the CA file /ca.pem cannot be read")
        );
        assert!(d.error_message.contains("DB_SETUP_TLS_CA_FILE"));
    }

    #[test]
    fn the_diagnostic_is_the_kind_and_the_reason() {
        let e = SetupError::NoHost;
        let d = Diagnostic::from(&e);
        assert_eq!(d.error_type, "AdminSecretError");
        assert_eq!(d.error_message, e.reason());
    }
}
