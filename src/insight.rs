//! Maintenance insight: what is wrong with this database, in one read-only
//! invoke. Sizes with row estimates, indexes never scanned, invalid indexes,
//! dead tuples and (auto)vacuum/analyze times, pgvector indexes and their
//! parameters, sequences near exhaustion, tables without a primary key,
//! long-running, blocked and blocking sessions, connections per role; each
//! finding with a short piece of advice.
//!
//! Works as the admin of an RDS instance: no superuser; sessions of other
//! roles are visible with `pg_monitor` (`pg_read_all_stats`), without it the
//! report says they are hidden. Another session's query text is never read
//! (it can hold secrets): a session is described by its pid, role,
//! application, state, wait and durations. Every category is bounded to the
//! top `top` rows, and every query is one pipelined round trip reading the
//! catalog and the statistics views (no table is scanned), so the answer
//! stays well under a second on a database with thousands of tables.
//!
//! Sizes are the catalog's (`pg_class.relpages`, as of the last VACUUM,
//! ANALYZE or CREATE INDEX), not the files': `pg_relation_size` takes a lock
//! on each relation, and would queue behind any waiting `ALTER TABLE` (and
//! the sessions queued behind it), which a diagnosis tool must never do.
//! For the same reason the session runs with a short `lock_timeout`
//! ([`LOCK_TIMEOUT`]; reading a sequence's last value takes a light lock).
//!
//! The SQL lives in [`queries`]; building the findings is pure ([`findings`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

use crate::db::pipeline;

/// The default number of rows per category.
pub const DEFAULT_TOP: usize = 10;
/// The most rows per category a caller may ask for.
pub const MAX_TOP: usize = 1000;
/// A query (or an open transaction) running longer than this is reported.
pub const DEFAULT_LONG_RUNNING: Duration = Duration::from_secs(60);
/// A sequence that has used this share of its range is reported.
pub const SEQUENCE_WARN_PERCENT: f64 = 75.0;
/// Dead tuples above this share of the table's rows (and above
/// [`DEAD_TUPLES_MIN`]) call for a VACUUM.
pub const DEAD_RATIO_WARN: f64 = 0.2;
/// Fewer dead tuples than this are not worth a finding.
pub const DEAD_TUPLES_MIN: i64 = 1000;
/// Connections above this share of `max_connections` are a finding.
pub const CONNECTIONS_WARN_RATIO: f64 = 0.8;

/// The `lock_timeout` of the insight session: it never waits long for a lock.
pub const LOCK_TIMEOUT: &str = "2s";

/// What to report, from the event (`top`, `long_running`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InsightOptions {
    /// Rows per category (1..=[`MAX_TOP`]).
    pub top: usize,
    /// Sessions whose query or transaction runs longer are listed.
    #[serde(with = "seconds")]
    pub long_running: Duration,
}

mod seconds {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

impl Default for InsightOptions {
    fn default() -> Self {
        InsightOptions {
            top: DEFAULT_TOP,
            long_running: DEFAULT_LONG_RUNNING,
        }
    }
}

/// A table's size and row estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableSize {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// `pg_class.reltuples` (−1 or 0 until the table is first analyzed).
    pub rows_estimate: i64,
    /// Table, indexes and TOAST, in bytes.
    pub total_bytes: i64,
    /// The same, readable (`pg_size_pretty`).
    pub total: String,
    /// The indexes, in bytes.
    pub index_bytes: i64,
}

/// An index with its size and use.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexUse {
    /// Schema.
    pub schema: String,
    /// Its table.
    pub table: String,
    /// Index.
    pub index: String,
    /// Size in bytes.
    pub bytes: i64,
    /// Size, readable.
    pub size: String,
    /// Index scans since the last statistics reset.
    pub scans: i64,
    /// Backs a primary key or unique constraint (never "unused": it enforces).
    pub unique: bool,
    /// False for a failed concurrent build.
    pub valid: bool,
}

/// Dead tuples and maintenance times of one table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Maintenance {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Live tuples (statistics).
    pub live: i64,
    /// Dead tuples (statistics).
    pub dead: i64,
    /// Last manual VACUUM.
    pub last_vacuum: Option<String>,
    /// Last autovacuum.
    pub last_autovacuum: Option<String>,
    /// Last manual ANALYZE.
    pub last_analyze: Option<String>,
    /// Last autoanalyze.
    pub last_autoanalyze: Option<String>,
}

/// A pgvector index and its build parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VectorIndex {
    /// Schema.
    pub schema: String,
    /// Its table.
    pub table: String,
    /// Index.
    pub index: String,
    /// `hnsw` or `ivfflat`.
    pub method: String,
    /// HNSW `m` (pgvector's default 16 when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub m: Option<i64>,
    /// HNSW `ef_construction` (default 64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ef_construction: Option<i64>,
    /// IVFFlat `lists` (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lists: Option<i64>,
    /// IVFFlat: the usual choice for the table's rows now ([`suggested_lists`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggested_lists: Option<i64>,
    /// The table's row estimate.
    pub table_rows: i64,
    /// Size in bytes.
    pub bytes: i64,
    /// Size, readable.
    pub size: String,
}

/// A sequence and how much of its range is used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SequenceUse {
    /// Schema.
    pub schema: String,
    /// Sequence.
    pub sequence: String,
    /// `smallint`, `integer` or `bigint`.
    pub data_type: String,
    /// Last value handed out.
    pub last_value: i64,
    /// Its limit in the direction it counts.
    pub max_value: i64,
    /// Share of the range used, in percent.
    pub used_percent: f64,
}

/// A table without a primary key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoPrimaryKey {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Row estimate.
    pub rows_estimate: i64,
}

/// A session, without its query text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    /// Backend pid (`SELECT pg_cancel_backend(pid)` cancels its query).
    pub pid: i32,
    /// Role.
    pub user: Option<String>,
    /// `application_name`.
    pub application_name: Option<String>,
    /// Client address.
    pub client_addr: Option<String>,
    /// `active`, `idle in transaction`, ...
    pub state: Option<String>,
    /// `Lock`, `IO`, `Client`, ...
    pub wait_event_type: Option<String>,
    /// The wait event (`relation`, `transactionid`, ...).
    pub wait_event: Option<String>,
    /// Seconds since its current query started.
    pub query_seconds: Option<f64>,
    /// Seconds since its transaction started.
    pub transaction_seconds: Option<f64>,
    /// The pids it waits for (blocked sessions only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocked_by: Vec<i32>,
}

/// Connections of one role to one database.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoleConnections {
    /// Role (null: a session whose role this user may not see).
    pub role: Option<String>,
    /// Database.
    pub database: Option<String>,
    /// Connections.
    pub total: i64,
    /// Of which running a query.
    pub active: i64,
    /// Of which idle inside an open transaction.
    pub idle_in_transaction: i64,
}

/// Connections, server-wide.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Connections {
    /// `max_connections`.
    pub max_connections: i64,
    /// Client connections now.
    pub total: i64,
    /// Per role and database, most first.
    pub by_role: Vec<RoleConnections>,
}

/// One piece of advice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `unused_index`, `invalid_index`, `vacuum`, `analyze`, `vector_index`,
    /// `sequence`, `no_primary_key`, `long_running`, `idle_in_transaction`,
    /// `blocked`, `connections`, `visibility`.
    pub category: &'static str,
    /// What it is about (`schema.table`, `pid 123`, ...).
    pub object: String,
    /// What to do.
    pub advice: String,
}

/// The insight report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InsightReport {
    /// The database looked at.
    pub database: String,
    /// The options used.
    pub options: InsightOptions,
    /// When the statistics (scans, dead tuples) were last reset; they count from there.
    pub stats_reset: Option<String>,
    /// Whether other roles' sessions are visible (superuser or `pg_read_all_stats`).
    pub sees_all_sessions: bool,
    /// Largest tables.
    pub tables: Vec<TableSize>,
    /// Largest indexes.
    pub indexes: Vec<IndexUse>,
    /// Largest indexes with no scan since the stats reset (not unique, valid).
    pub unused_indexes: Vec<IndexUse>,
    /// Invalid indexes.
    pub invalid_indexes: Vec<IndexUse>,
    /// Tables with the most dead tuples.
    pub maintenance: Vec<Maintenance>,
    /// pgvector indexes.
    pub vector_indexes: Vec<VectorIndex>,
    /// Sequences, most used first.
    pub sequences: Vec<SequenceUse>,
    /// Largest tables without a primary key.
    pub tables_without_primary_key: Vec<NoPrimaryKey>,
    /// Sessions whose query or transaction runs longer than `long_running`.
    pub long_running: Vec<Session>,
    /// Sessions waiting for a lock another holds.
    pub blocked: Vec<Session>,
    /// Sessions holding what others wait for.
    pub blocking: Vec<Session>,
    /// Connections per role.
    pub connections: Connections,
    /// Advice, in the order of the sections above.
    pub findings: Vec<Finding>,
}

/// The usual IVFFlat `lists` for a table: rows/1000 up to a million rows,
/// √rows above (pgvector's guidance), at least 1; `None` while the row count
/// is unknown (`reltuples` is −1 until the table is first analyzed).
pub fn suggested_lists(rows: i64) -> Option<i64> {
    if rows < 0 {
        return None;
    }
    let lists = if rows <= 1_000_000 {
        rows / 1000
    } else {
        (rows as f64).sqrt().round() as i64
    };
    Some(lists.max(1))
}

/// Reads `{m=16,ef_construction=64}` (`pg_class.reloptions` as text) into pairs.
pub fn parse_reloptions(text: &str) -> BTreeMap<String, String> {
    text.trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .filter_map(|kv| kv.trim().trim_matches('"').split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn qualified(schema: &str, name: &str) -> String {
    format!("{schema}.{name}")
}

fn pid(session: &Session) -> String {
    format!("pid {}", session.pid)
}

/// The advice for what the report holds (pure).
pub fn findings(report: &InsightReport) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |category, object: String, advice: String| {
        out.push(Finding {
            category,
            object,
            advice,
        })
    };
    if !report.sees_all_sessions {
        push(
            "visibility",
            report.database.clone(),
            "sessions of other roles are hidden from this role: grant it pg_monitor \
             (GRANT pg_monitor TO <admin>) to see long-running and blocking sessions"
                .into(),
        );
    }
    let since = report
        .stats_reset
        .as_deref()
        .map(|s| format!("since {s}"))
        .unwrap_or_else(|| "since the statistics were created".into());
    for i in &report.unused_indexes {
        push(
            "unused_index",
            qualified(&i.schema, &i.index),
            format!(
                "never scanned {since} ({}): if that period covers normal traffic (and no replica uses it), \
                 DROP INDEX CONCURRENTLY in a migration saves the space and write cost",
                i.size
            ),
        );
    }
    for i in &report.invalid_indexes {
        push(
            "invalid_index",
            qualified(&i.schema, &i.index),
            "INVALID (a failed or cancelled concurrent build): it is maintained on writes but never used; \
             DROP INDEX CONCURRENTLY and build it again"
                .into(),
        );
    }
    for t in &report.maintenance {
        let object = qualified(&t.schema, &t.table);
        let total = t.live + t.dead;
        if t.dead >= DEAD_TUPLES_MIN && total > 0 && t.dead as f64 / total as f64 > DEAD_RATIO_WARN
        {
            let last = t
                .last_autovacuum
                .as_deref()
                .or(t.last_vacuum.as_deref())
                .map(|s| format!("last vacuum {s}"))
                .unwrap_or_else(|| "never vacuumed".into());
            push(
                "vacuum",
                object.clone(),
                format!(
                    "{} dead tuples for {} live ({last}): run VACUUM (ANALYZE) on it, and if this recurs \
                     lower its autovacuum_vacuum_scale_factor",
                    t.dead, t.live
                ),
            );
        }
        if t.live >= DEAD_TUPLES_MIN && t.last_analyze.is_none() && t.last_autoanalyze.is_none() {
            push(
                "analyze",
                object,
                format!(
                    "{} rows and never analyzed: the planner guesses; run ANALYZE on it",
                    t.live
                ),
            );
        }
    }
    for v in &report.vector_indexes {
        let object = qualified(&v.schema, &v.index);
        match (v.method.as_str(), v.lists, v.suggested_lists) {
            ("ivfflat", Some(lists), Some(suggested))
                if lists > suggested.saturating_mul(2) || lists.saturating_mul(2) < suggested =>
            {
                push(
                    "vector_index",
                    object,
                    format!(
                        "lists = {lists} for about {} rows; the usual choice is {suggested} (rows/1000, √rows \
                         above a million): IVFFlat picks its centroids at build time, so rebuild it with \
                         lists = {suggested} (REINDEX INDEX CONCURRENTLY after changing the migration's \
                         WITH (lists = ...), in a new migration)",
                        v.table_rows
                    ),
                );
            }
            ("hnsw", _, _) if v.m.is_some_and(|m| m < 8) => push(
                "vector_index",
                object,
                "HNSW m below 8 gives poor recall on most embeddings: 16 (the default) is the usual start".into(),
            ),
            _ => {}
        }
    }
    for s in &report.sequences {
        if s.used_percent >= SEQUENCE_WARN_PERCENT {
            push(
                "sequence",
                qualified(&s.schema, &s.sequence),
                format!(
                    "{:.1}% of its {} range used ({} of {}): change the column and the sequence to bigint \
                     before it runs out (nextval fails then)",
                    s.used_percent, s.data_type, s.last_value, s.max_value
                ),
            );
        }
    }
    for t in &report.tables_without_primary_key {
        push(
            "no_primary_key",
            qualified(&t.schema, &t.table),
            "no primary key: rows cannot be addressed one by one, logical replication cannot \
             replicate its UPDATEs and DELETEs; add one (an identity column if nothing else fits)"
                .into(),
        );
    }
    for s in &report.long_running {
        if s.state
            .as_deref()
            .is_some_and(|st| st.starts_with("idle in transaction"))
        {
            push(
                "idle_in_transaction",
                pid(s),
                format!(
                    "idle in a transaction open for {:.0} s: it holds its locks and keeps VACUUM from \
                     cleaning up; fix the client, set idle_in_transaction_session_timeout, or end it \
                     with SELECT pg_terminate_backend({})",
                    s.transaction_seconds.unwrap_or(0.0),
                    s.pid
                ),
            );
        } else {
            push(
                "long_running",
                pid(s),
                format!(
                    "running for {:.0} s: if it should not, SELECT pg_cancel_backend({}) cancels the query",
                    s.query_seconds.unwrap_or(0.0),
                    s.pid
                ),
            );
        }
    }
    for s in &report.blocked {
        let by: Vec<String> = s.blocked_by.iter().map(|p| p.to_string()).collect();
        push(
            "blocked",
            pid(s),
            format!(
                "waiting for a lock held by pid(s) {}: see `blocking` for who they are; \
                 pg_cancel_backend / pg_terminate_backend on the holder releases it",
                by.join(", ")
            ),
        );
    }
    let c = &report.connections;
    if c.max_connections > 0 && c.total as f64 >= c.max_connections as f64 * CONNECTIONS_WARN_RATIO
    {
        push(
            "connections",
            report.database.clone(),
            format!(
                "{} of {} connections in use: use a pool (RDS Proxy, pgbouncer) or lower the \
                 clients' pool sizes before new connections are refused",
                c.total, c.max_connections
            ),
        );
    }
    out
}

/// The statements, in the order [`insight`] reads them. Each is bounded by `top`.
pub fn queries(options: &InsightOptions) -> Vec<String> {
    let top = options.top;
    let long = options.long_running.as_secs_f64();
    let user_schema = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
                       AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp_'";
    let block = "current_setting('block_size')::bigint";
    let index_cols = format!(
        "s.schemaname, s.relname, s.indexrelname, ic.relpages::bigint * {block}, \
         pg_catalog.pg_size_pretty(ic.relpages::bigint * {block}), s.idx_scan, \
         i.indisunique OR i.indisprimary, i.indisvalid \
         FROM pg_catalog.pg_stat_user_indexes s JOIN pg_catalog.pg_index i ON i.indexrelid = s.indexrelid \
         JOIN pg_catalog.pg_class ic ON ic.oid = s.indexrelid"
    );
    let session_cols = "a.pid, a.usename, nullif(a.application_name, ''), host(a.client_addr), a.state, \
                        a.wait_event_type, a.wait_event, \
                        extract(epoch FROM now() - a.query_start)::float8, \
                        extract(epoch FROM now() - a.xact_start)::float8";
    let own_db = "a.datname = current_database() AND a.pid <> pg_catalog.pg_backend_pid() \
                  AND a.backend_type = 'client backend'";
    vec![
        format!("SET lock_timeout = '{LOCK_TIMEOUT}'"),
        // 0: database, stats reset, visibility, max_connections
        "SELECT current_database(), \
         (SELECT stats_reset::text FROM pg_catalog.pg_stat_database WHERE datname = current_database()), \
         (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) \
         OR pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'), \
         current_setting('max_connections')"
            .into(),
        // 1: tables by total size (table, TOAST and indexes)
        format!(
            "SELECT n.nspname, c.relname, c.reltuples::bigint, z.total, pg_catalog.pg_size_pretty(z.total), z.idx \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_catalog.pg_class toast ON toast.oid = c.reltoastrelid \
             LEFT JOIN (SELECT i.indrelid, sum(ic.relpages)::bigint AS pages FROM pg_catalog.pg_index i \
                        JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid GROUP BY i.indrelid) ix \
               ON ix.indrelid = c.oid \
             CROSS JOIN LATERAL (SELECT \
               (c.relpages::bigint + coalesce(toast.relpages, 0) + coalesce(ix.pages, 0)) * {block} AS total, \
               coalesce(ix.pages, 0) * {block} AS idx) z \
             WHERE c.relkind IN ('r', 'p', 'm') AND {user_schema} \
             ORDER BY z.total DESC, n.nspname, c.relname LIMIT {top}"
        ),
        // 2: indexes by size
        format!(
            "SELECT {index_cols} ORDER BY 4 DESC, 1, 3 LIMIT {top}"
        ),
        // 3: never scanned
        format!(
            "SELECT {index_cols} WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary AND i.indisvalid \
             ORDER BY 4 DESC, 1, 3 LIMIT {top}"
        ),
        // 4: invalid
        format!(
            "SELECT {index_cols} WHERE NOT i.indisvalid ORDER BY 4 DESC, 1, 3 LIMIT {top}"
        ),
        // 5: dead tuples and maintenance
        format!(
            "SELECT schemaname, relname, n_live_tup, n_dead_tup, last_vacuum::text, last_autovacuum::text, \
             last_analyze::text, last_autoanalyze::text FROM pg_catalog.pg_stat_user_tables \
             WHERE n_dead_tup > 0 OR (last_analyze IS NULL AND last_autoanalyze IS NULL AND n_live_tup > 0) \
             ORDER BY n_dead_tup DESC, n_live_tup DESC, schemaname, relname LIMIT {top}"
        ),
        // 6: pgvector indexes
        format!(
            "SELECT n.nspname, t.relname, ic.relname, am.amname, coalesce(ic.reloptions::text, ''), \
             t.reltuples::bigint, ic.relpages::bigint * {block}, \
             pg_catalog.pg_size_pretty(ic.relpages::bigint * {block}) \
             FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
             JOIN pg_catalog.pg_class t ON t.oid = i.indrelid JOIN pg_catalog.pg_am am ON am.oid = ic.relam \
             JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace \
             WHERE am.amname IN ('hnsw', 'ivfflat') AND {user_schema} \
             ORDER BY 7 DESC, 1, 3 LIMIT {top}"
        ),
        // 7: sequences by share of range used (last_value is null when
        // never used or not readable by this role)
        format!(
            "SELECT schemaname, sequencename, data_type::text, last_value, \
             CASE WHEN increment_by > 0 THEN max_value ELSE min_value END, \
             round((100.0 * CASE WHEN increment_by > 0 \
               THEN (last_value::numeric - least(start_value, 0)) / nullif(max_value::numeric - least(start_value, 0), 0) \
               ELSE (last_value::numeric - greatest(start_value, 0)) / nullif(min_value::numeric - greatest(start_value, 0), 0) END)::numeric, 2)::float8 AS used \
             FROM pg_catalog.pg_sequences WHERE last_value IS NOT NULL AND NOT cycle \
             ORDER BY used DESC NULLS LAST, 1, 2 LIMIT {top}"
        ),
        // 8: tables without a primary key
        format!(
            "SELECT n.nspname, c.relname, c.reltuples::bigint \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {user_schema} \
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
             ORDER BY c.reltuples DESC, 1, 2 LIMIT {top}"
        ),
        // 9: long-running queries and transactions
        format!(
            "SELECT {session_cols} FROM pg_catalog.pg_stat_activity a WHERE {own_db} \
             AND a.state IS DISTINCT FROM 'idle' \
             AND (now() - a.query_start > make_interval(secs => {long}) \
                  OR now() - a.xact_start > make_interval(secs => {long})) \
             ORDER BY least(a.query_start, a.xact_start), a.pid LIMIT {top}"
        ),
        // 10: blocked sessions (waiting for a lock) and who blocks them
        format!(
            "SELECT {session_cols}, pg_catalog.pg_blocking_pids(a.pid)::text \
             FROM pg_catalog.pg_stat_activity a WHERE {own_db} AND a.wait_event_type = 'Lock' \
             AND cardinality(pg_catalog.pg_blocking_pids(a.pid)) > 0 \
             ORDER BY a.query_start, a.pid LIMIT {top}"
        ),
        // 11: the sessions that block others
        format!(
            "SELECT {session_cols} FROM pg_catalog.pg_stat_activity a \
             WHERE a.pid IN (SELECT unnest(pg_catalog.pg_blocking_pids(b.pid)) FROM pg_catalog.pg_stat_activity b \
                             WHERE b.datname = current_database() AND b.wait_event_type = 'Lock') \
             ORDER BY a.xact_start, a.pid LIMIT {top}"
        ),
        // 12: connections per role and database
        format!(
            "SELECT a.usename, a.datname, count(*), count(*) FILTER (WHERE a.state = 'active'), \
             count(*) FILTER (WHERE a.state LIKE 'idle in transaction%'), sum(count(*)) OVER ()::bigint \
             FROM pg_catalog.pg_stat_activity a WHERE a.backend_type = 'client backend' \
             GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT {top}"
        ),
    ]
}

fn rows(messages: &[SimpleQueryMessage]) -> impl Iterator<Item = &SimpleQueryRow> {
    messages.iter().filter_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    })
}

fn text(row: &SimpleQueryRow, i: usize) -> String {
    row.get(i).unwrap_or_default().to_string()
}

fn opt(row: &SimpleQueryRow, i: usize) -> Option<String> {
    row.get(i).map(str::to_string)
}

fn int(row: &SimpleQueryRow, i: usize) -> i64 {
    row.get(i).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn float(row: &SimpleQueryRow, i: usize) -> Option<f64> {
    row.get(i).and_then(|v| v.parse().ok())
}

fn flag(row: &SimpleQueryRow, i: usize) -> bool {
    row.get(i) == Some("t")
}

fn index_use(r: &SimpleQueryRow) -> IndexUse {
    IndexUse {
        schema: text(r, 0),
        table: text(r, 1),
        index: text(r, 2),
        bytes: int(r, 3),
        size: text(r, 4),
        scans: int(r, 5),
        unique: flag(r, 6),
        valid: flag(r, 7),
    }
}

fn session(r: &SimpleQueryRow) -> Session {
    Session {
        pid: int(r, 0) as i32,
        user: opt(r, 1),
        application_name: opt(r, 2),
        client_addr: opt(r, 3),
        state: opt(r, 4),
        wait_event_type: opt(r, 5),
        wait_event: opt(r, 6),
        query_seconds: float(r, 7).map(|s| (s * 10.0).round() / 10.0),
        transaction_seconds: float(r, 8).map(|s| (s * 10.0).round() / 10.0),
        blocked_by: Vec::new(),
    }
}

/// Reads `{1,2}` (an int[] as text).
fn pids(text: &str) -> Vec<i32> {
    text.trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// Reads the catalog and the statistics views (one pipelined round trip) and
/// builds the report with its findings.
pub async fn insight(
    client: &Client,
    options: &InsightOptions,
) -> Result<InsightReport, tokio_postgres::Error> {
    let options = InsightOptions {
        top: options.top.clamp(1, MAX_TOP),
        ..*options
    };
    let mut results = pipeline(client, &queries(&options)).await.into_iter();
    let mut next = || {
        results
            .next()
            .map(|(r, _)| r)
            .unwrap_or_else(|| Ok(Vec::new()))
    };
    next()?; // lock_timeout
    let head = next()?;
    let head = rows(&head).next();
    let mut report = InsightReport {
        database: head.map(|r| text(r, 0)).unwrap_or_default(),
        options,
        stats_reset: head.and_then(|r| opt(r, 1)),
        sees_all_sessions: head.is_some_and(|r| flag(r, 2)),
        tables: rows(&next()?)
            .map(|r| TableSize {
                schema: text(r, 0),
                table: text(r, 1),
                rows_estimate: int(r, 2),
                total_bytes: int(r, 3),
                total: text(r, 4),
                index_bytes: int(r, 5),
            })
            .collect(),
        indexes: rows(&next()?).map(index_use).collect(),
        unused_indexes: rows(&next()?).map(index_use).collect(),
        invalid_indexes: rows(&next()?).map(index_use).collect(),
        maintenance: rows(&next()?)
            .map(|r| Maintenance {
                schema: text(r, 0),
                table: text(r, 1),
                live: int(r, 2),
                dead: int(r, 3),
                last_vacuum: opt(r, 4),
                last_autovacuum: opt(r, 5),
                last_analyze: opt(r, 6),
                last_autoanalyze: opt(r, 7),
            })
            .collect(),
        vector_indexes: rows(&next()?)
            .map(|r| {
                let method = text(r, 3);
                let params = parse_reloptions(&text(r, 4));
                let param = |k: &str, default: i64| {
                    params.get(k).and_then(|v| v.parse().ok()).or(Some(default))
                };
                let hnsw = method == "hnsw";
                let table_rows = int(r, 5);
                VectorIndex {
                    schema: text(r, 0),
                    table: text(r, 1),
                    index: text(r, 2),
                    m: if hnsw { param("m", 16) } else { None },
                    ef_construction: if hnsw {
                        param("ef_construction", 64)
                    } else {
                        None
                    },
                    lists: if hnsw { None } else { param("lists", 100) },
                    suggested_lists: if hnsw {
                        None
                    } else {
                        suggested_lists(table_rows)
                    },
                    method,
                    table_rows,
                    bytes: int(r, 6),
                    size: text(r, 7),
                }
            })
            .collect(),
        sequences: rows(&next()?)
            .map(|r| SequenceUse {
                schema: text(r, 0),
                sequence: text(r, 1),
                data_type: text(r, 2),
                last_value: int(r, 3),
                max_value: int(r, 4),
                used_percent: float(r, 5).unwrap_or(0.0),
            })
            .collect(),
        tables_without_primary_key: rows(&next()?)
            .map(|r| NoPrimaryKey {
                schema: text(r, 0),
                table: text(r, 1),
                rows_estimate: int(r, 2),
            })
            .collect(),
        long_running: rows(&next()?).map(session).collect(),
        blocked: rows(&next()?)
            .map(|r| Session {
                blocked_by: pids(&text(r, 9)),
                ..session(r)
            })
            .collect(),
        blocking: rows(&next()?).map(session).collect(),
        connections: Connections::default(),
        findings: Vec::new(),
    };
    let by_role = next()?;
    report.connections = Connections {
        max_connections: head.map(|r| int(r, 3)).unwrap_or(0),
        total: rows(&by_role).next().map(|r| int(r, 5)).unwrap_or(0),
        by_role: rows(&by_role)
            .map(|r| RoleConnections {
                role: opt(r, 0),
                database: opt(r, 1),
                total: int(r, 2),
                active: int(r, 3),
                idle_in_transaction: int(r, 4),
            })
            .collect(),
    };
    report.findings = findings(&report);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ivfflat_lists_follow_the_rows_rule() {
        assert_eq!(suggested_lists(0), Some(1));
        assert_eq!(suggested_lists(-1), None);
        assert_eq!(suggested_lists(50_000), Some(50));
        assert_eq!(suggested_lists(1_000_000), Some(1000));
        assert_eq!(suggested_lists(4_000_000), Some(2000));
    }

    #[test]
    fn reloptions_are_read() {
        let o = parse_reloptions("{m=16,ef_construction=64}");
        assert_eq!(o.get("m").map(String::as_str), Some("16"));
        assert_eq!(o.get("ef_construction").map(String::as_str), Some("64"));
        assert!(parse_reloptions("").is_empty());
        assert_eq!(pids("{12,34}"), vec![12, 34]);
        assert!(pids("{}").is_empty());
    }

    fn empty() -> InsightReport {
        InsightReport {
            database: "app".into(),
            options: InsightOptions::default(),
            stats_reset: None,
            sees_all_sessions: true,
            tables: vec![],
            indexes: vec![],
            unused_indexes: vec![],
            invalid_indexes: vec![],
            maintenance: vec![],
            vector_indexes: vec![],
            sequences: vec![],
            tables_without_primary_key: vec![],
            long_running: vec![],
            blocked: vec![],
            blocking: vec![],
            connections: Connections {
                max_connections: 100,
                total: 3,
                by_role: vec![],
            },
            findings: vec![],
        }
    }

    fn vector(method: &str, lists: Option<i64>, rows: i64, m: Option<i64>) -> VectorIndex {
        VectorIndex {
            schema: "public".into(),
            table: "emb".into(),
            index: format!("idx_{method}"),
            method: method.into(),
            m,
            ef_construction: m.map(|_| 64),
            lists,
            suggested_lists: lists.and(suggested_lists(rows)),
            table_rows: rows,
            bytes: 0,
            size: "0 bytes".into(),
        }
    }

    #[test]
    fn a_healthy_report_has_no_findings() {
        let mut r = empty();
        r.vector_indexes = vec![
            vector("ivfflat", Some(100), 100_000, None),
            vector("hnsw", None, 10, Some(16)),
            // Never analyzed: the rows are unknown, no advice on lists.
            vector("ivfflat", Some(100), -1, None),
        ];
        r.sequences = vec![SequenceUse {
            schema: "public".into(),
            sequence: "s".into(),
            data_type: "integer".into(),
            last_value: 10,
            max_value: i32::MAX as i64,
            used_percent: 0.0,
        }];
        assert_eq!(findings(&r), vec![]);
    }

    #[test]
    fn each_problem_gets_its_advice() {
        let mut r = empty();
        r.sees_all_sessions = false;
        r.vector_indexes = vec![
            vector("ivfflat", Some(100), 2_000, None),
            vector("hnsw", None, 10, Some(4)),
        ];
        r.sequences = vec![SequenceUse {
            schema: "public".into(),
            sequence: "s".into(),
            data_type: "integer".into(),
            last_value: 2_000_000_000,
            max_value: i32::MAX as i64,
            used_percent: 93.13,
        }];
        r.maintenance = vec![Maintenance {
            schema: "public".into(),
            table: "t".into(),
            live: 1000,
            dead: 4000,
            last_vacuum: None,
            last_autovacuum: None,
            last_analyze: None,
            last_autoanalyze: None,
        }];
        let s = Session {
            pid: 7,
            user: Some("app".into()),
            application_name: None,
            client_addr: None,
            state: Some("idle in transaction".into()),
            wait_event_type: None,
            wait_event: None,
            query_seconds: Some(300.0),
            transaction_seconds: Some(301.0),
            blocked_by: vec![],
        };
        r.long_running = vec![s.clone()];
        r.blocked = vec![Session {
            pid: 8,
            blocked_by: vec![7],
            state: Some("active".into()),
            ..s
        }];
        r.connections.total = 90;
        let f = findings(&r);
        let advice = |c: &str| {
            f.iter()
                .filter(|x| x.category == c)
                .map(|x| x.advice.clone())
                .collect::<Vec<_>>()
                .join(" | ")
        };
        assert!(advice("visibility").contains("pg_monitor"));
        assert!(
            advice("vector_index")
                .contains("lists = 100 for about 2000 rows; the usual choice is 2")
        );
        assert!(advice("vector_index").contains("HNSW m below 8"));
        assert!(advice("sequence").contains("93.1% of its integer range"));
        assert!(advice("vacuum").contains("4000 dead tuples for 1000 live (never vacuumed)"));
        assert!(advice("analyze").contains("never analyzed"));
        assert!(advice("idle_in_transaction").contains("pg_terminate_backend(7)"));
        assert!(advice("blocked").contains("held by pid(s) 7"));
        assert!(advice("connections").contains("90 of 100"));
    }

    #[test]
    fn every_query_is_bounded_and_never_reads_query_text() {
        let options = InsightOptions {
            top: 7,
            long_running: Duration::from_secs(5),
        };
        for (i, q) in queries(&options).iter().enumerate().skip(2) {
            assert!(q.ends_with("LIMIT 7"), "query {i} is unbounded: {q}");
        }
        // The column `query` (another session's text) is never named.
        for q in queries(&options) {
            let named = q.match_indices("query").any(|(at, _)| {
                let before = q[..at].chars().next_back();
                let after = q[at + 5..].chars().next();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            assert!(!named, "{q}");
        }
    }
}
