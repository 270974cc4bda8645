//! The database side of the credentials protocol, against PostgreSQL.

use tokio_postgres::Client;

use super::credentials::UserDb;
use super::roles::set_password_sql;
use crate::db::{self, ConnectOptions, Target, Tls};
use crate::migrate::ServerError;
use crate::secret::SecretString;

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

impl UserDb for PgUsers<'_> {
    async fn can_login(&self, user: &str, password: &SecretString) -> Result<bool, String> {
        let target = Target {
            user: user.into(),
            password: password.clone(),
            ..self.base.clone()
        };
        match db::connect(&target, self.tls, &self.options).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_auth() => Ok(false),
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
}
