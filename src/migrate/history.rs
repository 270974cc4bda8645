//! The `public.pgmigrations` history table, shared with node-pg-migrate.
//!
//! The table is created exactly as node-pg-migrate 9 creates it. This tool's
//! bookkeeping lives in two nullable columns it adds (`checksum`,
//! `execution_ms`); node-pg-migrate names only `name, run_on` in its INSERT,
//! so it keeps working on the same table. The functions here build SQL and
//! read rows; they do no I/O.

use tokio_postgres::SimpleQueryMessage;

use super::parse::Migration;
use super::plan::{Adoption, AppliedMigration};
use crate::pg::literal;

/// The table, schema-qualified and quoted as node-pg-migrate writes it.
pub const TABLE: &str = r#""public"."pgmigrations""#;

/// node-pg-migrate's `CREATE TABLE`, made idempotent.
pub const CREATE_TABLE: &str = r#"CREATE TABLE IF NOT EXISTS "public"."pgmigrations" (id SERIAL PRIMARY KEY, name varchar(255) NOT NULL, run_on timestamp NOT NULL)"#;

/// Adds this tool's nullable bookkeeping columns.
pub const ADD_COLUMNS: &str = r#"ALTER TABLE "public"."pgmigrations" ADD COLUMN IF NOT EXISTS checksum varchar(64), ADD COLUMN IF NOT EXISTS execution_ms double precision"#;

/// What makes the table ready for this tool's rows, given its state:
/// created if missing, this tool's columns added if absent.
pub fn prepare_statements(state: TableState) -> Vec<String> {
    let mut prepare = Vec::new();
    if state == TableState::Missing {
        prepare.push(CREATE_TABLE.to_string());
    }
    if state != TableState::Tracked {
        prepare.push(ADD_COLUMNS.to_string());
    }
    prepare
}

/// Two boolean columns describing the table: does it exist, does it have
/// this tool's columns. Meant to be selected beside other values so the
/// check costs no round trip of its own.
pub const STATE_COLUMNS: &str = "to_regclass('public.pgmigrations') IS NOT NULL, \
     (SELECT count(*) = 2 FROM pg_catalog.pg_attribute \
      WHERE attrelid = to_regclass('public.pgmigrations') \
      AND attname IN ('checksum', 'execution_ms') AND NOT attisdropped)";

/// What the history table looks like before a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableState {
    /// No table yet.
    #[default]
    Missing,
    /// Created by node-pg-migrate: no checksum column yet.
    NodePgMigrate,
    /// Has this tool's columns.
    Tracked,
}

impl TableState {
    /// Reads the two [`STATE_COLUMNS`] values (PostgreSQL's `t`/`f`).
    pub fn from_flags(exists: Option<&str>, tracked: Option<&str>) -> Self {
        match (exists == Some("t"), tracked == Some("t")) {
            (false, _) => TableState::Missing,
            (true, false) => TableState::NodePgMigrate,
            (true, true) => TableState::Tracked,
        }
    }
}

/// The history read, in node-pg-migrate's order (`run_on, id`). Without this
/// tool's columns the query still works and reports no checksums.
pub fn select_sql(state: TableState) -> String {
    let extra = match state {
        TableState::Tracked => "checksum, execution_ms",
        _ => "NULL, NULL",
    };
    format!("SELECT id, name, run_on::text, {extra} FROM {TABLE} ORDER BY run_on, id")
}

/// The history row for a migration run in a transaction, appended to the
/// migration's own SQL in the same message. `execution_ms` is measured by the
/// server: the time since the message started (`statement_timestamp()`).
pub fn insert_measured_sql(m: &Migration) -> String {
    format!(
        "INSERT INTO {TABLE} (name, run_on, checksum, execution_ms) VALUES ({}, NOW(), {}, \
         (extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000)::float8) \
         RETURNING execution_ms",
        literal(&m.name),
        literal(&m.checksum)
    )
}

/// The history rows of migrations whose times were measured by the client
/// (a no-transaction file; the files of a batch), in one statement: ids
/// follow the order given, `run_on` is the transaction's `NOW()`.
pub fn insert_sql(rows: &[(&Migration, f64)]) -> String {
    let values = rows
        .iter()
        .map(|(m, execution_ms)| {
            format!(
                "({}, NOW(), {}, {execution_ms})",
                literal(&m.name),
                literal(&m.checksum)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("INSERT INTO {TABLE} (name, run_on, checksum, execution_ms) VALUES {values}")
}

/// Records the checksum of rows node-pg-migrate wrote, without touching
/// rows that already have one.
pub fn adopt_sql(adoptions: &[Adoption]) -> Option<String> {
    if adoptions.is_empty() {
        return None;
    }
    let values = adoptions
        .iter()
        .map(|a| format!("({}, {})", a.id, literal(&a.checksum)))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "UPDATE {TABLE} AS h SET checksum = v.checksum FROM (VALUES {values}) AS v(id, checksum) \
         WHERE h.id = v.id AND h.checksum IS NULL"
    ))
}

/// A history row that cannot be read (a column of an unexpected type).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pgmigrations has a row this tool cannot read ({0}): check the table's columns")]
pub struct UnreadableRow(pub String);

/// Reads the rows of [`select_sql`].
pub fn read_rows(messages: &[SimpleQueryMessage]) -> Result<Vec<AppliedMigration>, UnreadableRow> {
    let mut rows = Vec::new();
    for message in messages {
        let SimpleQueryMessage::Row(row) = message else {
            continue;
        };
        let text = |i: usize| row.get(i);
        let id = text(0)
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| UnreadableRow(format!("id {:?}", text(0))))?;
        let name = text(1)
            .ok_or_else(|| UnreadableRow(format!("name of id {id}")))?
            .to_string();
        rows.push(AppliedMigration {
            id,
            name,
            run_on: text(2).unwrap_or_default().to_string(),
            checksum: text(3).map(str::to_string),
            execution_ms: text(4).and_then(|v| v.parse().ok()),
        });
    }
    Ok(rows)
}

/// The last value of the last row among `messages` (what a `RETURNING`
/// at the end of a multi-statement message gives back).
pub fn last_value(messages: &[SimpleQueryMessage]) -> Option<&str> {
    messages.iter().rev().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(row.len().checked_sub(1)?),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse_migration;
    use super::*;

    #[test]
    fn table_is_created_as_node_pg_migrate_creates_it() {
        assert!(CREATE_TABLE.contains(
            r#""public"."pgmigrations" (id SERIAL PRIMARY KEY, name varchar(255) NOT NULL, run_on timestamp NOT NULL)"#
        ));
    }

    #[test]
    fn bookkeeping_columns_are_nullable_without_defaults() {
        assert!(!ADD_COLUMNS.to_uppercase().contains("NOT NULL"));
        assert!(!ADD_COLUMNS.to_uppercase().contains("DEFAULT"));
    }

    #[test]
    fn history_is_read_in_node_pg_migrate_order_and_without_our_columns_when_absent() {
        assert!(select_sql(TableState::Tracked).ends_with("ORDER BY run_on, id"));
        assert!(select_sql(TableState::Tracked).contains("checksum, execution_ms"));
        assert!(select_sql(TableState::NodePgMigrate).contains("NULL, NULL"));
    }

    #[test]
    fn inserts_use_server_time_and_record_the_checksum() {
        let m = parse_migration("001_a.sql", b"SELECT 1").unwrap();
        let sql = insert_measured_sql(&m);
        assert!(sql.contains("VALUES ('001_a', NOW(), '"), "{sql}");
        assert!(sql.contains(&m.checksum));
        assert!(sql.ends_with("RETURNING execution_ms"));
        assert!(insert_sql(&[(&m, 12.5)]).ends_with(", 12.5)"));
        let n = parse_migration("002_b.sql", b"SELECT 2").unwrap();
        let many = insert_sql(&[(&m, 1.0), (&n, 2.5)]);
        assert!(many.contains("('001_a', NOW(), "), "{many}");
        assert!(
            many.find("'001_a'") < many.find("'002_b'"),
            "rows keep the run order: {many}"
        );
    }

    #[test]
    fn adoption_only_fills_missing_checksums() {
        assert_eq!(adopt_sql(&[]), None);
        let sql = adopt_sql(&[Adoption {
            id: 7,
            name: "001_a".into(),
            checksum: "abc".into(),
        }])
        .unwrap();
        assert!(sql.contains("(VALUES (7, 'abc'))"), "{sql}");
        assert!(sql.ends_with("h.checksum IS NULL"));
    }

    #[test]
    fn table_state_reads_postgres_booleans() {
        assert_eq!(
            TableState::from_flags(Some("f"), Some("f")),
            TableState::Missing
        );
        assert_eq!(
            TableState::from_flags(Some("t"), Some("f")),
            TableState::NodePgMigrate
        );
        assert_eq!(
            TableState::from_flags(Some("t"), Some("t")),
            TableState::Tracked
        );
    }
}
