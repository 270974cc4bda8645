-- Enables pgvector.
CREATE EXTENSION IF NOT EXISTS vector;
