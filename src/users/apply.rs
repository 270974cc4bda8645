//! The users step against PostgreSQL and Secrets Manager: under the role
//! lock, inspect the roles, decide which ones this configuration may manage
//! ([`super::ownership`]), run the role DDL in one transaction (retried when
//! a deploy of another database on the same instance changes a role at the
//! same time), then each password user's credentials ([`super::credentials`]).

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use tokio_postgres::Client;
use tracing::{info, warn};

use super::credentials::{self, CredentialAction, CredentialError, CredentialReport, UserDb};
use super::ownership::{self, Claim, ExistingRole, Refused, RoleKind, Verdict};
use super::roles::{self, ManagedUser, RDS_IAM, RoleContext};
use super::{Auth, UserSpec};
use crate::db::pipeline;
use crate::migrate::lock;
use crate::pg::{ServerError, SqlState};
use crate::secrets::{SecretStore, UserSecretFields};

/// Where the users live: what the marks, grants and secrets record.
#[derive(Debug, Clone)]
pub struct Site<'a> {
    /// The database.
    pub database: &'a str,
    /// Host and port recorded in the user secrets.
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// The admin user (owner of what migrations create).
    pub admin: &'a str,
    /// The admin secret's ARN (`masterarn` in the user secrets).
    pub admin_secret_arn: &'a str,
    /// The group-role prefix.
    pub prefix: &'a str,
}

/// How many times the role transaction is tried when another session
/// changes the same roles concurrently.
pub const ROLE_DDL_ATTEMPTS: u32 = 5;

/// Why the users step failed.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Another deploy of this database holds the role lock.
    #[error(
        "timed out after {}s waiting for the role lock: another deploy of this database is creating its application users{}; wait for it to finish, or raise DB_SETUP_LOCK_WAIT",
        .waited.as_secs(),
        .holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    RoleLockTimeout {
        /// How long it waited.
        waited: Duration,
        /// Who holds it, as far as visible.
        holder: Option<Box<lock::LockHolder>>,
    },
    /// A catalog query of the users step failed.
    #[error("{step} failed: {error}")]
    Database {
        /// The step.
        step: &'static str,
        /// What PostgreSQL said.
        error: Box<ServerError>,
    },
    /// Roles this configuration may not manage.
    #[error("{0}; nothing was changed")]
    Refused(#[from] Refused),
    /// An IAM user on a server without `rds_iam`.
    #[error(
        "user {user} uses IAM authentication, but the role rds_iam does not exist: IAM database authentication needs RDS or Aurora PostgreSQL (enable iamAuthentication on the instance); nothing was changed"
    )]
    NoRdsIam {
        /// The first IAM user.
        user: String,
    },
    /// The role DDL failed.
    #[error("creating the application roles failed: {0}; nothing of it was kept")]
    Roles(Box<ServerError>),
    /// A user's credentials step failed.
    #[error("{0}")]
    Credentials(#[from] CredentialError),
    /// No prefix was configured and the database name does not make one.
    #[error(
        "DB_SETUP_ROLE_PREFIX is not set and the database name {database} does not make a usable group-role prefix ({source}): set DB_SETUP_ROLE_PREFIX"
    )]
    Prefix {
        /// The database.
        database: String,
        /// Why.
        source: super::IdentifierError,
    },
}

impl UsersError {
    /// What PostgreSQL said, when the error came from it (its DETAIL goes
    /// to the log only).
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            UsersError::Database { error, .. } | UsersError::Roles(error) => Some(error),
            _ => None,
        }
    }
}

/// The group-role prefix: the configured one, else the database's.
pub fn prefix(configured: Option<&str>, database: &str) -> Result<String, UsersError> {
    match configured {
        Some(p) => Ok(p.to_string()),
        None => super::default_prefix(database).map_err(|source| UsersError::Prefix {
            database: database.into(),
            source,
        }),
    }
}

/// How a role came to be managed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ownership {
    /// Created by this run.
    Created,
    /// Already marked for this configuration.
    Managed,
    /// Marked by this run: why it was this configuration's to take.
    Adopted(String),
}

/// The outcome for one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserOutcome {
    /// The user.
    pub username: String,
    /// `password` or `iam`.
    pub auth: &'static str,
    /// How its role is owned.
    pub ownership: Ownership,
    /// For a password user, what the credentials protocol did.
    pub credentials: Option<CredentialReport>,
}

impl UserOutcome {
    /// True when a new password was set.
    pub fn rotated(&self) -> bool {
        self.credentials
            .as_ref()
            .is_some_and(|c| c.action == CredentialAction::Rotated)
    }
}

/// True for the errors two sessions changing the same roles can cause; the
/// transaction is rolled back and tried again.
pub fn is_retryable(e: &ServerError) -> bool {
    // serialization_failure (our guard), deadlock_detected, unique_violation
    // (a concurrent CREATE ROLE of the same name), and the catalog's own
    // "tuple concurrently updated".
    e.is(&SqlState::T_R_SERIALIZATION_FAILURE)
        || e.is(&SqlState::T_R_DEADLOCK_DETECTED)
        || e.is(&SqlState::UNIQUE_VIOLATION)
        || (e.is(&SqlState::INTERNAL_ERROR) && e.message.contains("tuple concurrently updated"))
}

const ATTRIBUTES: [&str; 5] = [
    "SUPERUSER",
    "CREATEROLE",
    "CREATEDB",
    "REPLICATION",
    "BYPASSRLS",
];

/// Reads the named roles from the catalog.
async fn inspect(
    client: &Client,
    names: &[String],
) -> Result<HashMap<String, ExistingRole>, ServerError> {
    let rows = client
        .query(
            "SELECT r.rolname::text, r.rolcanlogin, r.rolsuper, r.rolcreaterole, r.rolcreatedb, \
             r.rolreplication, r.rolbypassrls, pg_catalog.shobj_description(r.oid, 'pg_authid'), \
             ARRAY(SELECT m.rolname::text FROM pg_catalog.pg_auth_members am \
                   JOIN pg_catalog.pg_roles m ON m.oid = am.member WHERE am.roleid = r.oid ORDER BY 1) \
             FROM pg_catalog.pg_roles r WHERE r.rolname::text = ANY($1::text[])",
            &[&names],
        )
        .await
        .map_err(|e| ServerError::from_pg(&e))?;
    Ok(rows
        .iter()
        .map(|row| {
            let name: String = row.get(0);
            let privileged = ATTRIBUTES
                .iter()
                .enumerate()
                .filter(|(i, _)| row.get::<_, bool>(i + 2))
                .map(|(_, a)| *a)
                .collect();
            let role = ExistingRole {
                name: name.clone(),
                can_login: row.get(1),
                privileged,
                comment: row.get(7),
                members: row.get(8),
            };
            (name, role)
        })
        .collect())
}

/// The configured secret's ARN as the marks record it: the configured id
/// when it is an ARN, else what DescribeSecret says.
async fn secret_arn<S: SecretStore>(
    store: &S,
    user: &str,
    id: &str,
) -> Result<String, CredentialError> {
    if id.starts_with("arn:") {
        return Ok(id.to_string());
    }
    store
        .describe(id)
        .await
        .map(|info| info.arn)
        .map_err(|source| CredentialError::Secrets {
            user: user.into(),
            step: "describing its secret",
            source,
        })
}

/// Runs the users step: roles (owned, marked, in one transaction), then
/// each password user's credentials, all under the role lock of this
/// database. `step` names each step for the progress log.
pub async fn ensure<S: SecretStore, D: UserDb>(
    client: &Client,
    store: &S,
    user_db: &D,
    site: &Site<'_>,
    users: &[UserSpec],
    lock_wait: Duration,
    step: &(dyn Fn(String) + Send + Sync),
) -> Result<Vec<UserOutcome>, UsersError> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    step("waiting for the role lock".into());
    let database = |step: &'static str| {
        move |e: tokio_postgres::Error| UsersError::Database {
            step,
            error: Box::new(ServerError::from_pg(&e)),
        }
    };
    match lock::acquire(client, lock::ROLE_KEY, lock_wait)
        .await
        .map_err(database("taking the role lock"))?
    {
        lock::Polled::Taken((), _) => {}
        lock::Polled::TimedOut(waited) => {
            return Err(UsersError::RoleLockTimeout {
                waited,
                holder: lock::holder(client, lock::ROLE_KEY)
                    .await
                    .ok()
                    .flatten()
                    .map(Box::new),
            });
        }
    }
    let result = ensure_locked(client, store, user_db, site, users, step).await;
    if let Err(e) = lock::release(client, lock::ROLE_KEY).await {
        warn!(error = %e, "could not release the role lock; the server releases it when the session ends");
    }
    result
}

async fn ensure_locked<S: SecretStore, D: UserDb>(
    client: &Client,
    store: &S,
    user_db: &D,
    site: &Site<'_>,
    users: &[UserSpec],
    step: &(dyn Fn(String) + Send + Sync),
) -> Result<Vec<UserOutcome>, UsersError> {
    step("creating the application roles".into());
    let mut arns: HashMap<&str, String> = HashMap::new();
    for user in users {
        if let Some(id) = user.secret_id() {
            arns.insert(&user.username, secret_arn(store, &user.username, id).await?);
        }
    }
    let ctx = RoleContext {
        prefix: site.prefix,
        dbname: site.database,
        schema: "public",
        owner: site.admin,
    };
    let managed: Vec<ManagedUser<'_>> = users
        .iter()
        .map(|spec| ManagedUser {
            spec,
            secret_arn: arns.get(spec.username.as_str()).map(String::as_str),
        })
        .collect();
    let groups: Vec<String> = roles::templates_in_use(users.iter())
        .into_iter()
        .map(|t| roles::group_role(site.prefix, t))
        .collect();
    let mut own_members: Vec<String> = users
        .iter()
        .flat_map(|u| [u.username.clone(), u.clone_name()])
        .collect();
    own_members.push(site.admin.to_string());
    let mut names: Vec<String> = groups.clone();
    names.extend(users.iter().map(|u| u.username.clone()));
    names.push(RDS_IAM.to_string());

    let mut proofs: HashMap<String, bool> = HashMap::new();
    let mut attempt = 1;
    let verdicts = loop {
        let existing = inspect(client, &names)
            .await
            .map_err(|error| UsersError::Database {
                step: "reading the application roles",
                error: Box::new(error),
            })?;
        if let Some(iam) = users.iter().find(|u| u.auth == Auth::Iam) {
            if !existing.contains_key(RDS_IAM) {
                return Err(UsersError::NoRdsIam {
                    user: iam.username.clone(),
                });
            }
        }
        // The proof that a role not marked for this configuration is its
        // own anyway: its configured secret logs in (read-only check).
        for user in &managed {
            let Some(role) = existing.get(&user.spec.username) else {
                continue;
            };
            let mark = role.comment.as_deref().and_then(ownership::Mark::parse);
            let ours = mark.is_some_and(|m| {
                m.database == site.database && m.secret.as_deref() == user.secret_arn
            });
            if ours || user.spec.adopt || proofs.contains_key(&user.spec.username) {
                continue;
            }
            if let Some(id) = user.spec.secret_id() {
                let login = credentials::current_login(store, user_db, user.spec, id).await?;
                proofs.insert(user.spec.username.clone(), login.is_some());
            }
        }
        let mut verdicts: HashMap<String, Verdict> = HashMap::new();
        let mut refused = Vec::new();
        let claims = groups
            .iter()
            .map(|g| Claim {
                name: g,
                kind: RoleKind::Group,
                secret: None,
                adopt: users
                    .iter()
                    .any(|u| u.adopt && roles::group_role(site.prefix, u.role) == *g),
                proven: false,
                own_members: &own_members,
            })
            .chain(managed.iter().map(|u| Claim {
                name: &u.spec.username,
                kind: RoleKind::User,
                secret: u.secret_arn,
                adopt: u.spec.adopt,
                proven: proofs.get(&u.spec.username).copied().unwrap_or(false),
                own_members: &[],
            }));
        for claim in claims {
            match ownership::judge(site.database, site.admin, &claim, existing.get(claim.name)) {
                Ok(v) => {
                    verdicts.insert(claim.name.to_string(), v);
                }
                Err(e) => refused.push(e),
            }
        }
        if !refused.is_empty() {
            return Err(Refused(refused).into());
        }
        let script = roles::roles_script(&ctx, &managed, |name| {
            existing.get(name).and_then(|r| r.comment.clone())
        });
        let mut queries = vec!["BEGIN".to_string()];
        queries.extend(script);
        queries.push("COMMIT".into());
        let results = pipeline(client, &queries).await;
        let Some(e) = results.iter().find_map(|(r, _)| r.as_ref().err()) else {
            break verdicts;
        };
        let error = ServerError::from_pg(e);
        let _ = client.simple_query("ROLLBACK").await;
        if !is_retryable(&error) || attempt >= ROLE_DDL_ATTEMPTS {
            return Err(UsersError::Roles(Box::new(error)));
        }
        let pause = Duration::from_millis(50 * 2u64.pow(attempt));
        warn!(attempt, error = %error, pause_ms = pause.as_millis() as u64, "another session changed the roles at the same time: retrying");
        tokio::time::sleep(pause).await;
        attempt += 1;
    };
    for (name, verdict) in &verdicts {
        if let Verdict::Adopt(why) = verdict {
            info!(role = %name, reason = %why, "adopted the role: it is now marked for this database");
        }
    }

    let mut outcomes = Vec::new();
    for user in users {
        let ownership = match verdicts.get(&user.username) {
            Some(Verdict::Create) | None => Ownership::Created,
            Some(Verdict::Manage) => Ownership::Managed,
            Some(Verdict::Adopt(why)) => Ownership::Adopted(why.clone()),
        };
        let credentials = match &user.auth {
            Auth::Iam => None,
            Auth::Password { secret_id } => {
                step(format!("ensuring the credentials of {}", user.username));
                let fields = UserSecretFields {
                    host: site.host.into(),
                    port: site.port,
                    dbname: site.database.into(),
                    username: user.username.clone(),
                    masterarn: site.admin_secret_arn.into(),
                };
                Some(credentials::ensure(store, user_db, user, secret_id, &fields).await?)
            }
        };
        outcomes.push(UserOutcome {
            username: user.username.clone(),
            auth: match user.auth {
                Auth::Iam => "iam",
                Auth::Password { .. } => "password",
            },
            ownership,
            credentials,
        });
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &str, message: &str) -> ServerError {
        ServerError {
            code: Some(code.into()),
            message: message.into(),
            detail: None,
            hint: None,
            context: None,
            position: None,
        }
    }

    #[test]
    fn only_concurrency_errors_are_retried() {
        assert!(is_retryable(&err(
            "40001",
            "role x changed while db-setup was deciding"
        )));
        assert!(is_retryable(&err("40P01", "deadlock detected")));
        assert!(is_retryable(&err(
            "23505",
            "duplicate key value violates unique constraint \"pg_authid_rolname_index\""
        )));
        assert!(is_retryable(&err("XX000", "tuple concurrently updated")));
        assert!(!is_retryable(&err("XX000", "cache lookup failed")));
        assert!(!is_retryable(&err(
            "42501",
            "permission denied to create role"
        )));
    }
}
