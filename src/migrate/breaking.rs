//! The expand phase's guard: statements that break the application version
//! still running while an expand migration runs (and the one CloudFormation
//! rolls back to).
//!
//! Pure and shared with `build.rs` (one copy of the rule for the compile-time
//! check and the runtime), so it depends only on `std` and the lexer. It reads
//! the lexer's tokens, so a statement in a comment, a string or a
//! dollar-quoted body (a `DO` block, a function body) is never flagged, and a
//! quoted identifier is a name, never a keyword.

use std::fmt;

use super::sql::{self, TokenKind};

/// An operation that breaks the application version still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaking {
    /// `DROP TABLE`.
    DropTable,
    /// `ALTER TABLE ... DROP [COLUMN]`.
    DropColumn,
    /// `ALTER TABLE|VIEW|MATERIALIZED VIEW ... RENAME [COLUMN] ... TO` or `RENAME TO`.
    Rename,
    /// `ALTER TABLE ... ALTER [COLUMN] ... [SET DATA] TYPE`.
    AlterColumnType,
    /// `ALTER TABLE ... ALTER [COLUMN] ... SET NOT NULL`.
    SetNotNull,
    /// `ALTER TABLE ... ADD [COLUMN] ... NOT NULL` without a `DEFAULT`
    /// (or a generated value): the old application's inserts fail.
    AddNotNullColumn,
    /// `DROP VIEW` / `DROP MATERIALIZED VIEW`.
    DropView,
    /// `DROP FUNCTION` / `DROP PROCEDURE` / `DROP ROUTINE`.
    DropFunction,
}

impl Breaking {
    /// The operation as written in messages.
    pub fn operation(self) -> &'static str {
        match self {
            Breaking::DropTable => "DROP TABLE",
            Breaking::DropColumn => "DROP COLUMN",
            Breaking::Rename => "RENAME",
            Breaking::AlterColumnType => "ALTER COLUMN ... TYPE",
            Breaking::SetNotNull => "SET NOT NULL",
            Breaking::AddNotNullColumn => "ADD COLUMN ... NOT NULL without a default",
            Breaking::DropView => "DROP VIEW",
            Breaking::DropFunction => "DROP FUNCTION",
        }
    }

    /// What to do instead.
    pub fn fix(self) -> &'static str {
        match self {
            Breaking::Rename => {
                "a rename is an expand/contract pair (docs/migrations.md, \"Renaming a column or table\"): \
                 add the new name in an expand file and keep both in step, switch the application, \
                 drop the old name in a `-- db-setup: phase=contract` file"
            }
            Breaking::AddNotNullColumn => {
                "give the column a DEFAULT, or add it nullable here, backfill, and SET NOT NULL \
                 in a `-- db-setup: phase=contract` file"
            }
            _ => {
                "move it to a migration with `-- db-setup: phase=contract`, which runs after the \
                 application is updated"
            }
        }
    }
}

impl fmt::Display for Breaking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.operation())
    }
}

/// One top-level item of a statement: a word (upper-cased), a quoted name,
/// or a top-level comma. Everything inside parentheses, strings, dollar
/// quotes and comments is left out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Word(String),
    Name,
    Comma,
}

fn items(statement: &str) -> Vec<Item> {
    let Ok(tokens) = sql::tokenize(statement) else {
        return Vec::new();
    };
    let mut depth = 0usize;
    let mut out = Vec::new();
    for t in tokens {
        let text = t.text(statement);
        match t.kind {
            TokenKind::Other if text == "(" => depth += 1,
            TokenKind::Other if text == ")" => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            TokenKind::Word => out.push(Item::Word(text.to_ascii_uppercase())),
            TokenKind::QuotedIdent => out.push(Item::Name),
            TokenKind::Other if text == "," => out.push(Item::Comma),
            _ => {}
        }
    }
    out
}

fn word(items: &[Item], i: usize) -> Option<&str> {
    match items.get(i) {
        Some(Item::Word(w)) => Some(w),
        _ => None,
    }
}

/// The breaking operation in one statement's text (without its `;`), if any.
pub fn breaking(statement: &str) -> Option<Breaking> {
    let items = items(statement);
    let w = |i: usize| word(&items, i);
    match (w(0), w(1), w(2)) {
        (Some("DROP"), Some("TABLE"), _) => Some(Breaking::DropTable),
        (Some("DROP"), Some("VIEW"), _) | (Some("DROP"), Some("MATERIALIZED"), Some("VIEW")) => {
            Some(Breaking::DropView)
        }
        (Some("DROP"), Some("FUNCTION" | "PROCEDURE" | "ROUTINE"), _) => {
            Some(Breaking::DropFunction)
        }
        (Some("ALTER"), Some("TABLE"), _) => alter_table(&items[2..]),
        (Some("ALTER"), Some("VIEW"), _) | (Some("ALTER"), Some("MATERIALIZED"), Some("VIEW")) => {
            items
                .iter()
                .any(|i| *i == Item::Word("RENAME".into()))
                .then_some(Breaking::Rename)
        }
        _ => None,
    }
}

/// The actions of `ALTER TABLE` (after `TABLE`), split at top-level commas.
fn alter_table(rest: &[Item]) -> Option<Breaking> {
    rest.split(|i| *i == Item::Comma).find_map(action)
}

fn action(items: &[Item]) -> Option<Breaking> {
    let w = |i: usize| word(items, i);
    let position = |wanted: &str| {
        items
            .iter()
            .position(|i| matches!(i, Item::Word(w) if w == wanted))
    };
    // The first action follows the table's name: find its verb.
    let verb = items.iter().position(
        |i| matches!(i, Item::Word(w) if matches!(w.as_str(), "RENAME" | "DROP" | "ALTER" | "ADD")),
    )?;
    let after = |n: usize| w(verb + n);
    match w(verb)? {
        "RENAME" => match after(1) {
            Some("CONSTRAINT") => None,
            _ => Some(Breaking::Rename),
        },
        "DROP" => match after(1) {
            Some("CONSTRAINT") => None,
            _ => Some(Breaking::DropColumn),
        },
        "ALTER" => {
            // ALTER [COLUMN] name <sub-action>; CONSTRAINT is not a column.
            if after(1) == Some("CONSTRAINT") {
                return None;
            }
            let name_at = if after(1) == Some("COLUMN") { 2 } else { 1 };
            let sub = |n: usize| after(name_at + 1 + n);
            match (sub(0), sub(1), sub(2)) {
                (Some("TYPE"), _, _) | (Some("SET"), Some("DATA"), Some("TYPE")) => {
                    Some(Breaking::AlterColumnType)
                }
                (Some("SET"), Some("NOT"), Some("NULL")) => Some(Breaking::SetNotNull),
                _ => None,
            }
        }
        "ADD" => {
            if matches!(
                after(1),
                Some("CONSTRAINT" | "PRIMARY" | "UNIQUE" | "CHECK" | "FOREIGN" | "EXCLUDE")
            ) {
                return None;
            }
            let tail = &items[verb..];
            let not_null = tail
                .windows(2)
                .any(|p| p[0] == Item::Word("NOT".into()) && p[1] == Item::Word("NULL".into()));
            let valued = position("DEFAULT").is_some() || position("GENERATED").is_some();
            (not_null && !valued).then_some(Breaking::AddNotNullColumn)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_breaking_operation_is_named() {
        for (sql, want) in [
            ("DROP TABLE old", Breaking::DropTable),
            ("drop table if exists a, b cascade", Breaking::DropTable),
            ("ALTER TABLE t DROP COLUMN a", Breaking::DropColumn),
            ("ALTER TABLE IF EXISTS ONLY t DROP a", Breaking::DropColumn),
            ("ALTER TABLE t RENAME TO u", Breaking::Rename),
            ("ALTER TABLE t RENAME COLUMN a TO b", Breaking::Rename),
            ("alter table t rename a to b", Breaking::Rename),
            ("ALTER VIEW v RENAME TO w", Breaking::Rename),
            (
                "ALTER TABLE t ALTER COLUMN a TYPE bigint",
                Breaking::AlterColumnType,
            ),
            (
                "ALTER TABLE t ALTER a SET DATA TYPE numeric(10, 2) USING a::numeric",
                Breaking::AlterColumnType,
            ),
            (
                "ALTER TABLE t ALTER COLUMN a SET NOT NULL",
                Breaking::SetNotNull,
            ),
            (
                "ALTER TABLE t ADD COLUMN b int NOT NULL",
                Breaking::AddNotNullColumn,
            ),
            (
                "ALTER TABLE t ADD COLUMN IF NOT EXISTS b text NOT NULL REFERENCES u",
                Breaking::AddNotNullColumn,
            ),
            (
                "ALTER TABLE t ADD b int NOT NULL",
                Breaking::AddNotNullColumn,
            ),
            ("DROP VIEW v", Breaking::DropView),
            ("DROP MATERIALIZED VIEW IF EXISTS mv", Breaking::DropView),
            ("DROP FUNCTION f(int)", Breaking::DropFunction),
            ("DROP PROCEDURE p", Breaking::DropFunction),
            // The second action of a list.
            (
                "ALTER TABLE t ADD COLUMN c int, DROP COLUMN a",
                Breaking::DropColumn,
            ),
        ] {
            assert_eq!(breaking(sql), Some(want), "{sql}");
        }
    }

    #[test]
    fn additive_and_safe_statements_pass() {
        for sql in [
            "CREATE TABLE t (a int NOT NULL, b text NOT NULL DEFAULT '')",
            "ALTER TABLE t ADD COLUMN b int",
            "ALTER TABLE t ADD COLUMN b int NOT NULL DEFAULT 0",
            "ALTER TABLE t ADD COLUMN b int DEFAULT 0 NOT NULL",
            "ALTER TABLE t ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY NOT NULL",
            "ALTER TABLE t ADD CONSTRAINT c CHECK (a IS NOT NULL) NOT VALID",
            "ALTER TABLE t ADD CHECK (a IS NOT NULL)",
            "ALTER TABLE t DROP CONSTRAINT c",
            "ALTER TABLE t RENAME CONSTRAINT c TO d",
            "ALTER TABLE t VALIDATE CONSTRAINT c",
            "ALTER TABLE t ALTER COLUMN a DROP NOT NULL",
            "ALTER TABLE t ALTER COLUMN a SET DEFAULT 0",
            "ALTER TABLE t ALTER COLUMN a DROP DEFAULT",
            "ALTER TABLE t ADD COLUMN \"type\" int",
            "ALTER TABLE t ALTER COLUMN type SET DEFAULT 'x'",
            "ALTER TABLE t ALTER type DROP NOT NULL",
            "DROP INDEX CONCURRENTLY IF EXISTS i",
            "DROP TRIGGER tr ON t",
            "DROP TYPE IF EXISTS e",
            "ALTER INDEX i RENAME TO j",
            "CREATE OR REPLACE VIEW v AS SELECT a AS rename FROM t",
            "UPDATE t SET b = 'DROP TABLE t'",
        ] {
            assert_eq!(breaking(sql), None, "{sql}");
        }
    }

    #[test]
    fn statements_in_strings_comments_and_bodies_are_never_flagged() {
        for sql in [
            "SELECT 'DROP TABLE t'",
            "SELECT E'ALTER TABLE t DROP COLUMN a'",
            "SELECT 1 -- DROP TABLE t",
            "SELECT /* ALTER TABLE t RENAME TO u */ 1",
            "DO $$ BEGIN EXECUTE 'x'; DROP TABLE t; END $$",
            "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $body$ DROP TABLE t $body$",
            "COMMENT ON TABLE t IS 'ALTER TABLE t ADD COLUMN b int NOT NULL'",
            "SELECT \"DROP\" FROM \"TABLE\"",
        ] {
            assert_eq!(breaking(sql), None, "{sql}");
        }
    }
}
