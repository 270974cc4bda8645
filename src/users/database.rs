//! The database side of the credentials protocol, against PostgreSQL.

use tokio_postgres::Client;

use super::credentials::{LoginCheck, UserDb};
use super::roles::{RDS_IAM, clone_membership_sql, set_password_sql};
use crate::db::{self, ConnectError, ConnectOptions, Target, Tls};
use crate::pg::ServerError;
use crate::redacted::SecretString;

/// Checks logins by connecting as the user (same host, database and TLS as
/// the admin connection) and sets passwords through the admin connection.
pub struct PgUsers<'a> {
    /// The admin target: host, port and database are reused.
    pub base: &'a Target,
    /// TLS, as for the admin connection.
    pub tls: &'a Tls,
    /// Connect options for login checks (one attempt).
    pub options: ConnectOptions,
    /// The admin connection.
    pub admin: &'a Client,
}

/// What the catalog says about a role whose login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalFacts {
    /// The role exists.
    pub exists: bool,
    /// It has LOGIN.
    pub can_login: bool,
    /// It is a member of `rds_iam`.
    pub rds_iam: bool,
}

/// Names the cause of a login refused for a reason other than the password,
/// with what to do. Pure.
pub fn refusal_cause(login: &str, facts: RefusalFacts, server_message: &str) -> String {
    if !facts.exists {
        format!("role {login} does not exist ({server_message})")
    } else if !facts.can_login {
        format!(
            "role {login} has NOLOGIN ({server_message}); give it LOGIN (ALTER ROLE {login} LOGIN)"
        )
    } else if facts.rds_iam {
        format!(
            "role {login} is a member of {RDS_IAM} (IAM database authentication), so a password cannot log in; configure the user with \"auth\": \"iam\", or REVOKE {RDS_IAM} FROM {login}"
        )
    } else {
        format!(
            "the server's authentication rules refuse it: {server_message}; allow this login from the function's network in pg_hba.conf (or the instance's rules)"
        )
    }
}

impl PgUsers<'_> {
    async fn refusal_facts(&self, login: &str) -> Result<RefusalFacts, String> {
        let rows = self
            .admin
            .query(
                "SELECT r.rolcanlogin, EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m \
                 JOIN pg_catalog.pg_roles i ON i.oid = m.roleid \
                 WHERE i.rolname = $2 AND m.member = r.oid) \
                 FROM pg_catalog.pg_roles r WHERE r.rolname = $1",
                &[&login, &RDS_IAM],
            )
            .await
            .map_err(|e| ServerError::from_pg(&e).to_string())?;
        Ok(match rows.first() {
            None => RefusalFacts {
                exists: false,
                can_login: false,
                rds_iam: false,
            },
            Some(row) => RefusalFacts {
                exists: true,
                can_login: row.get(0),
                rds_iam: row.get(1),
            },
        })
    }
}

impl UserDb for PgUsers<'_> {
    async fn check_login(
        &self,
        login: &str,
        password: &SecretString,
    ) -> Result<LoginCheck, String> {
        let target = Target {
            user: login.into(),
            password: password.clone(),
            ..self.base.clone()
        };
        match db::connect(&target, self.tls, &self.options).await {
            Ok(_) => Ok(LoginCheck::LoggedIn),
            Err(e) if e.is_auth() => Ok(LoginCheck::WrongPassword),
            Err(ConnectError::LoginRefused { message, .. }) => {
                let facts = self.refusal_facts(login).await?;
                Ok(LoginCheck::Refused(refusal_cause(login, facts, &message)))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn set_password(&self, user: &str, verifier: &str) -> Result<(), String> {
        self.admin
            .simple_query(&set_password_sql(user, verifier))
            .await
            .map(|_| ())
            .map_err(|e| ServerError::from_pg(&e).to_string())
    }

    async fn ensure_clone_membership(&self, user: &str, clone: &str) -> Result<(), String> {
        let member: bool = self
            .admin
            .query_one(
                "SELECT pg_catalog.pg_has_role($1, $2, 'MEMBER')",
                &[&clone, &user],
            )
            .await
            .map_err(|e| ServerError::from_pg(&e).to_string())?
            .get(0);
        if member {
            return Ok(());
        }
        self.admin
            .simple_query(&clone_membership_sql(user, clone))
            .await
            .map(|_| ())
            .map_err(|e| ServerError::from_pg(&e).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_names_its_cause_and_fix() {
        let facts = |exists, can_login, rds_iam| RefusalFacts {
            exists,
            can_login,
            rds_iam,
        };
        let msg = "pg_hba.conf rejects connection for host \"10.0.0.1\", user \"u\"";
        assert!(refusal_cause("u", facts(true, false, false), msg).contains("has NOLOGIN"));
        assert!(
            refusal_cause("u", facts(true, true, true), msg)
                .contains("member of rds_iam (IAM database authentication)")
        );
        let hba = refusal_cause("u", facts(true, true, false), msg);
        assert!(hba.contains("pg_hba.conf rejects connection") && hba.contains("allow this login"));
        assert!(refusal_cause("u", facts(false, false, false), msg).contains("does not exist"));
    }
}
