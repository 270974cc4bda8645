//! What must exist after all migrations, checked against the live database
//! item by item: the automated form of a migration guide's verification
//! queries. The list is declared in `expected.json` (embedded); comparing it
//! with what the catalog holds is pure ([`compare`]). `expected.json` keeps
//! what a catalog cannot say (seed rows, minimum extension versions);
//! [`catalog`] compares every object the migrations make (drift).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_postgres::{Client, SimpleQueryMessage};

pub mod catalog;

use crate::db::pipeline;
use crate::pg::{ServerError, literal, quote_ident};

/// The declared expectations, embedded at compile time.
pub const EXPECTED: &str = include_str!("expected.json");

/// An extension and its minimum version.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExtensionSpec {
    /// `pg_extension.extname`.
    pub name: String,
    /// Lowest acceptable `extversion` (dot-separated numbers).
    pub min_version: Option<String>,
}

/// A table in `public` and columns it must have.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TableSpec {
    /// Table name.
    pub name: String,
    /// Columns that must exist.
    #[serde(default)]
    pub columns: Vec<String>,
}

/// A named index.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IndexSpec {
    /// Index name.
    pub name: String,
    /// Its table.
    pub table: String,
    /// Access method (`btree`, `hnsw`, `ivfflat`, `gin`, ...).
    pub method: String,
}

/// A named constraint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConstraintSpec {
    /// Constraint name.
    pub name: String,
    /// Its table.
    pub table: String,
    /// `check`, `foreign_key`, `unique` or `primary_key`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// An enum type and its labels in order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EnumSpec {
    /// Type name.
    pub name: String,
    /// Labels, in order.
    pub values: Vec<String>,
}

/// A seed row: at least one row of `table` whose columns, read as text, equal `match`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RowSpec {
    /// Table.
    pub table: String,
    /// Column → expected value (compared as text).
    #[serde(rename = "match")]
    pub matches: Map<String, Value>,
}

/// Everything that must exist.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Extensions.
    #[serde(default)]
    pub extensions: Vec<ExtensionSpec>,
    /// Tables.
    #[serde(default)]
    pub tables: Vec<TableSpec>,
    /// Indexes.
    #[serde(default)]
    pub indexes: Vec<IndexSpec>,
    /// Constraints.
    #[serde(default)]
    pub constraints: Vec<ConstraintSpec>,
    /// Enum types.
    #[serde(default)]
    pub enums: Vec<EnumSpec>,
    /// Seed rows.
    #[serde(default)]
    pub rows: Vec<RowSpec>,
}

/// The embedded list does not parse (a defect caught by the unit tests).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("src/verify/expected.json is invalid: {0}")]
pub struct SpecError(pub String);

impl Spec {
    /// The embedded list.
    pub fn embedded() -> Result<Spec, SpecError> {
        serde_json::from_str(EXPECTED).map_err(|e| SpecError(e.to_string()))
    }

    /// The declared items that the migration scripts `scripts` create, so that
    /// `baseline` can check a part of the set: an item belongs to them when
    /// they mention its name (words folded as PostgreSQL folds them), a
    /// table's columns when they mention the column too, a seed row when
    /// one script mentions its table and inserts. The ownership is derived
    /// rather than declared in `expected.json`, so it cannot go stale when a
    /// migration is added; a name reused by a later migration (a column
    /// `metadata` added to another table) can only make the check stricter,
    /// never hide a missing object (`force` overrides).
    pub fn created_by(&self, scripts: &[&str]) -> Spec {
        let per_script: Vec<_> = scripts
            .iter()
            .map(|s| crate::migrate::sql::mentioned_names(s))
            .collect();
        let all: BTreeSet<&str> = per_script
            .iter()
            .flat_map(|n| n.iter().map(String::as_str))
            .collect();
        let has = |name: &str| all.contains(name);
        Spec {
            extensions: self
                .extensions
                .iter()
                .filter(|e| has(&e.name))
                .cloned()
                .collect(),
            tables: self
                .tables
                .iter()
                .filter(|t| has(&t.name))
                .map(|t| TableSpec {
                    name: t.name.clone(),
                    columns: t.columns.iter().filter(|c| has(c)).cloned().collect(),
                })
                .collect(),
            indexes: self
                .indexes
                .iter()
                .filter(|i| has(&i.name))
                .cloned()
                .collect(),
            constraints: self
                .constraints
                .iter()
                .filter(|c| has(&c.name))
                .cloned()
                .collect(),
            enums: self
                .enums
                .iter()
                .filter(|e| has(&e.name))
                .cloned()
                .collect(),
            rows: self
                .rows
                .iter()
                .filter(|r| {
                    per_script
                        .iter()
                        .any(|n| n.contains("insert") && n.contains(&r.table))
                })
                .cloned()
                .collect(),
        }
    }

    /// How many items it declares.
    pub fn len(&self) -> usize {
        self.extensions.len()
            + self.tables.len()
            + self.indexes.len()
            + self.constraints.len()
            + self.enums.len()
            + self.rows.len()
    }

    /// True when it declares nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How an item compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    /// As declared.
    Present,
    /// Not there.
    Missing,
    /// There, but not as declared (`detail` says how).
    Different,
}

/// One checked item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// `extension`, `table`, `index`, `constraint`, `enum` or `row`.
    pub kind: &'static str,
    /// What it is.
    pub name: String,
    /// How it compares.
    pub status: ItemStatus,
    /// What differs, or what is missing inside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The verification result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// True when every item is present and nothing drifted.
    pub ok: bool,
    /// Items present.
    pub present: usize,
    /// Items missing.
    pub missing: usize,
    /// Items different.
    pub different: usize,
    /// Every item.
    pub items: Vec<Item>,
    /// Every object that differs from what the migrations make
    /// (src/verify/catalog.json): added by hand, dropped or altered.
    pub drift: Vec<catalog::Drift>,
}

impl VerifyReport {
    fn new(items: Vec<Item>) -> Self {
        let count = |s| items.iter().filter(|i| i.status == s).count();
        VerifyReport {
            ok: items.iter().all(|i| i.status == ItemStatus::Present),
            present: count(ItemStatus::Present),
            missing: count(ItemStatus::Missing),
            different: count(ItemStatus::Different),
            items,
            drift: Vec::new(),
        }
    }

    /// Adds the drift found; the report is `ok` only without any.
    pub fn with_drift(mut self, drift: Vec<catalog::Drift>) -> Self {
        self.ok &= drift.is_empty();
        self.drift = drift;
        self
    }
}

/// What the catalog holds (schema `public`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Extension → version.
    pub extensions: BTreeMap<String, String>,
    /// Table → its columns.
    pub tables: BTreeMap<String, BTreeSet<String>>,
    /// Index → (table, method, valid).
    pub indexes: BTreeMap<String, (String, String, bool)>,
    /// Constraint → (table, kind, validated).
    pub constraints: BTreeMap<String, (String, String, bool)>,
    /// Enum → labels in order.
    pub enums: BTreeMap<String, Vec<String>>,
}

/// Compares two dot-separated versions numerically (`0.10.0` > `0.9.1`).
pub fn version_at_least(found: &str, min: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let (a, b) = (parts(found), parts(min));
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        if x != y {
            return x > y;
        }
    }
    true
}

fn item(kind: &'static str, name: String, status: ItemStatus, detail: Option<String>) -> Item {
    Item {
        kind,
        name,
        status,
        detail,
    }
}

/// Compares the declared items with the catalog (rows are checked apart).
pub fn compare(spec: &Spec, catalog: &Catalog) -> Vec<Item> {
    use ItemStatus::*;
    let mut items = Vec::new();
    for e in &spec.extensions {
        items.push(match (catalog.extensions.get(&e.name), &e.min_version) {
            (None, _) => item("extension", e.name.clone(), Missing, None),
            (Some(v), Some(min)) if !version_at_least(v, min) => item(
                "extension",
                e.name.clone(),
                Different,
                Some(format!("version {v}, need at least {min}")),
            ),
            (Some(_), _) => item("extension", e.name.clone(), Present, None),
        });
    }
    for t in &spec.tables {
        items.push(match catalog.tables.get(&t.name) {
            None => item("table", t.name.clone(), Missing, None),
            Some(cols) => {
                let absent: Vec<&str> = t
                    .columns
                    .iter()
                    .filter(|c| !cols.contains(*c))
                    .map(String::as_str)
                    .collect();
                if absent.is_empty() {
                    item("table", t.name.clone(), Present, None)
                } else {
                    item(
                        "table",
                        t.name.clone(),
                        Different,
                        Some(format!("missing column(s) {}", absent.join(", "))),
                    )
                }
            }
        });
    }
    for i in &spec.indexes {
        items.push(match catalog.indexes.get(&i.name) {
            None => item("index", i.name.clone(), Missing, None),
            Some((table, method, valid)) => {
                let mut diffs = Vec::new();
                if *table != i.table {
                    diffs.push(format!("on table {table}, expected {}", i.table));
                }
                if *method != i.method {
                    diffs.push(format!("method {method}, expected {}", i.method));
                }
                if !valid {
                    diffs.push("INVALID (a failed concurrent build): drop and recreate it".into());
                }
                if diffs.is_empty() {
                    item("index", i.name.clone(), Present, None)
                } else {
                    item("index", i.name.clone(), Different, Some(diffs.join("; ")))
                }
            }
        });
    }
    for c in &spec.constraints {
        items.push(match catalog.constraints.get(&c.name) {
            None => item("constraint", c.name.clone(), Missing, None),
            Some((table, kind, validated)) => {
                let mut diffs = Vec::new();
                if *table != c.table {
                    diffs.push(format!("on table {table}, expected {}", c.table));
                }
                if *kind != c.kind {
                    diffs.push(format!("a {kind} constraint, expected {}", c.kind));
                }
                if !validated {
                    diffs.push(
                        "NOT VALID: existing rows are not checked until VALIDATE CONSTRAINT".into(),
                    );
                }
                if diffs.is_empty() {
                    item("constraint", c.name.clone(), Present, None)
                } else {
                    item(
                        "constraint",
                        c.name.clone(),
                        Different,
                        Some(diffs.join("; ")),
                    )
                }
            }
        });
    }
    for e in &spec.enums {
        items.push(match catalog.enums.get(&e.name) {
            None => item("enum", e.name.clone(), Missing, None),
            Some(values) if *values == e.values => item("enum", e.name.clone(), Present, None),
            Some(values) => item(
                "enum",
                e.name.clone(),
                Different,
                Some(format!(
                    "values ({}), expected ({})",
                    values.join(", "),
                    e.values.join(", ")
                )),
            ),
        });
    }
    items
}

fn kind_of(contype: &str) -> String {
    match contype {
        "c" => "check",
        "f" => "foreign_key",
        "u" => "unique",
        "p" => "primary_key",
        "x" => "exclusion",
        other => other,
    }
    .into()
}

fn rows(messages: &[SimpleQueryMessage]) -> impl Iterator<Item = &tokio_postgres::SimpleQueryRow> {
    messages.iter().filter_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    })
}

fn text(row: &tokio_postgres::SimpleQueryRow, i: usize) -> String {
    row.get(i).unwrap_or_default().to_string()
}

/// The query that checks one seed row: a count of matching rows, or a
/// message when the table or a column does not exist.
pub fn row_query(spec: &RowSpec) -> String {
    let conditions: Vec<String> = spec
        .matches
        .iter()
        .map(|(col, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{}::text = {}", quote_ident(col), literal(&value))
        })
        .collect();
    let condition = if conditions.is_empty() {
        "true".into()
    } else {
        conditions.join(" AND ")
    };
    format!(
        "SELECT count(*) FROM public.{} WHERE {condition}",
        quote_ident(&spec.table)
    )
}

/// Reads the catalog and checks every item (seed rows included).
pub async fn verify(client: &Client, spec: &Spec) -> Result<VerifyReport, tokio_postgres::Error> {
    const CATALOG: [&str; 5] = [
        "SELECT extname, extversion FROM pg_catalog.pg_extension",
        "SELECT c.relname, a.attname FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')",
        "SELECT ic.relname, t.relname, am.amname, i.indisvalid FROM pg_catalog.pg_index i \
         JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid JOIN pg_catalog.pg_class t ON t.oid = i.indrelid \
         JOIN pg_catalog.pg_am am ON am.oid = ic.relam JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace \
         WHERE n.nspname = 'public'",
        "SELECT co.conname, t.relname, co.contype::text, co.convalidated FROM pg_catalog.pg_constraint co \
         JOIN pg_catalog.pg_class t ON t.oid = co.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = 'public'",
        "SELECT t.typname, e.enumlabel FROM pg_catalog.pg_enum e JOIN pg_catalog.pg_type t ON t.oid = e.enumtypid \
         JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public' \
         ORDER BY t.typname, e.enumsortorder",
    ];
    let queries: Vec<String> = CATALOG.iter().map(|q| q.to_string()).collect();
    let mut results = pipeline(client, &queries).await.into_iter();
    let mut next = || {
        results
            .next()
            .map(|(r, _)| r)
            .unwrap_or_else(|| Ok(Vec::new()))
    };
    let (extensions, tables, indexes, constraints, enums) =
        (next()?, next()?, next()?, next()?, next()?);
    let mut catalog = Catalog::default();
    for r in rows(&extensions) {
        catalog.extensions.insert(text(r, 0), text(r, 1));
    }
    for r in rows(&tables) {
        let columns = catalog.tables.entry(text(r, 0)).or_default();
        if let Some(col) = r.get(1) {
            columns.insert(col.to_string());
        }
    }
    for r in rows(&indexes) {
        catalog
            .indexes
            .insert(text(r, 0), (text(r, 1), text(r, 2), text(r, 3) == "t"));
    }
    for r in rows(&constraints) {
        catalog.constraints.insert(
            text(r, 0),
            (text(r, 1), kind_of(&text(r, 2)), text(r, 3) == "t"),
        );
    }
    for r in rows(&enums) {
        catalog
            .enums
            .entry(text(r, 0))
            .or_default()
            .push(text(r, 1));
    }
    let mut items = compare(spec, &catalog);

    // Seed rows: one pipelined count each, only where the table exists.
    let checkable: Vec<&RowSpec> = spec
        .rows
        .iter()
        .filter(|r| catalog.tables.contains_key(&r.table))
        .collect();
    let counts = pipeline(
        client,
        &checkable.iter().map(|r| row_query(r)).collect::<Vec<_>>(),
    )
    .await;
    let mut counts = checkable.iter().zip(counts);
    for row in &spec.rows {
        let name = format!(
            "{} ({})",
            row.table,
            row.matches
                .iter()
                .map(|(k, v)| format!(
                    "{k}={}",
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !catalog.tables.contains_key(&row.table) {
            items.push(item(
                "row",
                name,
                ItemStatus::Missing,
                Some(format!("table {} does not exist", row.table)),
            ));
            continue;
        }
        let status = match counts.next() {
            Some((_, (Ok(messages), _))) => match rows(&messages).next().and_then(|r| r.get(0)) {
                Some("0") | None => (ItemStatus::Missing, None),
                Some(_) => (ItemStatus::Present, None),
            },
            Some((_, (Err(e), _))) => (
                ItemStatus::Different,
                Some(ServerError::from_pg(&e).to_string()),
            ),
            None => (ItemStatus::Missing, None),
        };
        items.push(item("row", name, status.0, status.1));
    }
    Ok(VerifyReport::new(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_embedded_list_parses_and_is_not_empty() {
        let spec = Spec::embedded().unwrap();
        assert!(!spec.extensions.is_empty());
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("0.6.2", "0.5.0"));
        assert!(version_at_least("0.10.0", "0.9.1"));
        assert!(version_at_least("1.0", "1.0.0"));
        assert!(!version_at_least("0.4.4", "0.5.0"));
    }

    fn spec() -> Spec {
        serde_json::from_value(json!({
            "extensions": [{"name": "vector", "min_version": "0.5.0"}],
            "tables": [{"name": "queries", "columns": ["id", "confidence_score"]}],
            "indexes": [{"name": "idx_hnsw", "table": "emb", "method": "hnsw"}],
            "constraints": [{"name": "chk_weight", "table": "edges", "type": "check"}],
            "enums": [{"name": "license_type", "values": ["cc_by", "proprietary"]}],
            "rows": [{"table": "tenants", "match": {"domain": "dev.educore.local"}}]
        }))
        .unwrap()
    }

    #[test]
    fn everything_present_is_reported_present() {
        let mut c = Catalog::default();
        c.extensions.insert("vector".into(), "0.6.2".into());
        c.tables.insert(
            "queries".into(),
            ["id", "confidence_score", "x"].map(String::from).into(),
        );
        c.indexes
            .insert("idx_hnsw".into(), ("emb".into(), "hnsw".into(), true));
        c.constraints
            .insert("chk_weight".into(), ("edges".into(), "check".into(), true));
        c.enums.insert(
            "license_type".into(),
            vec!["cc_by".into(), "proprietary".into()],
        );
        let items = compare(&spec(), &c);
        assert_eq!(items.len(), 5);
        assert!(
            items.iter().all(|i| i.status == ItemStatus::Present),
            "{items:?}"
        );
    }

    #[test]
    fn missing_and_different_items_say_what_differs() {
        let mut c = Catalog::default();
        c.extensions.insert("vector".into(), "0.4.0".into());
        c.tables
            .insert("queries".into(), ["id"].map(String::from).into());
        c.indexes
            .insert("idx_hnsw".into(), ("emb".into(), "ivfflat".into(), false));
        c.constraints
            .insert("chk_weight".into(), ("edges".into(), "check".into(), false));
        let items = compare(&spec(), &c);
        let detail = |k: &str| {
            items
                .iter()
                .find(|i| i.kind == k)
                .and_then(|i| i.detail.clone())
                .unwrap_or_default()
        };
        assert!(detail("extension").contains("version 0.4.0, need at least 0.5.0"));
        assert!(detail("table").contains("missing column(s) confidence_score"));
        assert!(
            detail("index").contains("method ivfflat, expected hnsw")
                && detail("index").contains("INVALID")
        );
        assert!(detail("constraint").contains("NOT VALID"));
        assert_eq!(
            items.iter().find(|i| i.kind == "enum").unwrap().status,
            ItemStatus::Missing
        );
        let report = VerifyReport::new(items);
        assert!(!report.ok);
        assert_eq!(
            (report.present, report.missing, report.different),
            (0, 1, 4)
        );
    }

    #[test]
    fn row_checks_quote_names_and_values() {
        let q = row_query(&RowSpec {
            table: "plugin_registry".into(),
            matches: json!({"name": "it's", "enabled": true})
                .as_object()
                .cloned()
                .unwrap(),
        });
        assert_eq!(
            q,
            "SELECT count(*) FROM public.\"plugin_registry\" WHERE \"enabled\"::text = 'true' AND \"name\"::text = 'it''s'"
        );
    }

    #[test]
    fn every_declared_item_belongs_to_a_migration_and_a_prefix_owns_only_its_own() {
        let spec = Spec::embedded().unwrap();
        let set = crate::migrate::MigrationSet::embedded().unwrap();
        let scripts: Vec<&str> = set.migrations().iter().map(|m| m.sql()).collect();
        let owned = spec.created_by(&scripts);
        assert_eq!(
            owned, spec,
            "an item no migration creates cannot be baselined"
        );
        let first = spec.created_by(&scripts[..1]);
        assert_eq!(first.extensions.len(), 1, "{first:?}");
        assert!(first.tables.is_empty(), "{first:?}");
        assert!(first.len() < spec.len());
    }

    #[test]
    fn columns_and_rows_belong_to_the_scripts_that_name_them() {
        let spec: Spec = serde_json::from_value(json!({
            "tables": [{"name": "t", "columns": ["a", "late"]}],
            "rows": [{"table": "t", "match": {"a": "1"}}]
        }))
        .unwrap();
        let early = spec.created_by(&["CREATE TABLE t (a int)"]);
        assert_eq!(early.tables[0].columns, vec!["a".to_string()]);
        assert!(early.rows.is_empty());
        let both = spec.created_by(&[
            "CREATE TABLE t (a int)",
            "ALTER TABLE t ADD late int; INSERT INTO t VALUES (1)",
        ]);
        assert_eq!(both, spec);
    }
}
