//! Application roles and users: group roles that own the grants (pure SQL
//! in [`roles`]), login users that are their members, and their credentials
//! in Secrets Manager ([`credentials`]).

pub mod credentials;
pub mod database;
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

/// One application user to ensure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserSpec {
    /// The login role.
    pub username: String,
    /// Its privileges.
    pub role: RoleTemplate,
    /// Name or ARN of the secret that holds its credentials.
    #[serde(rename = "secretId")]
    pub secret_id: String,
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

/// Quotes an identifier for SQL (checked names need none; this is belt and braces).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
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
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("app_rw"), "\"app_rw\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn templates_parse_by_name() {
        for t in RoleTemplate::ALL {
            assert_eq!(t.name().parse(), Ok(t));
        }
        assert!("owner".parse::<RoleTemplate>().is_err());
    }
}
