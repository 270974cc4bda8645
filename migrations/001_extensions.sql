-- Extensions the schema needs: pgvector for the vector(1536) columns and their
-- HNSW and IVFFlat indexes. gen_random_uuid() is built into PostgreSQL 13+.
--
-- Written in node-pg-migrate's SQL format: everything above the marker below
-- is dropped by the runner (as node-pg-migrate drops it); the SQL after it is
-- the migration. Runs in the run's transaction.
--
-- squawk-ignore-file require-lock-timeout, require-statement-timeout -- the runner sets both before every migration

-- Up Migration

CREATE EXTENSION IF NOT EXISTS vector;

-- IF NOT EXISTS keeps an older pgvector that was installed earlier; HNSW needs
-- 0.5.0, so stop here with the fix rather than fail later in the index build.
DO $$
DECLARE
  installed text := (SELECT extversion FROM pg_extension WHERE extname = 'vector');
BEGIN
  IF string_to_array(split_part(installed, '-', 1), '.')::int[] < ARRAY[0, 5, 0] THEN
    RAISE EXCEPTION 'pgvector % is installed; this schema needs 0.5.0 or later (HNSW indexes)', installed
      USING HINT = 'Run ALTER EXTENSION vector UPDATE; as the database owner, then deploy again.';
  END IF;
END $$;
