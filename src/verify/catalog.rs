//! Drift: the full catalog the embedded migrations produce, compared with
//! the live database object by object.
//!
//! `make catalog` applies the migrations to an empty database, runs the
//! users step's group-role grants for every template, captures the catalog
//! with [`capture`] and writes it to `catalog.json` (embedded here); a test
//! rebuilds it from a fresh database and fails when the checked-in file is
//! out of date. `verify` then reports every object that is added, dropped or
//! altered on the live database ([`diff`], pure).
//!
//! The form is deterministic: kind → qualified name → a definition string,
//! sorted, without OIDs. Names that vary per deployment are normalized: the
//! managed group roles `<prefix>_<template>` become `<managed>_<template>`.
//! Extension versions are left out (they follow the server; `expected.json`
//! holds the minimum), function bodies are compared by digest.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::db::pipeline;
use crate::pg::literal;

/// The catalog the embedded migrations produce (`make catalog` writes it).
pub const CATALOG: &str = include_str!("catalog.json");

/// The name managed group roles get in the catalog, in place of their prefix.
pub const MANAGED: &str = "<managed>";

/// Kind (`column`, `index`, ...) → qualified name → definition.
pub type Snapshot = BTreeMap<String, BTreeMap<String, String>>;

/// The embedded catalog, parsed (a defect caught by the unit tests if not).
pub fn embedded() -> Result<Snapshot, serde_json::Error> {
    serde_json::from_str(CATALOG)
}

/// What a live object is, compared with the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// On the database, not made by the migrations (added by hand).
    Added,
    /// Made by the migrations, not on the database.
    Dropped,
    /// On both, with another definition.
    Altered,
}

/// One object that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// `table`, `column`, `constraint`, `index`, `enum`, `extension`,
    /// `function`, `trigger`, `view`, `sequence` or `grant`.
    pub kind: String,
    /// Qualified name.
    pub name: String,
    /// How it differs.
    pub change: Change,
    /// What the migrations make (dropped, altered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// What the database holds (added, altered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
}

/// A live catalog and the managed group roles that exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The objects.
    pub snapshot: Snapshot,
    /// Normalized names (`<managed>_readwrite`, ...) of the group roles present.
    pub groups: BTreeSet<String>,
}

/// Compares the catalog with a live one. The grants of a managed group role
/// that does not exist on the database (its template is not in use) are not
/// expected.
pub fn diff(expected: &Snapshot, live: &Captured) -> Vec<Drift> {
    let empty = BTreeMap::new();
    let kinds: BTreeSet<&String> = expected.keys().chain(live.snapshot.keys()).collect();
    let mut out = Vec::new();
    for kind in kinds {
        let want = expected.get(kind).unwrap_or(&empty);
        let have = live.snapshot.get(kind).unwrap_or(&empty);
        let names: BTreeSet<&String> = want.keys().chain(have.keys()).collect();
        for name in names {
            let change = match (want.get(name), have.get(name)) {
                (Some(w), Some(h)) if w == h => continue,
                (Some(_), Some(_)) => Change::Altered,
                (Some(_), None)
                    if kind == "grant"
                        && !live
                            .groups
                            .iter()
                            .any(|g| name.starts_with(&format!("{g} "))) =>
                {
                    continue;
                }
                (Some(_), None) => Change::Dropped,
                (None, Some(_)) => Change::Added,
                (None, None) => continue,
            };
            out.push(Drift {
                kind: kind.clone(),
                name: name.clone(),
                change,
                expected: want.get(name).cloned(),
                found: have.get(name).cloned(),
            });
        }
    }
    out
}

/// The statements [`capture`] runs: each returns (kind, name, definition).
/// `prefix` is the managed group roles' prefix.
pub fn queries(prefix: &str) -> Vec<String> {
    let ours = "n.nspname = 'public'";
    let not_extension = |oid: &str, class: &str| {
        format!(
            "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.objid = {oid} \
             AND d.classid = 'pg_catalog.{class}'::regclass AND d.deptype = 'e')"
        )
    };
    let managed = format!(
        "regexp_replace(r.rolname, '^' || {} || '_', '{MANAGED}_')",
        literal(&regex_escape(prefix))
    );
    let managed_role = format!(
        "r.rolname IN ({}, {}, {})",
        literal(&format!("{prefix}_readwrite")),
        literal(&format!("{prefix}_readonly")),
        literal(&format!("{prefix}_tablecreator"))
    );
    vec![
        "SELECT 'extension', e.extname, 'installed' FROM pg_catalog.pg_extension e WHERE e.extname <> 'plpgsql'"
            .into(),
        format!(
            "SELECT 'table', n.nspname || '.' || c.relname, \
             CASE c.relpersistence WHEN 'u' THEN 'unlogged ' ELSE '' END || \
             CASE c.relkind WHEN 'p' THEN 'partitioned table' ELSE 'table' END \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND {ours} AND {}",
            not_extension("c.oid", "pg_class")
        ),
        format!(
            "SELECT 'column', n.nspname || '.' || c.relname || '.' || a.attname, \
             pg_catalog.format_type(a.atttypid, a.atttypmod) \
             || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END \
             || CASE WHEN a.attidentity <> '' THEN ' GENERATED ' || CASE a.attidentity WHEN 'a' THEN 'ALWAYS' ELSE 'BY DEFAULT' END || ' AS IDENTITY' ELSE '' END \
             || CASE WHEN a.attgenerated = 's' THEN ' GENERATED ALWAYS AS (' || pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) || ') STORED' \
                     WHEN ad.adbin IS NOT NULL THEN ' DEFAULT ' || pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) ELSE '' END \
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
             WHERE c.relkind IN ('r', 'p', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped AND {ours} AND {}",
            not_extension("c.oid", "pg_class")
        ),
        format!(
            "SELECT 'constraint', n.nspname || '.' || c.relname || '.' || co.conname, \
             pg_catalog.pg_get_constraintdef(co.oid) \
             FROM pg_catalog.pg_constraint co JOIN pg_catalog.pg_class c ON c.oid = co.conrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {ours}"
        ),
        format!(
            "SELECT 'index', n.nspname || '.' || ic.relname, \
             pg_catalog.pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid THEN '' ELSE ' (INVALID)' END \
             FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace WHERE {ours} AND {}",
            not_extension("i.indrelid", "pg_class")
        ),
        format!(
            "SELECT 'enum', n.nspname || '.' || t.typname, \
             string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder) \
             FROM pg_catalog.pg_enum e JOIN pg_catalog.pg_type t ON t.oid = e.enumtypid \
             JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE {ours} GROUP BY 2"
        ),
        format!(
            "SELECT 'function', n.nspname || '.' || p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')', \
             CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'returns ' || pg_catalog.pg_get_function_result(p.oid) END \
             || ' language ' || l.lanname || ' ' || CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable' ELSE 'volatile' END \
             || CASE WHEN p.prosecdef THEN ' security definer' ELSE '' END || ' body md5 ' || md5(p.prosrc) \
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
             JOIN pg_catalog.pg_language l ON l.oid = p.prolang WHERE {ours} AND {}",
            not_extension("p.oid", "pg_proc")
        ),
        format!(
            "SELECT 'trigger', n.nspname || '.' || c.relname || '.' || t.tgname, pg_catalog.pg_get_triggerdef(t.oid) \
             FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal AND {ours}"
        ),
        format!(
            "SELECT CASE c.relkind WHEN 'v' THEN 'view' ELSE 'materialized view' END, n.nspname || '.' || c.relname, \
             'body md5 ' || md5(pg_catalog.pg_get_viewdef(c.oid)) \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('v', 'm') AND {ours} AND {}",
            not_extension("c.oid", "pg_class")
        ),
        format!(
            "SELECT 'sequence', s.schemaname || '.' || s.sequencename, \
             s.data_type::text || ' increment ' || s.increment_by || CASE WHEN s.cycle THEN ' cycle' ELSE '' END \
             FROM pg_catalog.pg_sequences s WHERE s.schemaname = 'public'"
        ),
        // Grants of the managed group roles: on the database, the schema,
        // the relations and as default privileges.
        format!(
            "SELECT 'grant', {managed} || ' ' || o.what, string_agg(o.privilege, ', ' ORDER BY o.privilege) \
             FROM ( \
               SELECT 'DATABASE' AS what, a.grantee, a.privilege_type AS privilege \
                 FROM pg_catalog.pg_database d, aclexplode(d.datacl) a WHERE d.datname = current_database() \
               UNION ALL SELECT 'SCHEMA ' || n.nspname, a.grantee, a.privilege_type \
                 FROM pg_catalog.pg_namespace n, aclexplode(n.nspacl) a WHERE {ours} \
               UNION ALL SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE ' ELSE 'TABLE ' END || n.nspname || '.' || c.relname, \
                 a.grantee, a.privilege_type \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a \
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND {ours} \
               UNION ALL SELECT 'DEFAULT ' || CASE da.defaclobjtype WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES' \
                 WHEN 'f' THEN 'FUNCTIONS' WHEN 'T' THEN 'TYPES' ELSE 'SCHEMAS' END || ' IN ' || coalesce(n.nspname, '*'), \
                 a.grantee, a.privilege_type \
                 FROM pg_catalog.pg_default_acl da LEFT JOIN pg_catalog.pg_namespace n ON n.oid = da.defaclnamespace, \
                 aclexplode(da.defaclacl) a WHERE n.nspname IS NULL OR {ours} \
             ) o JOIN pg_catalog.pg_roles r ON r.oid = o.grantee WHERE {managed_role} GROUP BY 2"
        ),
        format!(
            "SELECT 'role', {managed}, '' FROM pg_catalog.pg_roles r WHERE {managed_role}"
        ),
    ]
}

/// Escapes the characters a POSIX regular expression gives a meaning.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reads the live catalog (one pipelined round trip).
pub async fn capture(client: &Client, prefix: &str) -> Result<Captured, tokio_postgres::Error> {
    let mut captured = Captured::default();
    for (result, _) in pipeline(client, &queries(prefix)).await {
        for message in result? {
            if let SimpleQueryMessage::Row(row) = message {
                let field = |i: usize| row.get(i).unwrap_or_default().to_string();
                if field(0) == "role" {
                    captured.groups.insert(field(1));
                } else {
                    captured
                        .snapshot
                        .entry(field(0))
                        .or_default()
                        .insert(field(1), field(2));
                }
            }
        }
    }
    Ok(captured)
}

/// Why the reference catalog could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A migration failed (the database was not empty, or a migration is broken).
    #[error("applying the embedded migrations to build the catalog: {0}")]
    Migrate(#[from] crate::migrate::MigrateError),
    /// A query failed.
    #[error("building the catalog ({step}): {error}")]
    Database {
        /// What was being done.
        step: &'static str,
        /// The server's error.
        error: crate::pg::ServerError,
    },
}

/// Builds the reference catalog on an empty database: applies `set`, gives
/// every template's group role (`<prefix>_<template>`, created if missing)
/// its grants as the users step does, and captures the result. The caller
/// drops the database and the roles afterwards.
pub async fn reference(
    client: &Client,
    set: &crate::migrate::MigrationSet,
    prefix: &str,
    dbname: &str,
    owner: &str,
) -> Result<Snapshot, CatalogError> {
    use crate::users::RoleTemplate;
    use crate::users::roles::{RoleContext, group_role_sql};
    crate::migrate::Migrator::new(client, crate::migrate::RunOptions::default())
        .migrate(set)
        .await?;
    let ctx = RoleContext {
        prefix,
        dbname,
        schema: "public",
        owner,
    };
    let database = |step| {
        move |e: tokio_postgres::Error| CatalogError::Database {
            step,
            error: crate::pg::ServerError::from_pg(&e),
        }
    };
    for template in RoleTemplate::ALL {
        let sql = group_role_sql(&ctx, template, None).join(";\n");
        client
            .batch_execute(&format!("BEGIN;\n{sql};\nCOMMIT"))
            .await
            .map_err(database("granting the group roles' privileges"))?;
    }
    Ok(capture(client, prefix)
        .await
        .map_err(database("reading the catalog"))?
        .snapshot)
}

/// The catalog as checked in: pretty JSON, sorted, with a final newline.
pub fn to_file(snapshot: &Snapshot) -> String {
    let mut text = serde_json::to_string_pretty(snapshot).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(entries: &[(&str, &str, &str)]) -> Snapshot {
        let mut s = Snapshot::new();
        for (k, n, d) in entries {
            s.entry(k.to_string())
                .or_default()
                .insert(n.to_string(), d.to_string());
        }
        s
    }

    #[test]
    fn the_embedded_catalog_parses_and_has_the_schema() {
        let c = embedded().unwrap();
        assert!(c["table"].contains_key("public.tenants"));
        assert!(c["index"].values().any(|d| d.contains("USING hnsw")));
        assert!(
            c["grant"]
                .keys()
                .any(|k| k.starts_with("<managed>_readwrite "))
        );
    }

    #[test]
    fn added_dropped_and_altered_objects_are_each_reported() {
        let expected = snap(&[
            ("column", "public.t.a", "integer"),
            ("column", "public.t.b", "text DEFAULT 'x'::text"),
            (
                "index",
                "public.t_a",
                "CREATE INDEX t_a ON public.t USING btree (a)",
            ),
            ("grant", "<managed>_readonly TABLE public.t", "SELECT"),
            (
                "grant",
                "<managed>_readwrite TABLE public.t",
                "DELETE, INSERT, SELECT, UPDATE",
            ),
        ]);
        let live = Captured {
            snapshot: snap(&[
                ("column", "public.t.a", "integer"),
                ("column", "public.t.b", "text DEFAULT 'y'::text"),
                ("column", "public.t.c", "text"),
                ("grant", "<managed>_readwrite TABLE public.t", "SELECT"),
            ]),
            groups: ["<managed>_readwrite".to_string()].into(),
        };
        let d = diff(&expected, &live);
        let found: Vec<(&str, &str, Change)> = d
            .iter()
            .map(|x| (x.kind.as_str(), x.name.as_str(), x.change))
            .collect();
        assert_eq!(
            found,
            vec![
                ("column", "public.t.b", Change::Altered),
                ("column", "public.t.c", Change::Added),
                (
                    "grant",
                    "<managed>_readwrite TABLE public.t",
                    Change::Altered
                ),
                ("index", "public.t_a", Change::Dropped),
            ],
            "readonly's grants are not expected: that group does not exist"
        );
        assert_eq!(d[0].expected.as_deref(), Some("text DEFAULT 'x'::text"));
        assert_eq!(d[0].found.as_deref(), Some("text DEFAULT 'y'::text"));
        assert!(
            diff(
                &expected,
                &Captured {
                    snapshot: expected.clone(),
                    groups: live.groups.clone()
                }
            )
            .is_empty()
        );
    }

    #[test]
    fn prefixes_are_escaped_for_the_regular_expression() {
        assert_eq!(regex_escape("app.x"), "app\\.x");
        assert!(queries("a'b").iter().all(|q| !q.contains("a'b_")));
    }
}
