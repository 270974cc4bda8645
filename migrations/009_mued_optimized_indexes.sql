-- The optimised indexes of the RAG tables (design: seeds/002, its 0003
-- migration), added the way one adds indexes to tables that are in use:
-- CREATE INDEX CONCURRENTLY, which does not block writes, so outside a
-- transaction, each statement autocommitted on its own.
--
-- Re-runnable after a failure anywhere in the file: each index is dropped
-- (an INVALID leftover of a failed build included) and then built again, so
-- IF NOT EXISTS never skips an invalid index.
--
-- db-setup: no-transaction
-- db-setup: statement-timeout=15min
--
-- squawk-disable-assume-in-transaction
-- squawk-ignore-file require-lock-timeout, require-statement-timeout -- the runner sets both (this file's statement-timeout included)

-- A user's dialogue history, newest first (also serves lookups by user alone).
DROP INDEX CONCURRENTLY IF EXISTS idx_ai_dialogue_user_created;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_ai_dialogue_user_created
  ON ai_dialogue_log (user_id, created_at DESC);

-- Retention enforcement: rows with a retention period, by acquisition time.
DROP INDEX CONCURRENTLY IF EXISTS idx_provenance_expiring;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_provenance_expiring
  ON provenance (retention_years, acquired_at)
  WHERE retention_years IS NOT NULL;

-- At most one metrics row per UTC day. `date` is timestamptz, whose date()
-- depends on the session's TimeZone; the day in UTC is immutable, so indexable.
DROP INDEX CONCURRENTLY IF EXISTS idx_rag_metrics_date_unique;
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS idx_rag_metrics_date_unique
  ON rag_metrics_history (((date AT TIME ZONE 'UTC')::date));

-- Active plugin discovery: enabled and healthy.
DROP INDEX CONCURRENTLY IF EXISTS idx_plugin_enabled_healthy;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_plugin_enabled_healthy
  ON plugin_registry (name, last_health_check)
  WHERE enabled AND health_status = 'healthy';
