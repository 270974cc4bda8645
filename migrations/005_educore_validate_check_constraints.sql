-- Validates the check constraints added NOT VALID by 004: each VALIDATE scans
-- its table under SHARE UPDATE EXCLUSIVE, which does not block reads or writes.
-- Outside a transaction so that 004's ALTERs (and their ACCESS EXCLUSIVE
-- locks) are committed before the scans start, and each VALIDATE commits alone.
--
-- Re-runnable as is: validating a constraint that is already valid does nothing.
--
-- db-setup: no-transaction
-- db-setup: statement-timeout=15min
--
-- squawk-disable-assume-in-transaction
-- squawk-ignore-file require-lock-timeout, require-statement-timeout -- the runner sets both (this file's statement-timeout included)
-- squawk-ignore-file prefer-robust-stmts -- VALIDATE CONSTRAINT is idempotent, so a retry after a partial run is safe

ALTER TABLE queries VALIDATE CONSTRAINT chk_confidence_score;
ALTER TABLE queries VALIDATE CONSTRAINT chk_processing_time;
ALTER TABLE vector_embeddings VALIDATE CONSTRAINT chk_chunk_index;
ALTER TABLE knowledge_graph_edges VALIDATE CONSTRAINT chk_weight;
