-- The HNSW index for similarity search on vector_embeddings (cosine distance,
-- the `<=>` operator), built without blocking writes: CREATE INDEX CONCURRENTLY,
-- so outside a transaction, each statement autocommitted on its own.
--
-- A failed or cancelled concurrent build leaves an INVALID index behind (and
-- the runner then stops: it refuses to record a migration while one exists).
-- The next run starts this file again from the top: the DROP removes the
-- leftover, then the build runs again. IF NOT EXISTS on the CREATE can never
-- skip over an invalid leftover here, because the DROP has just run.
--
-- An HNSW build over many rows is slow, hence the statement timeout: above the
-- runner's default, at most the 15 minutes a Lambda invocation can run (give
-- the function a timeout to match before this runs over a large table).
--
-- db-setup: no-transaction
-- db-setup: statement-timeout=15min
--
-- squawk-disable-assume-in-transaction
-- squawk-ignore-file require-lock-timeout, require-statement-timeout -- the runner sets both (this file's statement-timeout included)

DROP INDEX CONCURRENTLY IF EXISTS idx_vector_embeddings_embedding_hnsw;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_vector_embeddings_embedding_hnsw
  ON vector_embeddings
  USING hnsw (embedding vector_cosine_ops)
  WITH (m = 16, ef_construction = 64);
