//! An RDS snapshot before migrating (opt-in: the `SnapshotDbInstance` or
//! `SnapshotDbCluster` property, set by the construct's
//! `snapshotBeforeMigrate`).
//!
//! On Create/Update, when this run's plan has migrations to run (never on a
//! no-op deploy, and only those of the request's phase), the work takes a
//! manual DB instance snapshot or Aurora cluster snapshot, waits until it is
//! `available`, then migrates. The snapshot's name is a pure function of the
//! stack and the request ([`snapshot_id`]): a retry of the same request finds
//! its own snapshot and waits for it instead of taking a second one.
//!
//! RDS sits behind the small [`Snapshots`] trait ([`RdsSnapshots`] is the
//! AWS SDK implementation); [`start`] and [`wait_available`] are the logic
//! over it. See docs/snapshots.md.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use sha2::{Digest, Sha256};
use tracing::info;

use crate::aws;
use crate::migrate::report::PlannedStep;

/// The longest RDS snapshot identifier.
pub const MAX_SNAPSHOT_ID: usize = 255;
/// The longest DB instance or cluster identifier.
pub const MAX_SOURCE_ID: usize = 63;
/// Every snapshot this function takes is named `db-setup-<stack>-<request>`
/// (the construct's IAM policy allows `snapshot:db-setup-<stack>-*`).
pub const PREFIX: &str = "db-setup";
/// The longest stack name CloudFormation allows (a longer `StackId`, from a
/// local test, is cut).
const MAX_STACK: usize = 128;
/// Hex digits of the request id's SHA-256 added when the id itself cannot
/// be kept as it is.
const HASH_LEN: usize = 12;

/// What to snapshot: the database's DB instance or Aurora cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotSource {
    /// A DB instance (`DBInstanceIdentifier`): a DB snapshot.
    Instance(String),
    /// An Aurora DB cluster (`DBClusterIdentifier`): a DB cluster snapshot.
    Cluster(String),
}

impl SnapshotSource {
    /// The instance or cluster identifier.
    pub fn identifier(&self) -> &str {
        match self {
            SnapshotSource::Instance(id) | SnapshotSource::Cluster(id) => id,
        }
    }

    /// The API operation that creates its snapshots.
    pub fn create_operation(&self) -> &'static str {
        match self {
            SnapshotSource::Instance(_) => "CreateDBSnapshot",
            SnapshotSource::Cluster(_) => "CreateDBClusterSnapshot",
        }
    }

    /// The API operation that describes its snapshots.
    pub fn describe_operation(&self) -> &'static str {
        match self {
            SnapshotSource::Instance(_) => "DescribeDBSnapshots",
            SnapshotSource::Cluster(_) => "DescribeDBClusterSnapshots",
        }
    }
}

impl fmt::Display for SnapshotSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotSource::Instance(id) => write!(f, "DB instance {id}"),
            SnapshotSource::Cluster(id) => write!(f, "DB cluster {id}"),
        }
    }
}

/// Checks an RDS identifier: letters, digits and hyphens, starting with a
/// letter, at most `max` characters, no two hyphens in a row, no hyphen at
/// the end. The error says which rule is broken.
pub fn check_identifier(id: &str, max: usize) -> Result<(), String> {
    let rule = if id.is_empty() {
        "it is empty"
    } else if id.len() > max {
        "it is too long"
    } else if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        "it does not start with a letter"
    } else if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        "it has characters other than letters, digits and hyphens"
    } else if id.contains("--") || id.ends_with('-') {
        "it has two hyphens in a row or ends with one"
    } else {
        return Ok(());
    };
    Err(format!(
        "not an RDS identifier ({rule}: letters, digits and hyphens, starting with a letter, at most {max} characters)"
    ))
}

/// Lowercase letters and digits kept, every run of anything else one hyphen,
/// no hyphen at either end.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// `text` cut to at most `max` bytes (ASCII), without a trailing hyphen.
fn cut(mut text: String, max: usize) -> String {
    text.truncate(max);
    while text.ends_with('-') {
        text.pop();
    }
    text
}

/// The stack's part of every snapshot name of that stack (the construct's
/// IAM policy allows `snapshot:<prefix>-*`): `db-setup-<stack name>`, the
/// name lowercased with runs of other characters made one hyphen.
pub fn snapshot_prefix(stack_id: &str) -> String {
    let stack = cut(clean(crate::metrics::stack_name(stack_id)), MAX_STACK);
    if stack.is_empty() {
        PREFIX.to_string()
    } else {
        format!("{PREFIX}-{stack}")
    }
}

/// The snapshot's name for this request: `db-setup-<stack>-<request id>`, a
/// valid RDS identifier (see [`check_identifier`]), the same for every retry
/// of the same request and different for each request. A request id that
/// is not already lowercase letters, digits and single hyphens (as
/// CloudFormation's UUIDs are) is cleaned and followed by 12 hex digits of
/// its SHA-256, so two ids that clean alike still name two snapshots.
pub fn snapshot_id(stack_id: &str, request_id: &str) -> String {
    let head = snapshot_prefix(stack_id);
    let request = clean(request_id);
    let exact = !request.is_empty() && request == request_id;
    let hash = || {
        let digest = Sha256::digest(request_id.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        hex[..HASH_LEN].to_string()
    };
    let full = if request.is_empty() {
        head.clone()
    } else {
        format!("{head}-{request}")
    };
    if exact && full.len() <= MAX_SNAPSHOT_ID {
        return full;
    }
    let hash = hash();
    format!("{}-{hash}", cut(full, MAX_SNAPSHOT_ID - 1 - HASH_LEN))
}

/// True when a snapshot is to be taken: the run's plan (status's, cut to
/// the request's phase and target) has something to run. No plan (the run
/// would refuse: a history problem, a database ahead of this code) takes no
/// snapshot either: the migrate that follows says why it does not run.
pub fn wanted(plan: Option<&[PlannedStep]>) -> bool {
    plan.is_some_and(|steps| steps.iter().any(|s| !s.migrations.is_empty()))
}

/// An RDS failure, naming the snapshot, the database and the operation.
/// Every one leaves the database as it was: nothing is migrated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The instance or cluster does not exist.
    #[error(
        "{database} was not found ({operation} of snapshot {snapshot}): check the SnapshotDbInstance or \
         SnapshotDbCluster property (the construct's database); nothing was migrated"
    )]
    SourceNotFound {
        /// The instance or cluster.
        database: SnapshotSource,
        /// The snapshot's name.
        snapshot: String,
        /// The API operation.
        operation: &'static str,
    },
    /// The function's role may not do this.
    #[error(
        "RDS {operation} was denied for snapshot {snapshot} of {database}: grant rds:{operation} on the \
         {database} and on snapshot {snapshot} to the function's role (the construct's \
         snapshotBeforeMigrate does); nothing was migrated"
    )]
    AccessDenied {
        /// The instance or cluster.
        database: SnapshotSource,
        /// The snapshot's name.
        snapshot: String,
        /// The API operation.
        operation: &'static str,
    },
    /// The instance or cluster cannot be snapshotted now (stopped,
    /// modifying, a quota reached).
    #[error(
        "{database} cannot be snapshotted now ({operation} of snapshot {snapshot}): {message}; \
         wait until it is available (or free a snapshot quota) and deploy again; nothing was migrated"
    )]
    Refused {
        /// The instance or cluster.
        database: SnapshotSource,
        /// The snapshot's name.
        snapshot: String,
        /// The API operation.
        operation: &'static str,
        /// What RDS said.
        message: String,
    },
    /// The snapshot ended in a state it is no backup in.
    #[error(
        "snapshot {snapshot} of {database} has status `{status}`: it is no backup, so nothing was migrated; \
         see the RDS events of {database}, then deploy again (a new deploy takes a new snapshot)"
    )]
    Failed {
        /// The instance or cluster.
        database: SnapshotSource,
        /// The snapshot's name.
        snapshot: String,
        /// Its status.
        status: String,
    },
    /// The snapshot was there, then was not (deleted while waiting).
    #[error(
        "snapshot {snapshot} of {database} disappeared while the function waited for it (deleted?): \
         nothing was migrated; deploy again"
    )]
    Vanished {
        /// The instance or cluster.
        database: SnapshotSource,
        /// The snapshot's name.
        snapshot: String,
    },
    /// The invocation's time ran out before the snapshot was available.
    #[error(
        "snapshot {snapshot} of {database} is still `{status}` after {}s, all the time this invocation had: \
         nothing was migrated. A large database takes minutes to snapshot: raise the function's timeout \
         (a retry of this request waits for the same snapshot)",
        .waited.as_secs()
    )]
    StillCreating {
        /// The instance or cluster.
        database: SnapshotSource,
        /// The snapshot's name.
        snapshot: String,
        /// Its last status.
        status: String,
        /// How long this invocation waited.
        waited: Duration,
    },
    /// A snapshot of that name exists already (create).
    #[error("snapshot {snapshot} exists already ({operation})")]
    AlreadyExists {
        /// The snapshot's name.
        snapshot: String,
        /// The API operation.
        operation: &'static str,
    },
    /// No snapshot of that name (describe).
    #[error("snapshot {snapshot} was not found ({operation})")]
    NotFound {
        /// The snapshot's name.
        snapshot: String,
        /// The API operation.
        operation: &'static str,
    },
    /// This process has no RDS client (a [`crate::work::LiveWork`] built
    /// without one).
    #[error(
        "snapshot {snapshot} of {database} was asked for, but this process has no RDS client: nothing was migrated"
    )]
    NoClient {
        /// The instance or cluster.
        database: SnapshotSource,
        /// The snapshot's name.
        snapshot: String,
    },
    /// Anything else: throttling, network, service errors.
    #[error("RDS {operation} of snapshot {snapshot} failed: {message}; nothing was migrated")]
    Service {
        /// The snapshot's name.
        snapshot: String,
        /// The API operation.
        operation: &'static str,
        /// What the service or the network said.
        message: String,
    },
}

impl SnapshotError {
    /// The Lambda error type: `SnapshotPending` for a snapshot still being
    /// created (the continuation's case), else `SnapshotError`.
    pub fn kind(&self) -> &'static str {
        match self {
            SnapshotError::StillCreating { .. } => "SnapshotPending",
            _ => "SnapshotError",
        }
    }
}

/// A snapshot's state once waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotState {
    /// Ready: the migrations may run.
    Available,
    /// Still being created when the time ran out.
    StillCreating {
        /// The snapshot's name.
        id: String,
        /// Its last status (`creating`, ...).
        status: String,
    },
}

/// The RDS operations a snapshot before migrating needs.
pub trait Snapshots: Send + Sync {
    /// The status of snapshot `id` of `source` (`creating`, `available`,
    /// ...), or `None` when there is no such snapshot.
    fn status(
        &self,
        source: &SnapshotSource,
        id: &str,
    ) -> impl Future<Output = Result<Option<String>, SnapshotError>> + Send;
    /// Starts a manual snapshot `id` of `source`; returns its status.
    /// A snapshot of that name that exists already is
    /// [`SnapshotError::AlreadyExists`].
    fn create(
        &self,
        source: &SnapshotSource,
        id: &str,
    ) -> impl Future<Output = Result<String, SnapshotError>> + Send;
}

/// The process without an RDS client: every call is [`SnapshotError::NoClient`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSnapshots;

impl Snapshots for NoSnapshots {
    async fn status(
        &self,
        source: &SnapshotSource,
        id: &str,
    ) -> Result<Option<String>, SnapshotError> {
        Err(SnapshotError::NoClient {
            database: source.clone(),
            snapshot: id.into(),
        })
    }

    async fn create(&self, source: &SnapshotSource, id: &str) -> Result<String, SnapshotError> {
        self.status(source, id).await.map(|_| String::new())
    }
}

/// A snapshot found or started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// Its status then.
    pub status: String,
    /// True when it existed already (a retry of the same request).
    pub reused: bool,
}

/// Finds snapshot `id` (a retry of the same request) or starts it.
pub async fn start<R: Snapshots>(
    rds: &R,
    source: &SnapshotSource,
    id: &str,
) -> Result<Started, SnapshotError> {
    if let Some(status) = rds.status(source, id).await? {
        info!(snapshot = id, database = %source, %status, "the snapshot of this request exists: reusing it");
        return Ok(Started {
            status,
            reused: true,
        });
    }
    match rds.create(source, id).await {
        Ok(status) => {
            info!(snapshot = id, database = %source, %status, "snapshot started");
            Ok(Started {
                status,
                reused: false,
            })
        }
        // Another invocation of the same request created it in between.
        Err(e @ SnapshotError::AlreadyExists { .. }) => match rds.status(source, id).await? {
            Some(status) => Ok(Started {
                status,
                reused: true,
            }),
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Statuses a snapshot does not come back from.
fn is_failed(status: &str) -> bool {
    matches!(status, "failed" | "error" | "deleting" | "deleted")
}

/// Polls snapshot `id` every `pause` until it is `available` (Ok
/// [`SnapshotState::Available`]), has failed (Err [`SnapshotError::Failed`]),
/// or the next poll would come after `until` (Ok
/// [`SnapshotState::StillCreating`], with the last status seen). The status
/// is read at least once, even when `until` has passed.
pub async fn wait_available<R: Snapshots>(
    rds: &R,
    source: &SnapshotSource,
    id: &str,
    pause: Duration,
    until: Instant,
) -> Result<SnapshotState, SnapshotError> {
    loop {
        let status = rds
            .status(source, id)
            .await?
            .ok_or_else(|| SnapshotError::Vanished {
                database: source.clone(),
                snapshot: id.into(),
            })?;
        if status == "available" {
            return Ok(SnapshotState::Available);
        }
        if is_failed(&status) {
            return Err(SnapshotError::Failed {
                database: source.clone(),
                snapshot: id.into(),
                status,
            });
        }
        if Instant::now() + pause >= until {
            return Ok(SnapshotState::StillCreating {
                id: id.into(),
                status,
            });
        }
        info!(snapshot = id, %status, "waiting for the snapshot");
        tokio::time::sleep(pause).await;
    }
}

/// RDS through the AWS SDK (the client is built once in `main`).
#[derive(Clone)]
pub struct RdsSnapshots {
    client: aws_sdk_rds::Client,
}

impl RdsSnapshots {
    /// Wraps a client. An AccessDenied is retried (see
    /// [`aws::ACCESS_DENIED_RETRIES`]): the policy may be minutes old.
    pub fn new(client: aws_sdk_rds::Client) -> Self {
        RdsSnapshots { client }
    }

    async fn call<T, E, Fut>(
        &self,
        source: &SnapshotSource,
        id: &str,
        operation: &'static str,
        mut f: impl FnMut() -> Fut,
    ) -> Result<T, SnapshotError>
    where
        Fut: Future<Output = Result<T, SdkError<E, aws_sdk_rds::config::http::HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        aws::retry_denied(
            aws::ACCESS_DENIED_RETRIES,
            |e: &SnapshotError| matches!(e, SnapshotError::AccessDenied { .. }),
            id,
            operation,
            || {
                let call = f();
                async move { call.await.map_err(|e| classify(source, id, operation, &e)) }
            },
        )
        .await
    }
}

/// Sorts an SDK error by its code.
fn classify<E, R>(
    source: &SnapshotSource,
    id: &str,
    operation: &'static str,
    e: &SdkError<E, R>,
) -> SnapshotError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    let database = source.clone();
    let snapshot = id.to_string();
    match aws::code(e).as_deref() {
        Some("DBInstanceNotFound" | "DBInstanceNotFoundFault" | "DBClusterNotFoundFault") => {
            SnapshotError::SourceNotFound {
                database,
                snapshot,
                operation,
            }
        }
        Some(
            "DBSnapshotAlreadyExists"
            | "DBSnapshotAlreadyExistsFault"
            | "DBClusterSnapshotAlreadyExistsFault",
        ) => SnapshotError::AlreadyExists {
            snapshot,
            operation,
        },
        Some(
            "DBSnapshotNotFound" | "DBSnapshotNotFoundFault" | "DBClusterSnapshotNotFoundFault",
        ) => SnapshotError::NotFound {
            snapshot,
            operation,
        },
        Some("AccessDenied" | "AccessDeniedException") => SnapshotError::AccessDenied {
            database,
            snapshot,
            operation,
        },
        Some(
            "InvalidDBInstanceState"
            | "InvalidDBInstanceStateFault"
            | "InvalidDBClusterStateFault"
            | "SnapshotQuotaExceeded"
            | "SnapshotQuotaExceededFault",
        ) => SnapshotError::Refused {
            database,
            snapshot,
            operation,
            message: aws::message(e),
        },
        _ => SnapshotError::Service {
            snapshot,
            operation,
            message: aws::message(e),
        },
    }
}

/// A snapshot's status as RDS gave it (`unknown` when it gave none: waited for).
fn known(status: Option<&str>) -> String {
    status.unwrap_or("unknown").to_string()
}

impl Snapshots for RdsSnapshots {
    async fn status(
        &self,
        source: &SnapshotSource,
        id: &str,
    ) -> Result<Option<String>, SnapshotError> {
        let operation = source.describe_operation();
        let status = match source {
            SnapshotSource::Instance(_) => self
                .call(source, id, operation, || {
                    self.client
                        .describe_db_snapshots()
                        .db_snapshot_identifier(id)
                        .send()
                })
                .await
                .map(|out| out.db_snapshots().first().map(|s| known(s.status()))),
            SnapshotSource::Cluster(_) => self
                .call(source, id, operation, || {
                    self.client
                        .describe_db_cluster_snapshots()
                        .db_cluster_snapshot_identifier(id)
                        .send()
                })
                .await
                .map(|out| {
                    out.db_cluster_snapshots()
                        .first()
                        .map(|s| known(s.status()))
                }),
        };
        match status {
            Ok(status) => Ok(status),
            Err(SnapshotError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create(&self, source: &SnapshotSource, id: &str) -> Result<String, SnapshotError> {
        let operation = source.create_operation();
        let status = match source {
            SnapshotSource::Instance(db) => self
                .call(source, id, operation, || {
                    self.client
                        .create_db_snapshot()
                        .db_snapshot_identifier(id)
                        .db_instance_identifier(db)
                        .send()
                })
                .await?
                .db_snapshot()
                .and_then(|s| s.status())
                .map(str::to_string),
            SnapshotSource::Cluster(cluster) => self
                .call(source, id, operation, || {
                    self.client
                        .create_db_cluster_snapshot()
                        .db_cluster_snapshot_identifier(id)
                        .db_cluster_identifier(cluster)
                        .send()
                })
                .await?
                .db_cluster_snapshot()
                .and_then(|s| s.status())
                .map(str::to_string),
        };
        Ok(status.unwrap_or_else(|| "creating".into()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::migrate::options::{Phase, TransactionMode};
    use crate::migrate::parse::test_set;
    use crate::migrate::plan::{AppliedMigration, plan};
    use crate::migrate::status::planned_steps;

    const STACK: &str = "arn:aws:cloudformation:eu-west-1:123456789012:stack/MyApp-Prod/6a1d2e00-1111-2222-3333-444455556666";
    const REQUEST: &str = "5b1c7f3e-8a2d-4c6b-9e0f-1a2b3c4d5e6f";

    #[test]
    fn the_name_is_the_stack_and_the_request() {
        let id = snapshot_id(STACK, REQUEST);
        assert_eq!(id, format!("db-setup-myapp-prod-{REQUEST}"));
        assert_eq!(check_identifier(&id, MAX_SNAPSHOT_ID), Ok(()));
        assert!(id.starts_with(&format!("{}-", snapshot_prefix(STACK))));
        // The same request names the same snapshot; another request another one.
        assert_eq!(snapshot_id(STACK, REQUEST), id);
        assert_ne!(
            snapshot_id(STACK, "5b1c7f3e-8a2d-4c6b-9e0f-1a2b3c4d5e60"),
            id
        );
    }

    #[test]
    fn the_prefix_is_the_constructs() {
        // The same cases as infra/test/db-setup.test.ts (snapshotPrefix), whose
        // IAM policy allows `snapshot:<prefix>-*`.
        let arn = |name: &str| format!("arn:aws:cloudformation:r:1:stack/{name}/x");
        assert_eq!(snapshot_prefix(&arn("MyApp-Prod")), "db-setup-myapp-prod");
        assert_eq!(snapshot_prefix(&arn("a--b-")), "db-setup-a-b");
        assert_eq!(snapshot_prefix(&arn("test")), "db-setup-test");
        assert_eq!(snapshot_prefix(""), "db-setup");
        assert_eq!(
            snapshot_prefix(&arn(&"x".repeat(200))),
            format!("db-setup-{}", "x".repeat(128))
        );
    }

    #[test]
    fn any_stack_and_request_make_a_valid_identifier() {
        let long = "x".repeat(1000);
        let cases = [
            (STACK, REQUEST),
            (STACK, ""),
            ("", ""),
            ("local-stack", "Req--ID__with spaces-"),
            ("arn:aws:cloudformation:r:1:stack/a--b-/x", "-"),
            ("arn:aws:cloudformation:r:1:stack/9lives/x", "ÄÖÜ"),
            (long.as_str(), long.as_str()),
            (STACK, long.as_str()),
            (long.as_str(), REQUEST),
        ];
        for (stack, request) in cases {
            let id = snapshot_id(stack, request);
            assert_eq!(
                check_identifier(&id, MAX_SNAPSHOT_ID),
                Ok(()),
                "{stack} {request}: {id}"
            );
            assert!(
                id.starts_with(&snapshot_prefix(stack)),
                "{stack} {request}: {id}"
            );
        }
    }

    #[test]
    fn ids_that_clean_alike_still_name_different_snapshots() {
        let a = snapshot_id(STACK, "Request_1");
        let b = snapshot_id(STACK, "request-1");
        let c = snapshot_id(STACK, "request 1");
        assert_eq!(b, "db-setup-myapp-prod-request-1");
        assert!(a.starts_with("db-setup-myapp-prod-request-1-"), "{a}");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(b, c);
        // Cut requests keep their hash: two long ids differing at the end differ.
        let long = "r".repeat(400);
        assert_ne!(
            snapshot_id(STACK, &format!("{long}1")),
            snapshot_id(STACK, &format!("{long}2"))
        );
        assert_eq!(snapshot_id(STACK, &long).len(), MAX_SNAPSHOT_ID);
    }

    #[test]
    fn identifiers_are_checked_rule_by_rule() {
        assert_eq!(check_identifier("mydb-1", MAX_SOURCE_ID), Ok(()));
        for (bad, rule) in [
            ("", "empty"),
            ("1db", "start with a letter"),
            ("my_db", "other than letters"),
            ("my--db", "two hyphens"),
            ("mydb-", "ends with one"),
        ] {
            let e = check_identifier(bad, MAX_SOURCE_ID).unwrap_err();
            assert!(e.contains(rule), "{bad}: {e}");
        }
        let e = check_identifier(&"a".repeat(64), MAX_SOURCE_ID).unwrap_err();
        assert!(e.contains("too long") && e.contains("at most 63"), "{e}");
    }

    fn applied(names: &[&str]) -> Vec<AppliedMigration> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| AppliedMigration {
                id: i as i64 + 1,
                name: (*n).into(),
                run_on: "2026-01-01 00:00:00".into(),
                checksum: None,
                execution_ms: None,
            })
            .collect()
    }

    /// The decision on the plan the status report gives for this history,
    /// target and phase.
    fn decide(done: &[&str], up_to: Option<&str>, phase: Option<Phase>) -> bool {
        let set = test_set(&[
            ("001_a.sql", "CREATE TABLE a (x int)"),
            ("002_b.sql", "CREATE TABLE b (x int)"),
            (
                "003_drop.sql",
                "-- db-setup: phase=contract\nALTER TABLE a DROP COLUMN x",
            ),
        ]);
        let steps = plan(&applied(done), &set, up_to)
            .ok()
            .map(|p| planned_steps(&p.in_phase(phase), TransactionMode::Batch));
        wanted(steps.as_deref())
    }

    #[test]
    fn a_snapshot_only_when_the_run_has_migrations_to_run() {
        // Pending migrations: a snapshot.
        assert!(decide(&[], None, None));
        assert!(decide(&["001_a"], None, None));
        // A no-op deploy: none.
        assert!(!decide(&["001_a", "002_b", "003_drop"], None, None));
        // Pending ones held back by the target only: none.
        assert!(!decide(&["001_a"], Some("001_a"), None));
        // A history the run refuses (an applied name without a file): none,
        // the migrate says why.
        assert!(!decide(
            &["001_a", "002_b", "003_drop", "004_gone"],
            None,
            None
        ));
    }

    #[test]
    fn the_decision_follows_the_phase() {
        // Only the contract migration is pending: the expand run has nothing
        // to run (no snapshot), the contract run has (a snapshot).
        let done = ["001_a", "002_b"];
        assert!(!decide(&done, None, Some(Phase::Expand)));
        assert!(decide(&done, None, Some(Phase::Contract)));
        assert!(decide(&done, None, None));
        // An expand migration pending before it: the expand run takes one.
        assert!(decide(&["001_a"], None, Some(Phase::Expand)));
    }

    /// Snapshots whose statuses are scripted: RDS's `creating` phase, which
    /// moto never shows (its snapshots are available at once).
    struct Scripted {
        statuses: Mutex<Vec<Option<&'static str>>>,
        created: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn new(statuses: &[Option<&'static str>]) -> Self {
            Scripted {
                statuses: Mutex::new(statuses.iter().rev().copied().collect()),
                created: Mutex::new(Vec::new()),
            }
        }
    }

    impl Snapshots for Scripted {
        async fn status(
            &self,
            _source: &SnapshotSource,
            _id: &str,
        ) -> Result<Option<String>, SnapshotError> {
            let mut s = self.statuses.lock().unwrap();
            let next = if s.len() > 1 {
                s.pop()
            } else {
                s.last().copied()
            };
            Ok(next.flatten().map(str::to_string))
        }

        async fn create(
            &self,
            _source: &SnapshotSource,
            id: &str,
        ) -> Result<String, SnapshotError> {
            self.created.lock().unwrap().push(id.into());
            Ok("creating".into())
        }
    }

    fn db() -> SnapshotSource {
        SnapshotSource::Instance("mydb".into())
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_polls_until_available() {
        let rds = Scripted::new(&[Some("creating"), Some("creating"), Some("available")]);
        let until = Instant::now() + Duration::from_secs(3600);
        let state = wait_available(&rds, &db(), "s", Duration::from_secs(10), until).await;
        assert_eq!(state, Ok(SnapshotState::Available));
        assert!(rds.statuses.lock().unwrap().len() == 1, "three polls");
    }

    #[tokio::test]
    async fn waiting_stops_at_the_budget_with_the_last_status() {
        let rds = Scripted::new(&[Some("creating")]);
        // Already past: one look, then the state.
        let state = wait_available(&rds, &db(), "s", Duration::from_secs(10), Instant::now()).await;
        assert_eq!(
            state,
            Ok(SnapshotState::StillCreating {
                id: "s".into(),
                status: "creating".into()
            })
        );
    }

    #[tokio::test]
    async fn a_failed_or_vanished_snapshot_is_an_error() {
        let until = Instant::now() + Duration::from_secs(3600);
        let pause = Duration::from_millis(1);
        let failed = wait_available(&Scripted::new(&[Some("failed")]), &db(), "s", pause, until)
            .await
            .unwrap_err();
        assert!(
            failed
                .to_string()
                .starts_with("snapshot s of DB instance mydb has status `failed`: it is no backup, so nothing was migrated"),
            "{failed}"
        );
        let gone = wait_available(&Scripted::new(&[None]), &db(), "s", pause, until)
            .await
            .unwrap_err();
        assert!(matches!(gone, SnapshotError::Vanished { .. }), "{gone}");
    }

    #[tokio::test]
    async fn start_reuses_the_snapshot_of_the_same_request() {
        let rds = Scripted::new(&[Some("creating")]);
        let started = start(&rds, &db(), "s").await.unwrap();
        assert!(started.reused);
        assert!(rds.created.lock().unwrap().is_empty());
        let rds = Scripted::new(&[None]);
        let started = start(&rds, &db(), "s").await.unwrap();
        assert!(!started.reused);
        assert_eq!(*rds.created.lock().unwrap(), ["s"]);
    }

    #[test]
    fn the_still_creating_error_names_the_snapshot_and_its_status() {
        let e = SnapshotError::StillCreating {
            database: SnapshotSource::Cluster("aurora-1".into()),
            snapshot: "db-setup-app-r1".into(),
            status: "creating".into(),
            waited: Duration::from_secs(840),
        };
        assert_eq!(e.kind(), "SnapshotPending");
        assert!(
            e.to_string().starts_with(
                "snapshot db-setup-app-r1 of DB cluster aurora-1 is still `creating` after 840s"
            ),
            "{e}"
        );
        let denied = SnapshotError::AccessDenied {
            database: SnapshotSource::Instance("mydb".into()),
            snapshot: "db-setup-app-r1".into(),
            operation: "CreateDBSnapshot",
        };
        assert!(
            denied.to_string().contains(
                "grant rds:CreateDBSnapshot on the DB instance mydb and on snapshot db-setup-app-r1"
            ),
            "{denied}"
        );
    }
}
