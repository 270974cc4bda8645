-- Embeddings of the questions users ask (queries.query_text), for finding
-- similar past questions: an answer cache and analytics (pattern: seeds/003,
-- vector tables with IVFFlat indexes).
--
-- IVFFlat rather than HNSW here: this table grows with every question, and an
-- IVFFlat index builds faster and smaller; approximate recall is enough for
-- "similar questions". Built in this transaction because the table is new and
-- empty (instant). IVFFlat picks its `lists` centroids from the rows present at
-- build time, so once the table holds data, rebuild it with REINDEX INDEX
-- CONCURRENTLY in a later no-transaction migration (lists = rows / 1000 up to
-- 1M rows, sqrt(rows) beyond), and search with SET ivfflat.probes (default 1).
--
-- squawk-ignore-file require-lock-timeout, require-statement-timeout -- the runner sets both before every migration

CREATE TABLE query_embeddings (
  id         uuid         NOT NULL DEFAULT gen_random_uuid(),
  tenant_id  uuid         NOT NULL,
  query_id   uuid         NOT NULL,
  -- The embedding model (1536 dimensions, as vector_embeddings).
  model      text         NOT NULL,
  embedding  vector(1536) NOT NULL,
  created_at timestamptz  NOT NULL DEFAULT now(),
  CONSTRAINT query_embeddings_pkey PRIMARY KEY (id),
  CONSTRAINT uq_query_embeddings_query_model UNIQUE (query_id, model),
  CONSTRAINT fk_query_embeddings_tenant FOREIGN KEY (tenant_id)
    REFERENCES tenants (id) ON DELETE CASCADE,
  -- Queries are purged after the tenant's retention period; their embeddings go with them.
  CONSTRAINT fk_query_embeddings_query FOREIGN KEY (query_id)
    REFERENCES queries (id) ON DELETE CASCADE
);

CREATE INDEX idx_query_embeddings_tenant ON query_embeddings (tenant_id);

CREATE INDEX idx_query_embeddings_embedding_ivfflat
  ON query_embeddings
  USING ivfflat (embedding vector_cosine_ops)
  WITH (lists = 100);
