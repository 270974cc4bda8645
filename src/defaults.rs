//! Every default in one place: the configuration, the engine's options, the
//! connection options, the CLI and the start-up fallbacks all read these.
//! README's configuration table documents them.

use std::time::Duration;

/// How long to wait for the migration (or role) lock another run holds.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);
/// PostgreSQL `lock_timeout` of migration statements.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries of a migration that hit `lock_timeout`.
pub const LOCK_RETRIES: u32 = 3;
/// Pause before the first of those retries; doubles after.
pub const LOCK_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// PostgreSQL `statement_timeout` of migration statements.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(300);
/// One connection attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connection attempts while the server cannot be reached.
pub const CONNECT_ATTEMPTS: u32 = 3;
/// Pause before the second connection attempt; doubles after.
pub const CONNECT_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// The work stops this long before the invocation's deadline.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(10);
/// The time allowed when the invocation's deadline is unknown.
pub const TIME_BUDGET: Duration = Duration::from_secs(300);
/// The pause between two looks at a snapshot being created (RDS takes
/// minutes for a large database; DescribeDBSnapshots is rate-limited).
pub const SNAPSHOT_POLL: Duration = Duration::from_secs(10);
/// Waiting for a snapshot ends this long before the work's deadline, so the
/// still-creating error is the answer, not the deadline guard's timeout.
pub const SNAPSHOT_WAIT_MARGIN: Duration = Duration::from_secs(5);
/// PostgreSQL's default port.
pub const PORT: u16 = 5432;
/// PostgreSQL's default database.
pub const DATABASE: &str = "postgres";
/// `application_name` of every connection (visible in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "db-setup";
/// The role when a database URL names none (the CLI).
pub const USER: &str = "postgres";
/// CloudWatch namespace of the deploy metrics (Embedded Metric Format).
pub const METRICS_NAMESPACE: &str = "DbSetup";
/// The log filter when neither `RUST_LOG` nor `AWS_LAMBDA_LOG_LEVEL` says one
/// (the AWS SDK's own INFO lines are noise here).
pub const LOG_FILTER: &str = "info,aws_config=warn,aws_smithy_runtime=warn";

/// CloudFormation's `ServiceTimeout` when the template does not set one.
pub const SERVICE_TIMEOUT: Duration = Duration::from_secs(3600);
