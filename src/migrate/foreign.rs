//! The history tables of other migration tools, recognized by `status` so a
//! database migrated by them can be adopted with `baseline`.
//!
//! Each tool is recognized by the table it creates (name, and the columns
//! that set it apart from an application table of the same name):
//!
//! | tool | table | rows counted | last | when |
//! |---|---|---|---|---|
//! | Prisma | `_prisma_migrations` (any schema) | finished, not rolled back | `migration_name` | `finished_at` |
//! | Drizzle | `__drizzle_migrations` (schema `drizzle` by default) | all | `hash` (Drizzle keeps no name) | `created_at` (epoch ms) |
//! | Knex | `knex_migrations` (any schema) | all | `name` | `migration_time` |
//! | node-pg-migrate | `pgmigrations` outside `public` | all | `name` | `run_on` |
//! | custom runner (seed 001) | `migrations` with `version`, `checksum`, `success` | successful, not rolled back | `version` + `name` | `applied_at` |
//!
//! Reading them is read only and costs one round trip to find the tables and
//! one per table found.

use serde::Serialize;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::pg::quote_ident;

/// A migration tool whose history table is recognized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tool {
    /// Prisma Migrate.
    Prisma,
    /// Drizzle Kit.
    Drizzle,
    /// Knex.
    Knex,
    /// node-pg-migrate with a `pgmigrations` table in another schema.
    NodePgMigrate,
    /// The custom runner of seed 001 (a `migrations` tracking table).
    CustomRunner,
}

impl Tool {
    /// The tool's usual name.
    pub fn label(self) -> &'static str {
        match self {
            Tool::Prisma => "Prisma",
            Tool::Drizzle => "Drizzle",
            Tool::Knex => "Knex",
            Tool::NodePgMigrate => "node-pg-migrate",
            Tool::CustomRunner => "a custom migration runner",
        }
    }

    /// Which tool a table is: its name, and whether it has the columns that
    /// tell the custom runner's `migrations` table from an application's.
    pub fn of_table(schema: &str, table: &str, runner_columns: bool) -> Option<Tool> {
        match table {
            "_prisma_migrations" => Some(Tool::Prisma),
            "__drizzle_migrations" => Some(Tool::Drizzle),
            "knex_migrations" => Some(Tool::Knex),
            "pgmigrations" if schema != "public" => Some(Tool::NodePgMigrate),
            "migrations" if runner_columns => Some(Tool::CustomRunner),
            _ => None,
        }
    }

    /// The summary query for the table `qualified`: count, last, when.
    pub fn summary_sql(self, qualified: &str) -> String {
        let (count_filter, last, when, order) = match self {
            Tool::Prisma => (
                "finished_at IS NOT NULL AND rolled_back_at IS NULL",
                "migration_name",
                "finished_at",
                "finished_at DESC, started_at DESC",
            ),
            Tool::Drizzle => (
                "true",
                "hash",
                "to_timestamp(created_at / 1000.0)",
                "created_at DESC, id DESC",
            ),
            Tool::Knex => ("true", "name", "migration_time", "id DESC"),
            Tool::NodePgMigrate => ("true", "name", "run_on", "run_on DESC, id DESC"),
            Tool::CustomRunner => (
                "success AND rolled_back_at IS NULL",
                "concat_ws('_', version, name)",
                "applied_at",
                "applied_at DESC, version DESC",
            ),
        };
        format!(
            "SELECT (SELECT count(*) FROM {qualified} WHERE {count_filter})::text, \
             l.last, date_trunc('second', l.at)::text \
             FROM (SELECT NULL) AS one LEFT JOIN LATERAL \
             (SELECT {last}::text AS last, {when} AS at FROM {qualified} WHERE {count_filter} \
              ORDER BY {order} LIMIT 1) AS l ON true"
        )
    }
}

/// Finds candidate tables: schema, name, and whether it has the custom
/// runner's columns. Skips the system schemas.
pub const FIND_SQL: &str = "SELECT n.nspname, c.relname, \
     (SELECT count(*) = 3 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid \
      AND a.attname IN ('version', 'checksum', 'success') AND a.attnum > 0 AND NOT a.attisdropped) \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p') \
     AND c.relname IN ('_prisma_migrations', '__drizzle_migrations', 'knex_migrations', 'pgmigrations', 'migrations') \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' \
     ORDER BY 1, 2";

/// Another tool's history found in the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForeignHistory {
    /// The tool.
    pub tool: Tool,
    /// The table, schema-qualified.
    pub table: String,
    /// Migrations it records as applied.
    pub applied: i64,
    /// The last one (a name, or Drizzle's hash).
    pub last: Option<String>,
    /// When the last one was applied.
    pub last_at: Option<String>,
    /// Why the table could not be summarized (no SELECT privilege on it, a
    /// column of another type): it is still reported, without figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

impl ForeignHistory {
    /// What was found and how to adopt the database.
    pub fn advice(&self) -> String {
        let found = match &self.unreadable {
            Some(why) => format!("its rows could not be read ({why})"),
            None => format!("{} migration(s) applied", self.applied),
        };
        let last = match (&self.last, &self.last_at) {
            (Some(l), Some(at)) => format!(", the last {l} at {at}"),
            (Some(l), None) => format!(", the last {l}"),
            _ => String::new(),
        };
        format!(
            "{} history found in {}: {found}{last}. To adopt this database, check \
             that the schema matches the migrations here (the `verify` action), then record the \
             migrations it already has with {{\"action\": \"baseline\", \"to\": \"<last migration \
             the schema already has>\", \"confirm\": true}}; later deploys run only the ones after it. \
             {} is left as it is: drop it once the team has stopped using {}.",
            self.tool.label(),
            self.table,
            self.table,
            self.tool.label()
        )
    }
}

fn rows(messages: &[SimpleQueryMessage]) -> impl Iterator<Item = &tokio_postgres::SimpleQueryRow> {
    messages.iter().filter_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    })
}

/// Finds the other tools' history tables and summarizes each.
pub async fn find(client: &Client) -> Result<Vec<ForeignHistory>, tokio_postgres::Error> {
    let found = client.simple_query(FIND_SQL).await?;
    let mut histories = Vec::new();
    for row in rows(&found) {
        let (Some(schema), Some(table)) = (row.get(0), row.get(1)) else {
            continue;
        };
        let Some(tool) = Tool::of_table(schema, table, row.get(2) == Some("t")) else {
            continue;
        };
        let qualified = format!("{}.{}", quote_ident(schema), quote_ident(table));
        // Read only and outside a transaction: a refused read spoils nothing.
        let (summary, unreadable) = match client.simple_query(&tool.summary_sql(&qualified)).await {
            Ok(messages) => (messages, None),
            Err(e) => (
                Vec::new(),
                Some(crate::pg::ServerError::from_pg(&e).to_string()),
            ),
        };
        let first = rows(&summary).next();
        let text = |i: usize| first.and_then(|r| r.get(i)).map(str::to_string);
        histories.push(ForeignHistory {
            tool,
            table: format!("{schema}.{table}"),
            applied: text(0).and_then(|n| n.parse().ok()).unwrap_or(0),
            last: text(1),
            last_at: text(2),
            unreadable,
        });
    }
    Ok(histories)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_recognized_by_name_and_columns() {
        assert_eq!(
            Tool::of_table("public", "_prisma_migrations", false),
            Some(Tool::Prisma)
        );
        assert_eq!(
            Tool::of_table("drizzle", "__drizzle_migrations", false),
            Some(Tool::Drizzle)
        );
        assert_eq!(
            Tool::of_table("public", "knex_migrations", false),
            Some(Tool::Knex)
        );
        assert_eq!(
            Tool::of_table("legacy", "pgmigrations", false),
            Some(Tool::NodePgMigrate)
        );
        assert_eq!(Tool::of_table("public", "pgmigrations", false), None);
        assert_eq!(
            Tool::of_table("public", "migrations", true),
            Some(Tool::CustomRunner)
        );
        assert_eq!(Tool::of_table("public", "migrations", false), None);
    }

    #[test]
    fn the_last_migration_is_the_latest_by_every_ordering_column() {
        let sql = Tool::Prisma.summary_sql("public._prisma_migrations");
        assert!(
            sql.contains("ORDER BY finished_at DESC, started_at DESC LIMIT 1"),
            "{sql}"
        );
    }

    #[test]
    fn advice_says_what_was_found_and_how_to_adopt() {
        let h = ForeignHistory {
            tool: Tool::Knex,
            table: "public.knex_migrations".into(),
            applied: 4,
            last: Some("20240211000004_create_evaluation_tables.ts".into()),
            last_at: Some("2024-02-11 10:00:00+00".into()),
            unreadable: None,
        };
        let advice = h.advice();
        assert!(advice.starts_with("Knex history found in public.knex_migrations: 4 migration(s) applied, the last 20240211000004_create_evaluation_tables.ts at 2024-02-11 10:00:00+00"), "{advice}");
        assert!(advice.contains("\"action\": \"baseline\""), "{advice}");
        let refused = ForeignHistory {
            unreadable: Some("42501 permission denied".into()),
            last: None,
            last_at: None,
            ..h
        };
        assert!(
            refused.advice().starts_with(
                "Knex history found in public.knex_migrations: its rows could not be read (42501 permission denied). To adopt"
            ),
            "{}",
            refused.advice()
        );
    }
}
