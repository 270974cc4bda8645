//! The production [`crate::handler::Work`]: reads the admin secret, connects,
//! and sequences the steps (an RDS snapshot when asked for and migrations are
//! pending, migrate, then the users step in [`crate::users::apply`]); the
//! manual actions.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use tokio_postgres::Client;
use tracing::{info, warn};

use crate::config::Config;
use crate::continuation::{Chain, ChainError, Claim, Record};
use crate::db::{self, ConnectOptions, Connection, Target, Tls};
use crate::error::SetupError;
use crate::event::{Action, CfnRequest, RequestType};
use crate::fleet::DatabaseTarget;
use crate::handler::{Deployed, Progress, Work};
use crate::insight;
use crate::migrate::options::Phase;
use crate::migrate::{
    MigrateError, MigrationSet, Migrator, PlanReport, RunOptions, TransactionMode,
};
use crate::pg::ServerError;
use crate::respond::Data;
use crate::secrets::{AWSCURRENT, SecretStore, SecretsError, parse_rds_secret};
use crate::snapshot::{self, NoSnapshots, SnapshotError, SnapshotSource, SnapshotState, Snapshots};
use crate::users::apply::{self, Site, UserOutcome};
use crate::users::credentials;
use crate::users::database::PgUsers;
use crate::verify::{self, Spec, catalog};

/// Whether the migrations may start, as far as the snapshot goes.
enum SnapshotStep {
    /// No migration to run: no snapshot.
    NotNeeded,
    /// The snapshot is available.
    Ready(String),
    /// The snapshot is still being created at this invocation's yield point.
    StillCreating {
        /// Migrations pending.
        left: usize,
        /// Migrations the history holds.
        before: usize,
    },
}

/// The admin connection's target and the admin secret's ARN.
struct Admin {
    target: Target,
    secret_arn: String,
}

/// The production work: Secrets Manager (or any [`SecretStore`]), PostgreSQL
/// and, for the snapshot before migrating, RDS (any [`Snapshots`]; none
/// until [`LiveWork::with_snapshots`]).
pub struct LiveWork<S: SecretStore, R: Snapshots = NoSnapshots> {
    config: Config,
    secrets: S,
    snapshots: R,
    tls: Tls,
    migrations: MigrationSet,
    spec: Spec,
}

impl<S: SecretStore + 'static> LiveWork<S> {
    /// Everything built once per process.
    pub fn new(config: Config, secrets: S, tls: Tls, migrations: MigrationSet, spec: Spec) -> Self {
        LiveWork {
            config,
            secrets,
            snapshots: NoSnapshots,
            tls,
            migrations,
            spec,
        }
    }
}

impl<S: SecretStore + 'static, R: Snapshots + 'static> LiveWork<S, R> {
    /// The same work with RDS `snapshots` (a request with
    /// `SnapshotDbInstance` or `SnapshotDbCluster` needs it).
    pub fn with_snapshots<T: Snapshots>(self, snapshots: T) -> LiveWork<S, T> {
        LiveWork {
            config: self.config,
            secrets: self.secrets,
            snapshots,
            tls: self.tls,
            migrations: self.migrations,
            spec: self.spec,
        }
    }

    fn connect_options(&self, attempts: u32) -> ConnectOptions {
        ConnectOptions {
            timeout: self.config.connect_timeout,
            attempts,
            ..ConnectOptions::default()
        }
    }

    /// The admin secret and where to connect: the configured database, or
    /// `database` (a fleet's member, from the input) with its own secret and
    /// endpoint overrides.
    async fn admin(
        &self,
        progress: &Progress,
        database: Option<&DatabaseTarget>,
    ) -> Result<Admin, SetupError> {
        progress.step(match database {
            Some(d) => format!("reading the admin secret of database {}", d.name),
            None => "reading the admin secret".into(),
        });
        let id = match database {
            Some(d) => &d.secret_id,
            None => &self.config.admin_secret_id,
        };
        let overrides = database.map(DatabaseTarget::overrides);
        let secret = self
            .secrets
            .get(id, AWSCURRENT)
            .await
            .map_err(SetupError::AdminSecret)?
            .ok_or_else(|| {
                SetupError::AdminSecret(SecretsError::NotFound {
                    id: id.clone(),
                    operation: "GetSecretValue",
                })
            })?;
        let creds = parse_rds_secret(id, &secret.text)?;
        Ok(Admin {
            target: overrides
                .as_ref()
                .unwrap_or(&self.config.db)
                .resolve(creds)
                .map_err(|_| SetupError::NoHost)?,
            secret_arn: secret.arn,
        })
    }

    /// Connects; the step names the endpoint, or only `label` (a fleet
    /// member's name: an endpoint from the input is not logged).
    async fn connect(
        &self,
        target: &Target,
        label: Option<&str>,
        progress: &Progress,
    ) -> Result<Connection, SetupError> {
        progress.step(match label {
            Some(name) => format!("connecting to database {name}"),
            None => format!("connecting to {}", target.endpoint()),
        });
        let options = ConnectOptions {
            label: label.map(str::to_string),
            ..self.connect_options(self.config.connect_attempts)
        };
        let connection = db::connect(target, &self.tls, &options).await?;
        progress.watch(connection.canceller());
        Ok(connection)
    }

    /// The database side of the credentials protocol: logins checked with one
    /// attempt each, passwords set through the admin connection.
    fn user_db<'a>(&'a self, admin: &'a Admin, client: &'a Client) -> PgUsers<'a> {
        PgUsers {
            base: &admin.target,
            tls: &self.tls,
            options: self.connect_options(1),
            admin: client,
        }
    }

    fn run_options(&self, mode: Option<TransactionMode>, up_to: Option<String>) -> RunOptions {
        self.phase_options(mode, up_to, None)
    }

    fn phase_options(
        &self,
        mode: Option<TransactionMode>,
        up_to: Option<String>,
        phase: Option<Phase>,
    ) -> RunOptions {
        RunOptions {
            mode: mode.unwrap_or(self.config.transaction_mode),
            lock_wait: self.config.lock_wait,
            lock_timeout: self.config.lock_timeout,
            statement_timeout: self.config.statement_timeout,
            lock_retries: self.config.lock_retries,
            up_to,
            phase,
            ..RunOptions::default()
        }
    }

    /// The users step (roles, then credentials), under the role lock.
    async fn ensure_users(
        &self,
        client: &Client,
        admin: &Admin,
        progress: &Progress,
    ) -> Result<Vec<UserOutcome>, SetupError> {
        let prefix = apply::prefix(self.config.role_prefix.as_deref(), &admin.target.dbname)?;
        let site = Site {
            database: &admin.target.dbname,
            host: &admin.target.host,
            port: admin.target.port,
            admin: &admin.target.user,
            admin_secret_arn: &admin.secret_arn,
            prefix: &prefix,
        };
        let step = |s: String| progress.step(s);
        Ok(apply::ensure(
            client,
            &self.secrets,
            &self.user_db(admin, client),
            &site,
            &self.config.users,
            self.config.lock_wait,
            &step,
        )
        .await?)
    }

    /// The snapshot before migrating, when this run has migrations to run
    /// (the status's plan, cut to the request's phase and target): found
    /// (a retry of the same request) or started, then waited for until
    /// shortly before the work's deadline. Returns its name, or `None` when
    /// nothing is pending.
    async fn snapshot_if_pending(
        &self,
        request: &CfnRequest,
        source: &SnapshotSource,
        client: &Client,
        options: &RunOptions,
        chain: &Chain,
        progress: &Progress,
    ) -> Result<SnapshotStep, SetupError> {
        progress.step("planning (is a snapshot needed?)");
        let status = Migrator::new(client, options.clone())
            .status(&self.migrations)
            .await?;
        if !snapshot::wanted(status.plan.as_deref()) {
            info!(database = %source, "no migration to run: no snapshot taken");
            return Ok(SnapshotStep::NotNeeded);
        }
        let (pending, applied_before) = (status.pending.len(), status.applied.len());
        let id = snapshot::snapshot_id(&request.reply.stack_id, &request.reply.request_id);
        progress.step(format!("snapshotting {source} as {id}"));
        let started = snapshot::start(&self.snapshots, source, &id).await?;
        progress.step(format!("waiting for snapshot {id} to be available"));
        let waiting = Instant::now();
        let deadline = progress
            .deadline()
            .map(|d| {
                d.checked_sub(crate::defaults::SNAPSHOT_WAIT_MARGIN)
                    .unwrap_or(d)
            })
            .unwrap_or_else(|| waiting + self.config.time_budget);
        // In a chain, the wait ends at the yield point: the next invocation
        // finds the same snapshot (its name is the request's) and waits on.
        let until = chain.yield_at.map_or(deadline, |at| at.min(deadline));
        match snapshot::wait_available(
            &self.snapshots,
            source,
            &id,
            self.config.snapshot_poll,
            until,
        )
        .await?
        {
            SnapshotState::Available => {
                info!(snapshot = %id, database = %source, reused = started.reused, "snapshot available: migrating");
                Ok(SnapshotStep::Ready(id))
            }
            SnapshotState::StillCreating { id, status } if chain.yield_at.is_some() => {
                info!(snapshot = %id, database = %source, status = %status,
                      "the snapshot is not available yet: the next invocation waits on");
                Ok(SnapshotStep::StillCreating {
                    left: pending,
                    before: applied_before,
                })
            }
            SnapshotState::StillCreating { id, status } => Err(SnapshotError::StillCreating {
                database: source.clone(),
                snapshot: id,
                status,
                waited: waiting.elapsed(),
            }
            .into()),
        }
    }

    /// Create/Update. On an Update that carries another set's MigrationsHash
    /// (new code, old template: a rollback), or that finds the database ahead
    /// of this code (old code, after newer migrations), nothing is run:
    /// migrations are forward-only and a rollback must not fail.
    ///
    /// In a chain of invocations ([`crate::continuation`]), the chain's turn
    /// is claimed first (a copy of an event ends here, quietly), handed over
    /// when the migrations stop at the chain's yield point, and the chain is
    /// marked finished when it ends, whatever the outcome.
    async fn deploy_inner(
        &self,
        request: CfnRequest,
        chain: Chain,
        progress: Progress,
    ) -> Result<Deployed, SetupError> {
        let is_update = request.request_type == RequestType::Update;
        if let Some(hash) = request
            .properties
            .migrations_hash
            .as_deref()
            .filter(|_| is_update)
        {
            if hash != self.migrations.hash() {
                let note = "this Update was built for other migrations than this code holds (a rollback): \
                            migrations are forward-only, nothing was run. If this was not a rollback, the function's \
                            package is older than the template's migrations/: run `make package` and deploy again";
                warn!(
                    requested = hash,
                    embedded = self.migrations.hash(),
                    "{note}"
                );
                return Ok(Deployed::Done(Data::message(note)));
            }
        }
        let admin = self.admin(&progress, None).await?;
        let connection = self.connect(&admin.target, None, &progress).await?;
        let client = connection.client();
        let chained = chain.record;
        let record = Record::new(client, &request.reply.request_id);
        if chained {
            progress.step(format!(
                "claiming invocation {} of the chain",
                chain.sequence
            ));
            match record
                .claim(chain.sequence)
                .await
                .map_err(ChainError::from)?
            {
                Claim::Run => {}
                Claim::Skip(why) => return Ok(Deployed::Skipped(why)),
                Claim::Lost(why) => return Err(ChainError::Lost(why).into()),
            }
        }
        let result = self
            .deploy_steps(&request, &chain, &admin, client, &progress)
            .await;
        match &result {
            Ok(Deployed::Continue { .. }) => {
                progress.step(format!(
                    "handing the chain over to invocation {}",
                    chain.sequence + 1
                ));
                record
                    .hand_over(chain.sequence + 1)
                    .await
                    .map_err(ChainError::from)?;
            }
            _ if chained && chain.sequence > 0 => {
                if let Err(e) = record.finish().await {
                    warn!(error = %e, "could not mark the chain finished: a late copy of its last event would run again (harmlessly: the history makes it a no-op)");
                }
            }
            _ => {}
        }
        progress.finish();
        result
    }

    /// The migrations, then (when they are all done) the users step.
    async fn deploy_steps(
        &self,
        request: &CfnRequest,
        chain: &Chain,
        admin: &Admin,
        client: &Client,
        progress: &Progress,
    ) -> Result<Deployed, SetupError> {
        let is_update = request.request_type == RequestType::Update;
        let phase = request.properties.phase;
        let options = RunOptions {
            yield_at: chain.yield_at,
            ..self.phase_options(
                request.properties.transaction_mode,
                request.properties.target_migration.clone(),
                phase,
            )
        };
        let snapshot = match &request.properties.snapshot {
            Some(source) => {
                match self
                    .snapshot_if_pending(request, source, client, &options, chain, progress)
                    .await?
                {
                    SnapshotStep::NotNeeded => None,
                    SnapshotStep::Ready(id) => Some(id),
                    SnapshotStep::StillCreating { left, before } => {
                        return Ok(Deployed::Continue {
                            applied: Vec::new(),
                            left,
                            before: chain.before.unwrap_or(before),
                        });
                    }
                }
            }
            None => None,
        };
        progress.step(match phase {
            Some(p) => format!("migrating ({p} phase)"),
            None => "migrating".to_string(),
        });
        let report = match Migrator::new(client, options)
            .migrate(&self.migrations)
            .await
        {
            Ok(report) => report,
            Err(MigrateError::Plan(e)) if is_update && e.is_database_ahead() => {
                let note = format!(
                    "{e}; as this is an Update (a rollback to older code), nothing was run"
                );
                warn!("{note}");
                return Ok(Deployed::Done(Data::message(note)));
            }
            Err(e) => return Err(e.into()),
        };
        progress.count(|c| {
            c.migrations_applied = report.applied.len() as u64;
            c.lock_wait_ms = report.lock_wait_ms;
        });
        // The history's size before the deploy: this run's plan tells in
        // the deploy's first invocation, the marker in the next ones.
        let before = chain.before.unwrap_or(report.already_applied);
        if !report.left_for_next.is_empty() {
            return Ok(Deployed::Continue {
                applied: report.applied.iter().map(|s| s.name.clone()).collect(),
                left: report.left_for_next.len(),
                before,
            });
        }
        // The whole deploy's count (every invocation of a chain), for `Data`
        // and the deploy metrics the last invocation emits.
        let applied = (report.already_applied + report.applied.len()).saturating_sub(before);
        progress.count(|c| c.migrations_applied = applied as u64);
        let mut data = Data {
            applied: Some(applied),
            already_applied: Some(before),
            last_migration: Some(report.last_migration.unwrap_or_default()),
            phase,
            waits_for_contract: phase.map(|_| report.waits_for_contract.join(",")),
            invocations: (chain.record && chain.sequence > 0)
                .then_some(chain.sequence as usize + 1),
            snapshot,
            ..Data::default()
        };
        if request.properties.manage_users {
            let reports = self.ensure_users(client, admin, progress).await?;
            let rotated = reports.iter().filter(|r| r.rotated()).count();
            progress.count(|c| c.users_rotated = rotated as u64);
            data.users = Some(reports.len());
            data.users_rotated = Some(rotated);
        }
        Ok(Deployed::Done(data))
    }

    async fn action_inner(&self, action: Action, progress: Progress) -> Result<Value, SetupError> {
        let database = match &action {
            Action::Migrate { database, .. } => database.clone(),
            _ => None,
        };
        let admin = self.admin(&progress, database.as_ref()).await?;
        let label = database.as_ref().map(|d| d.name.as_str());
        let connection = self.connect(&admin.target, label, &progress).await?;
        let client = connection.client();
        let to_json = |v: Result<Value, serde_json::Error>| {
            v.unwrap_or_else(|e| json!({ "error": e.to_string() }))
        };
        let report = match action {
            Action::Status => {
                progress.step("reading the migration status");
                let status = Migrator::new(client, self.run_options(None, None))
                    .status(&self.migrations)
                    .await?;
                to_json(serde_json::to_value(status))
            }
            Action::Plan { to, mode, phase } => {
                progress.step("planning");
                let status = Migrator::new(client, self.phase_options(mode, to, phase))
                    .status(&self.migrations)
                    .await?;
                to_json(serde_json::to_value(PlanReport::from(status)))
            }
            Action::Baseline { to, force, confirm } => {
                progress.step(format!("baselining up to {to}"));
                let report = Migrator::new(client, self.run_options(None, None))
                    .baseline(&self.migrations, &self.spec, &to, force, confirm)
                    .await?;
                to_json(serde_json::to_value(report))
            }
            Action::Repair {
                accept_checksums,
                forget,
                confirm,
            } => {
                progress.step("repairing the history");
                let report = Migrator::new(client, self.run_options(None, None))
                    .repair(&self.migrations, &accept_checksums, &forget, confirm)
                    .await?;
                to_json(serde_json::to_value(report))
            }
            Action::Migrate {
                to,
                mode,
                phase,
                database,
            } => {
                progress.step("migrating");
                let report = Migrator::new(client, self.phase_options(mode, to, phase))
                    .migrate(&self.migrations)
                    .await?;
                let mut value = to_json(serde_json::to_value(report));
                if let (Some(d), Value::Object(map)) = (database, &mut value) {
                    map.insert("database".into(), json!(d.name));
                }
                value
            }
            Action::Verify => {
                progress.step("verifying the schema");
                let database = |step| {
                    move |e: tokio_postgres::Error| SetupError::Database {
                        step,
                        error: ServerError::from_pg(&e),
                    }
                };
                let report = verify::verify(client, &self.spec)
                    .await
                    .map_err(database("verifying the schema"))?;
                progress.step("comparing the catalog with the migrations' (drift)");
                let reference = catalog::embedded().map_err(|e| {
                    SetupError::Spec(verify::SpecError(format!(
                        "src/verify/catalog.json is invalid: {e}"
                    )))
                })?;
                // Without a prefix (a database name it cannot be derived
                // from), no managed role exists: their grants are not compared.
                let prefix = apply::prefix(
                    self.config.role_prefix.as_deref(),
                    &admin.target.dbname,
                )
                .unwrap_or_else(|e| {
                    warn!(error = %e, "no role prefix: the managed roles' grants are not compared");
                    String::new()
                });
                let live = catalog::capture(client, &prefix)
                    .await
                    .map_err(database("reading the catalog for drift"))?;
                to_json(serde_json::to_value(
                    report.with_drift(catalog::diff(&reference, &live)),
                ))
            }
            Action::Insight(options) => {
                progress.step("reading the catalog and statistics views");
                let report =
                    insight::insight(client, &options)
                        .await
                        .map_err(|e| SetupError::Database {
                            step: "reading maintenance insight",
                            error: ServerError::from_pg(&e),
                        })?;
                to_json(serde_json::to_value(report))
            }
            Action::Users { ensure: true } => {
                let reports = self.ensure_users(client, &admin, &progress).await?;
                json!({ "users": reports })
            }
            Action::Users { ensure: false } => {
                let user_db = self.user_db(&admin, client);
                let mut statuses = Vec::new();
                for user in &self.config.users {
                    progress.step(format!("checking {}", user.username));
                    statuses.push(match user.secret_id() {
                        Some(id) => {
                            json!(credentials::status(&self.secrets, &user_db, user, id).await)
                        }
                        None => json!({"username": user.username, "auth": "iam",
                                       "problem": null}),
                    });
                }
                json!({ "users": statuses })
            }
        };
        progress.finish();
        info!("action done");
        Ok(report)
    }
}

impl<S: SecretStore + 'static, R: Snapshots + 'static> Work for LiveWork<S, R> {
    fn deploy(
        &self,
        request: CfnRequest,
        chain: Chain,
        progress: Progress,
    ) -> impl Future<Output = Result<Deployed, SetupError>> + Send {
        self.deploy_inner(request, chain, progress)
    }

    fn action(
        &self,
        action: Action,
        progress: Progress,
    ) -> impl Future<Output = Result<Value, SetupError>> + Send {
        self.action_inner(action, progress)
    }
}

/// The work of a process that could not start (invalid configuration, an
/// unreadable CA file, ...): every request fails with that error, its kind
/// and advice, so the stack gets an answer instead of waiting.
pub struct Unconfigured {
    /// Why.
    pub error: Arc<SetupError>,
}

impl Work for Unconfigured {
    async fn deploy(
        &self,
        _request: CfnRequest,
        _chain: Chain,
        _progress: Progress,
    ) -> Result<Deployed, SetupError> {
        Err(SetupError::Startup(self.error.clone()))
    }

    async fn action(&self, _action: Action, _progress: Progress) -> Result<Value, SetupError> {
        Err(SetupError::Startup(self.error.clone()))
    }
}
