//! The work itself, against the real services: read the admin secret,
//! connect, migrate, ensure the application users; and the manual actions.

use serde_json::{Map, Value, json};
use tokio_postgres::Client;
use tracing::{info, warn};

use crate::config::Config;
use crate::db::{self, ConnectOptions, Connection, Target, Tls, pipeline};
use crate::error::SetupError;
use crate::event::{Action, CfnRequest, RequestType};
use crate::handler::{Progress, Setup};
use crate::migrate::{
    MigrateError, MigrationSet, Migrator, RunOptions, ServerError, TransactionMode, lock,
};
use crate::secrets::{AWSCURRENT, SecretStore, SecretsError, UserSecretFields, parse_rds_secret};
use crate::users::credentials::{self, CredentialAction, CredentialReport};
use crate::users::database::PgUsers;
use crate::users::roles::{RoleContext, roles_script};
use crate::verify::{self, Spec};

/// The admin connection's target and the admin secret's ARN.
struct Admin {
    target: Target,
    secret_arn: String,
}

/// The production work: Secrets Manager (or any [`SecretStore`]) and PostgreSQL.
pub struct LiveSetup<S: SecretStore> {
    config: Config,
    secrets: S,
    tls: Tls,
    migrations: MigrationSet,
    spec: Spec,
}

impl<S: SecretStore + 'static> LiveSetup<S> {
    /// Everything built once per process.
    pub fn new(config: Config, secrets: S, tls: Tls, migrations: MigrationSet, spec: Spec) -> Self {
        LiveSetup {
            config,
            secrets,
            tls,
            migrations,
            spec,
        }
    }

    fn connect_options(&self, attempts: u32) -> ConnectOptions {
        ConnectOptions {
            timeout: self.config.connect_timeout,
            attempts,
            ..ConnectOptions::default()
        }
    }

    async fn admin(&self, progress: &Progress) -> Result<Admin, SetupError> {
        progress.step("reading the admin secret");
        let id = &self.config.admin_secret_id;
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
        let overrides = &self.config.db;
        let host = overrides
            .host
            .clone()
            .or(creds.host)
            .ok_or(SetupError::NoHost)?;
        Ok(Admin {
            target: Target {
                host,
                port: overrides.port.or(creds.port).unwrap_or(5432),
                dbname: overrides
                    .dbname
                    .clone()
                    .or(creds.dbname)
                    .unwrap_or_else(|| "postgres".into()),
                user: creds.username,
                password: creds.password,
            },
            secret_arn: secret.arn,
        })
    }

    async fn connect(
        &self,
        target: &Target,
        progress: &Progress,
    ) -> Result<Connection, SetupError> {
        progress.step(format!("connecting to {}", target.endpoint()));
        let connection = db::connect(
            target,
            &self.tls,
            &self.connect_options(self.config.connect_attempts),
        )
        .await?;
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

    fn run_options(&self, mode: Option<TransactionMode>, target: Option<String>) -> RunOptions {
        RunOptions {
            mode: mode.unwrap_or(self.config.transaction_mode),
            lock_wait: self.config.lock_wait,
            lock_timeout: self.config.lock_timeout,
            statement_timeout: self.config.statement_timeout,
            lock_retries: self.config.lock_retries,
            target,
            ..RunOptions::default()
        }
    }

    /// The users step: roles in one transaction, then each user's
    /// credentials, all under the role lock (role DDL is serialized).
    async fn ensure_users(
        &self,
        client: &Client,
        admin: &Admin,
        progress: &Progress,
    ) -> Result<Vec<CredentialReport>, SetupError> {
        if self.config.users.is_empty() {
            return Ok(Vec::new());
        }
        progress.step("waiting for the role lock");
        let database = |step| {
            move |e: tokio_postgres::Error| SetupError::Database {
                step,
                error: ServerError::from_pg(&e),
            }
        };
        match lock::acquire(client, lock::ROLE_KEY, self.config.lock_wait)
            .await
            .map_err(database("taking the role lock"))?
        {
            lock::Polled::Taken((), _) => {}
            lock::Polled::TimedOut(waited) => {
                return Err(SetupError::Migrate(MigrateError::LockTimeout {
                    waited,
                    holder: lock::holder(client, lock::ROLE_KEY).await.ok().flatten(),
                }));
            }
        }
        let result = self.ensure_users_locked(client, admin, progress).await;
        if let Err(e) = lock::release(client, lock::ROLE_KEY).await {
            warn!(error = %e, "could not release the role lock; the server releases it when the session ends");
        }
        result
    }

    async fn ensure_users_locked(
        &self,
        client: &Client,
        admin: &Admin,
        progress: &Progress,
    ) -> Result<Vec<CredentialReport>, SetupError> {
        progress.step("creating the application roles");
        let ctx = RoleContext {
            prefix: &self.config.role_prefix,
            dbname: &admin.target.dbname,
            schema: "public",
            owner: &admin.target.user,
        };
        let mut queries = vec!["BEGIN".to_string()];
        queries.extend(roles_script(&ctx, &self.config.users));
        queries.push("COMMIT".into());
        let results = pipeline(client, &queries).await;
        if let Some(e) = results.iter().find_map(|(r, _)| r.as_ref().err()) {
            let _ = client.simple_query("ROLLBACK").await;
            return Err(SetupError::Roles(ServerError::from_pg(e)));
        }
        let user_db = self.user_db(admin, client);
        let mut reports = Vec::new();
        for user in &self.config.users {
            progress.step(format!("ensuring the credentials of {}", user.username));
            let fields = UserSecretFields {
                host: admin.target.host.clone(),
                port: admin.target.port,
                dbname: admin.target.dbname.clone(),
                username: user.username.clone(),
                masterarn: admin.secret_arn.clone(),
            };
            reports.push(credentials::ensure(&self.secrets, &user_db, user, &fields).await?);
        }
        Ok(reports)
    }

    /// Create/Update. On an Update that carries another set's MigrationsHash
    /// (new code, old template: a rollback), or that finds the database ahead
    /// of this code (old code, after newer migrations), nothing is run:
    /// migrations are forward-only and a rollback must not fail.
    async fn deploy_inner(
        &self,
        request: CfnRequest,
        progress: Progress,
    ) -> Result<Map<String, Value>, SetupError> {
        let mut data = Map::new();
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
                data.insert("Message".into(), json!(note));
                return Ok(data);
            }
        }
        let admin = self.admin(&progress).await?;
        let connection = self.connect(&admin.target, &progress).await?;
        progress.step("migrating");
        let options = self.run_options(
            request.properties.transaction_mode,
            request.properties.target_migration.clone(),
        );
        match Migrator::new(connection.client(), options)
            .migrate(&self.migrations)
            .await
        {
            Ok(report) => {
                data.insert("Applied".into(), json!(report.applied.len().to_string()));
                data.insert(
                    "AlreadyApplied".into(),
                    json!(report.already_applied.to_string()),
                );
                data.insert(
                    "LastMigration".into(),
                    json!(report.last_migration.unwrap_or_default()),
                );
            }
            Err(MigrateError::Plan(e)) if is_update && e.is_database_ahead() => {
                let note = format!(
                    "{e}; as this is an Update (a rollback to older code), nothing was run"
                );
                warn!("{note}");
                data.insert("Message".into(), json!(note));
                return Ok(data);
            }
            Err(e) => return Err(e.into()),
        }
        if request.properties.manage_users {
            let reports = self
                .ensure_users(connection.client(), &admin, &progress)
                .await?;
            let rotated = reports
                .iter()
                .filter(|r| r.action == CredentialAction::Rotated)
                .count();
            data.insert("Users".into(), json!(reports.len().to_string()));
            data.insert("UsersRotated".into(), json!(rotated.to_string()));
        }
        progress.finish();
        Ok(data)
    }

    async fn action_inner(&self, action: Action, progress: Progress) -> Result<Value, SetupError> {
        let admin = self.admin(&progress).await?;
        let connection = self.connect(&admin.target, &progress).await?;
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
            Action::Plan { to, mode } => {
                progress.step("planning");
                let status = Migrator::new(client, self.run_options(mode, to))
                    .status(&self.migrations)
                    .await?;
                json!({
                    "would_run": status.plan,
                    "held_back": status.held_back,
                    "problems": status.problems,
                    "checksums_to_record": status.checksums_not_recorded,
                    "lock_holder": status.lock_holder,
                })
            }
            Action::Migrate { to, mode } => {
                progress.step("migrating");
                let report = Migrator::new(client, self.run_options(mode, to))
                    .migrate(&self.migrations)
                    .await?;
                to_json(serde_json::to_value(report))
            }
            Action::Verify => {
                progress.step("verifying the schema");
                let report =
                    verify::verify(client, &self.spec)
                        .await
                        .map_err(|e| SetupError::Database {
                            step: "verifying the schema",
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
                    statuses.push(credentials::status(&self.secrets, &user_db, user).await);
                }
                json!({ "users": statuses })
            }
        };
        progress.finish();
        info!("action done");
        Ok(report)
    }
}

impl<S: SecretStore + 'static> Setup for LiveSetup<S> {
    fn deploy(
        &self,
        request: CfnRequest,
        progress: Progress,
    ) -> impl Future<Output = Result<Map<String, Value>, SetupError>> + Send {
        self.deploy_inner(request, progress)
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
/// unreadable CA file, ...): every request fails with that reason, so the
/// stack gets an answer instead of waiting.
pub struct Unconfigured {
    /// Why.
    pub reason: String,
}

impl Setup for Unconfigured {
    async fn deploy(
        &self,
        _request: CfnRequest,
        _progress: Progress,
    ) -> Result<Map<String, Value>, SetupError> {
        Err(SetupError::Startup(self.reason.clone()))
    }

    async fn action(&self, _action: Action, _progress: Progress) -> Result<Value, SetupError> {
        Err(SetupError::Startup(self.reason.clone()))
    }
}
