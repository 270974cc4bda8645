-- The design's check constraints (seeds/000, step 4), with its names.
--
-- Added NOT VALID: PostgreSQL then enforces them on every row written from now
-- on, but does not scan the rows already there while holding this ALTER's
-- ACCESS EXCLUSIVE lock. Migration 005 validates them in a transaction of
-- their own, under a lock that lets reads and writes go on.
--
-- squawk-ignore-file require-lock-timeout, require-statement-timeout -- the runner sets both before every migration

ALTER TABLE queries
  ADD CONSTRAINT chk_confidence_score
  CHECK (confidence_score >= 0 AND confidence_score <= 1) NOT VALID;

ALTER TABLE queries
  ADD CONSTRAINT chk_processing_time
  CHECK (processing_time_ms >= 0) NOT VALID;

ALTER TABLE vector_embeddings
  ADD CONSTRAINT chk_chunk_index
  CHECK (chunk_index >= 0) NOT VALID;

ALTER TABLE knowledge_graph_edges
  ADD CONSTRAINT chk_weight
  CHECK (weight IS NULL OR (weight >= 0 AND weight <= 1)) NOT VALID;
