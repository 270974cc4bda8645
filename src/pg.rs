//! PostgreSQL helpers every concern uses: what the server said about a
//! failed query ([`ServerError`]), SQLSTATEs by name (tokio-postgres's
//! [`SqlState`]), and quoting of literals and identifiers.

use std::fmt;

use serde::Serialize;
use tokio_postgres::error::ErrorPosition;
pub use tokio_postgres::error::SqlState;

/// What PostgreSQL said about a failed query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerError {
    /// SQLSTATE, when the server sent one (none when the connection broke).
    pub code: Option<String>,
    /// The message.
    pub message: String,
    /// DETAIL, if any.
    pub detail: Option<String>,
    /// HINT, if any.
    pub hint: Option<String>,
    /// CONTEXT (e.g. the PL/pgSQL line), if any.
    pub context: Option<String>,
    /// The position PostgreSQL reported (1-based, in characters, into the query sent).
    #[serde(skip)]
    pub position: Option<u32>,
}

impl ServerError {
    /// Reads a tokio-postgres error.
    pub fn from_pg(e: &tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => ServerError {
                code: Some(db.code().code().to_string()),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
                hint: db.hint().map(str::to_string),
                context: db.where_().map(str::to_string),
                position: match db.position() {
                    Some(ErrorPosition::Original(p)) => Some(*p),
                    _ => None,
                },
            },
            None if e.is_closed() => ServerError {
                code: None,
                message: "the connection to the server was lost".into(),
                detail: None,
                hint: None,
                context: None,
                position: None,
            },
            None => ServerError {
                code: None,
                message: crate::db::error_chain(e),
                detail: None,
                hint: None,
                context: None,
                position: None,
            },
        }
    }

    /// True when the server answered with this SQLSTATE.
    pub fn is(&self, state: &SqlState) -> bool {
        self.code.as_deref() == Some(state.code())
    }

    /// True for `lock_timeout`.
    pub fn is_lock_timeout(&self) -> bool {
        self.is(&SqlState::LOCK_NOT_AVAILABLE)
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(code) = &self.code {
            write!(f, "{code} ")?;
        }
        f.write_str(&self.message)?;
        // DETAIL can hold row values ("Failing row contains (...)", "Key
        // (email)=(...)"): a Reason is read by more people than the data.
        if self.detail.is_some() {
            f.write_str(" (DETAIL in the function's log)")?;
        }
        if let Some(h) = &self.hint {
            write!(f, " (HINT: {h})")?;
        }
        if let Some(c) = &self.context {
            write!(f, " (CONTEXT: {c})")?;
        }
        Ok(())
    }
}

/// Quotes a string literal. A text with a backslash is written as an
/// escape string (`E'...'`), so the literal means the same whatever
/// `standard_conforming_strings` says.
pub fn literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// Quotes an identifier (names db-setup checks need none: belt and braces).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_identifiers_are_quoted() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"a\b'c"), r"E'a\\b''c'");
        assert_eq!(quote_ident("app_rw"), "\"app_rw\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn states_are_compared_by_name() {
        let e = ServerError {
            code: Some("55P03".into()),
            message: "canceling statement due to lock timeout".into(),
            detail: None,
            hint: None,
            context: None,
            position: None,
        };
        assert!(e.is_lock_timeout());
        assert!(e.is(&SqlState::LOCK_NOT_AVAILABLE));
        assert!(!e.is(&SqlState::QUERY_CANCELED));
    }
}
