//! Application roles and users: group roles that own the grants (pure SQL
//! in [`roles`]), login users that are their members, and their credentials
//! in Secrets Manager ([`credentials`]).

pub mod apply;
pub mod credentials;
pub mod database;
pub mod ownership;
pub mod password;
pub mod roles;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A set of privileges an application user gets through its group role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleTemplate {
    /// DML on all tables, use of sequences, and the same on tables the
    /// migrating role creates later.
    ReadWrite,
    /// SELECT on all tables and sequences, and on later ones.
    ReadOnly,
    /// ReadWrite plus CREATE on the schema.
    TableCreator,
}

impl RoleTemplate {
    /// Every template.
    pub const ALL: [RoleTemplate; 3] = [
        RoleTemplate::ReadWrite,
        RoleTemplate::ReadOnly,
        RoleTemplate::TableCreator,
    ];

    /// Its name in configuration and in the group role's name.
    pub fn name(self) -> &'static str {
        match self {
            RoleTemplate::ReadWrite => "readwrite",
            RoleTemplate::ReadOnly => "readonly",
            RoleTemplate::TableCreator => "tablecreator",
        }
    }
}

impl FromStr for RoleTemplate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        RoleTemplate::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                format!("`{s}` is not a role template: write readwrite, readonly or tablecreator")
            })
    }
}

impl fmt::Display for RoleTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How an application user logs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "auth", rename_all = "lowercase")]
pub enum Auth {
    /// A password db-setup sets and keeps in a secret.
    Password {
        /// Name or ARN of the secret that holds its credentials.
        #[serde(rename = "secretId")]
        secret_id: String,
    },
    /// IAM database authentication (RDS): a member of `rds_iam`, no
    /// password, no secret; the application logs in with a token.
    Iam,
}

/// One application user to ensure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserSpec {
    /// The login role.
    pub username: String,
    /// Its privileges.
    pub role: RoleTemplate,
    /// How it logs in.
    #[serde(flatten)]
    pub auth: Auth,
    /// Take over an existing role that db-setup did not create.
    pub adopt: bool,
}

/// The suffix AWS's alternating-users rotation function adds to (or removes
/// from) the user name on each rotation.
pub const CLONE_SUFFIX: &str = "_clone";

impl UserSpec {
    /// A password user (the common case).
    pub fn password(username: &str, role: RoleTemplate, secret_id: &str) -> Self {
        UserSpec {
            username: username.into(),
            role,
            auth: Auth::Password {
                secret_id: secret_id.into(),
            },
            adopt: false,
        }
    }

    /// Its secret, for a password user.
    pub fn secret_id(&self) -> Option<&str> {
        match &self.auth {
            Auth::Password { secret_id } => Some(secret_id),
            Auth::Iam => None,
        }
    }

    /// The login the alternating-users rotation creates beside this user
    /// (`<user>_clone`, a member of `<user>`).
    pub fn clone_name(&self) -> String {
        format!("{}{CLONE_SUFFIX}", self.username)
    }

    /// True when `login` is this user or its rotation clone.
    pub fn is_login(&self, login: &str) -> bool {
        login == self.username
            || login
                .strip_suffix(CLONE_SUFFIX)
                .is_some_and(|base| base == self.username)
    }
}

/// The group-role prefix derived from a database name when
/// `DB_SETUP_ROLE_PREFIX` is not set: lower case, anything but letters,
/// digits and `_` replaced by `_`, at most 50 characters (so that
/// `<prefix>_tablecreator` fits PostgreSQL's 63), never starting with a digit.
pub fn default_prefix(dbname: &str) -> Result<String, IdentifierError> {
    let mut prefix: String = dbname
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(50)
        .collect();
    if prefix.starts_with(|c: char| c.is_ascii_digit()) {
        prefix = format!("db_{prefix}");
        prefix.truncate(50);
    }
    // The prefix names groups (`<prefix>_readwrite`): check one of them.
    check_identifier(&format!("{prefix}_readwrite"))?;
    Ok(prefix)
}

/// A role name this tool refuses to manage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    /// Not lower-case letters, digits and `_`, or too long.
    #[error(
        "`{0}` is not a safe role name: use 1 to 63 lower-case letters, digits and _, starting with a letter or _"
    )]
    Unsafe(String),
    /// A name PostgreSQL or RDS reserves.
    #[error("`{0}` is reserved (postgres, public, pg_*, rds*): choose another role name")]
    Reserved(String),
}

/// Accepts only plain lower-case identifiers, which need no quoting and
/// cannot be confused with another name; reserved names are refused too.
pub fn check_identifier(name: &str) -> Result<(), IdentifierError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok || name.len() > 63 {
        return Err(IdentifierError::Unsafe(name.into()));
    }
    let reserved = [
        "postgres",
        "public",
        "none",
        "current_user",
        "session_user",
        "current_role",
        "all",
    ];
    if reserved.contains(&name) || name.starts_with("pg_") || name.starts_with("rds") {
        return Err(IdentifierError::Reserved(name.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names_pass_and_others_are_refused() {
        for ok in ["app_rw", "_svc", "reader2"] {
            assert_eq!(check_identifier(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "App",
            "app-rw",
            "1app",
            "app rw",
            "a\"b",
            "ü",
            &"x".repeat(64),
        ] {
            assert!(
                matches!(check_identifier(bad), Err(IdentifierError::Unsafe(_))),
                "{bad}"
            );
        }
        for reserved in [
            "postgres",
            "public",
            "pg_monitor",
            "rdsadmin",
            "rds_superuser",
        ] {
            assert!(
                matches!(
                    check_identifier(reserved),
                    Err(IdentifierError::Reserved(_))
                ),
                "{reserved}"
            );
        }
    }

    #[test]
    fn the_default_prefix_is_the_database_name_made_safe() {
        assert_eq!(default_prefix("orders").unwrap(), "orders");
        assert_eq!(default_prefix("Orders-EU.1").unwrap(), "orders_eu_1");
        assert_eq!(default_prefix("2024app").unwrap(), "db_2024app");
        assert_eq!(default_prefix("postgres").unwrap(), "postgres");
        assert_eq!(default_prefix(&"x".repeat(80)).unwrap().len(), 50);
        assert!(default_prefix("rdsadmin").is_err());
        assert!(default_prefix("pg_x").is_err());
    }

    #[test]
    fn the_rotation_clone_is_the_same_user() {
        let u = UserSpec::password("app_rw", RoleTemplate::ReadWrite, "s");
        assert!(u.is_login("app_rw"));
        assert!(u.is_login("app_rw_clone"));
        assert!(!u.is_login("app_rw_clone_clone"));
        assert!(!u.is_login("app_ro"));
        assert_eq!(u.clone_name(), "app_rw_clone");
    }

    #[test]
    fn templates_parse_by_name() {
        for t in RoleTemplate::ALL {
            assert_eq!(t.name().parse(), Ok(t));
        }
        assert!("owner".parse::<RoleTemplate>().is_err());
    }
}
