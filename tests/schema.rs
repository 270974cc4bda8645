//! The application schema (migrations/): reached through the Lambda path,
//! verified item by item, its constraints enforced, its vector indexes used.

mod common;

use common::lambda::{Deployment, StackSpec};
use common::{TestDb, db_message};
use db_setup::migrate::{MigrationSet, Migrator, RunOptions};
use db_setup::verify::{self, ItemStatus, Spec};
use serde_json::json;

async fn migrated(hint: &str) -> TestDb {
    let db = TestDb::new(hint).await;
    let conn = db.connect().await;
    Migrator::new(conn.client(), RunOptions::default())
        .migrate(&MigrationSet::embedded().unwrap())
        .await
        .unwrap();
    db
}

fn declared_items(spec: &Spec) -> usize {
    spec.extensions.len()
        + spec.tables.len()
        + spec.indexes.len()
        + spec.constraints.len()
        + spec.enums.len()
        + spec.rows.len()
}

#[tokio::test]
async fn a_fresh_database_reaches_the_full_schema_through_the_lambda_and_verifies() {
    let d = Deployment::new(StackSpec::new("schema_full")).await;
    let set = MigrationSet::embedded().unwrap();
    let (_, put) = d
        .request("Create", json!({"MigrationsHash": set.hash()}))
        .await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert_eq!(
        put.body["Data"]["Applied"],
        set.migrations().len().to_string()
    );

    let report = d.invoke(&json!({"action": "verify"})).await;
    let r = report.response();
    let expected = declared_items(&Spec::embedded().unwrap());
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["present"], expected);
    assert_eq!(
        (r["missing"].as_u64(), r["different"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(
        expected > 50,
        "the list covers the schema ({expected} items)"
    );

    // A second run applies nothing.
    let (_, put) = d
        .request("Update", json!({"MigrationsHash": set.hash()}))
        .await;
    assert_eq!(put.body["Data"]["Applied"], "0");
    assert_eq!(
        put.body["Data"]["AlreadyApplied"],
        set.migrations().len().to_string()
    );
}

#[tokio::test]
async fn constraints_reject_bad_rows_by_name() {
    let db = migrated("schema_checks").await;
    let c = db.connect().await;
    let tenant = db
        .query("SELECT id FROM tenants WHERE domain = 'dev.educore.local'")
        .await;
    assert_eq!(tenant.len(), 1, "the seeded default tenant");
    let t = &tenant[0];
    let vector = "array_fill(0.1::real, ARRAY[1536])::vector";
    // Valid rows go in: the checks below fail because of the one bad value only.
    c.client()
        .simple_query(&format!(
            "INSERT INTO knowledge_graph_nodes (tenant_id, node_id, node_type) VALUES ('{t}', 'a', 'course'), ('{t}', 'b', 'skill');
             INSERT INTO knowledge_graph_edges (tenant_id, source_node_id, target_node_id, edge_type, weight) VALUES ('{t}', 'a', 'b', 'teaches', 0.8);
             INSERT INTO queries (tenant_id, user_id, query_text, answer, confidence_score, processing_time_ms, model_version)
               VALUES ('{t}', 'u1', 'q', 'a', 0.9, 12, 'm1');
             INSERT INTO vector_embeddings (tenant_id, content_id, content_type, embedding, content_text, chunk_index)
               VALUES ('{t}', 'c1', 'lesson', {vector}, 'text', 0)"
        ))
        .await
        .unwrap();
    let cases = [
        (
            format!(
                "INSERT INTO queries (tenant_id, user_id, query_text, answer, confidence_score, processing_time_ms, model_version) VALUES ('{t}', 'u1', 'q', 'a', 1.5, 12, 'm1')"
            ),
            "chk_confidence_score",
        ),
        (
            format!(
                "INSERT INTO queries (tenant_id, user_id, query_text, answer, confidence_score, processing_time_ms, model_version) VALUES ('{t}', 'u1', 'q', 'a', 0.5, -1, 'm1')"
            ),
            "chk_processing_time",
        ),
        (
            format!(
                "INSERT INTO knowledge_graph_edges (tenant_id, source_node_id, target_node_id, edge_type, weight) VALUES ('{t}', 'b', 'a', 'requires', -1)"
            ),
            "chk_weight",
        ),
        (
            format!(
                "INSERT INTO vector_embeddings (tenant_id, content_id, content_type, embedding, content_text, chunk_index) VALUES ('{t}', 'c2', 'lesson', {vector}, 'text', -1)"
            ),
            "chk_chunk_index",
        ),
    ];
    for (sql, constraint) in cases {
        let err = c.client().simple_query(&sql).await.unwrap_err();
        let db_err = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{constraint}: {err}"));
        assert_eq!(
            db_err.code().code(),
            "23514",
            "{constraint}: {}",
            db_message(&err)
        );
        assert_eq!(
            db_err.constraint(),
            Some(constraint),
            "{}",
            db_message(&err)
        );
        assert!(db_err.message().contains(constraint));
    }
    // NULL weight is allowed.
    c.client()
        .simple_query(&format!("INSERT INTO knowledge_graph_edges (tenant_id, source_node_id, target_node_id, edge_type, weight) VALUES ('{t}', 'b', 'a', 'related', NULL)"))
        .await
        .unwrap();
}

#[tokio::test]
async fn similarity_queries_use_the_hnsw_and_ivfflat_indexes() {
    let db = migrated("schema_vectors").await;
    let t = db.query("SELECT id FROM tenants LIMIT 1").await.remove(0);
    db.query(&format!(
        "INSERT INTO vector_embeddings (tenant_id, content_id, content_type, embedding, content_text, chunk_index)
         SELECT '{t}', 'doc' || g, 'lesson', array_fill((g % 7)::real / 7, ARRAY[1536])::vector, 'chunk ' || g, 0
         FROM generate_series(1, 40) g"
    ))
    .await;
    // On 40 rows the planner prefers a sequential scan; with it disabled, the
    // plan shows the index a large table gets (docs/schema.md).
    let plan = db
        .query(
            "SET enable_seqscan = off; EXPLAIN SELECT content_id FROM vector_embeddings \
             ORDER BY embedding <=> array_fill(0.5::real, ARRAY[1536])::vector LIMIT 5",
        )
        .await
        .join("\n");
    assert!(
        plan.contains("Index Scan using idx_vector_embeddings_embedding_hnsw"),
        "{plan}"
    );

    let ivf_columns = db
        .query("SELECT a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE c.relname = 'idx_query_embeddings_embedding_ivfflat'")
        .await;
    assert_eq!(ivf_columns, ["embedding"]);
    let plan = db
        .query(
            "SET enable_seqscan = off; EXPLAIN SELECT id FROM query_embeddings \
             ORDER BY embedding <=> array_fill(0.5::real, ARRAY[1536])::vector LIMIT 5",
        )
        .await
        .join("\n");
    assert!(
        plan.contains("idx_query_embeddings_embedding_ivfflat"),
        "{plan}"
    );
}

#[tokio::test]
async fn verify_reports_what_is_missing_or_different() {
    let db = migrated("schema_damage").await;
    db.query("DROP INDEX idx_vector_embeddings_embedding_hnsw")
        .await;
    db.query("ALTER TABLE queries DROP CONSTRAINT chk_confidence_score")
        .await;
    db.query("ALTER TABLE queries ADD CONSTRAINT chk_confidence_score CHECK (confidence_score >= 0 AND confidence_score <= 1) NOT VALID").await;
    db.query("DELETE FROM plugin_registry").await;
    let c = db.connect().await;
    let report = verify::verify(c.client(), &Spec::embedded().unwrap())
        .await
        .unwrap();
    assert!(!report.ok);
    let status = |kind: &str, name: &str| {
        report
            .items
            .iter()
            .find(|i| i.kind == kind && i.name.starts_with(name))
            .map(|i| (i.status, i.detail.clone().unwrap_or_default()))
            .unwrap_or_else(|| panic!("no {kind} {name} in the report"))
    };
    assert_eq!(
        status("index", "idx_vector_embeddings_embedding_hnsw").0,
        ItemStatus::Missing
    );
    let (s, detail) = status("constraint", "chk_confidence_score");
    assert_eq!(s, ItemStatus::Different);
    assert!(detail.contains("NOT VALID"), "{detail}");
    assert_eq!(status("row", "plugin_registry").0, ItemStatus::Missing);
    assert_eq!(
        report.missing,
        3,
        "{:?}",
        report
            .items
            .iter()
            .filter(|i| i.status != ItemStatus::Present)
            .collect::<Vec<_>>()
    );
    assert_eq!(report.different, 1);
}
