-- RAG observability and data provenance (design: seeds/002, its 0002 migration):
-- the dialogue log with its RAG metrics and citations, provenance with its
-- enums, the daily metrics history and the plugin registry. The optimised
-- indexes come in 009, the foreign keys in 010 and 011, the plugin rows in 008.
--
-- Adapted to this schema (see docs/schema.md): the design's `users` is
-- user_profiles here, so ai_dialogue_log.user_id and provenance.acquired_by
-- hold a user_profiles.id; provenance.content_id is text, because the content
-- it describes is addressed by text ids here (vector_embeddings.content_id,
-- knowledge_graph_nodes.node_id) or by a uuid written as text (ai_dialogue_log).
--
-- squawk-ignore-file require-lock-timeout, require-statement-timeout -- the runner sets both before every migration

-- Enum types, created so that a re-run finding them already there goes on:
-- CREATE TYPE has no IF NOT EXISTS.
DO $$
BEGIN
  CREATE TYPE content_type AS ENUM (
    'material', 'creation_log', 'generated', 'note_article', 'ai_response'
  );
EXCEPTION
  WHEN duplicate_object THEN NULL;
END $$;

DO $$
BEGIN
  CREATE TYPE acquisition_method AS ENUM (
    'api_fetch', 'manual_upload', 'ai_generated', 'user_created', 'system_import'
  );
EXCEPTION
  WHEN duplicate_object THEN NULL;
END $$;

DO $$
BEGIN
  CREATE TYPE license_type AS ENUM (
    'cc_by', 'cc_by_sa', 'cc_by_nc', 'cc_by_nc_sa', 'proprietary', 'mit',
    'apache_2_0', 'all_rights_reserved', 'public_domain'
  );
EXCEPTION
  WHEN duplicate_object THEN NULL;
END $$;

-- One row per answered question: the dialogue itself, then its RAG metrics.
CREATE TABLE ai_dialogue_log (
  id                  uuid         NOT NULL DEFAULT gen_random_uuid(),
  user_id             uuid         NOT NULL,
  session_id          uuid         NOT NULL,
  query               text         NOT NULL,
  response            text         NOT NULL,
  model_used          text         NOT NULL,
  created_at          timestamptz  NOT NULL DEFAULT now(),
  updated_at          timestamptz  NOT NULL DEFAULT now(),
  -- [{"source", "sourceType", "excerpt", "confidence", "timestamp"}, ...]
  citations           jsonb,
  latency_ms          bigint,
  token_cost_jpy      numeric(8,2),
  citation_rate       numeric(5,2),
  prompt_tokens       bigint,
  completion_tokens   bigint,
  total_tokens        bigint,
  relevance_score     numeric(3,2),
  user_feedback       bigint,
  context_window_size bigint,
  temperature         numeric(3,2),
  CONSTRAINT ai_dialogue_log_pkey PRIMARY KEY (id),
  CONSTRAINT chk_ai_dialogue_citations CHECK (citations IS NULL OR jsonb_typeof(citations) = 'array'),
  CONSTRAINT chk_ai_dialogue_citation_rate CHECK (citation_rate >= 0 AND citation_rate <= 100),
  CONSTRAINT chk_ai_dialogue_user_feedback CHECK (user_feedback IN (-1, 0, 1))
);

-- idx_ai_dialogue_user_created (009) leads with user_id and also serves
-- lookups by user alone, so there is no separate index on user_id.
CREATE INDEX idx_ai_dialogue_session ON ai_dialogue_log (session_id);
CREATE INDEX idx_ai_dialogue_created_at ON ai_dialogue_log (created_at);
CREATE INDEX idx_ai_dialogue_citation_rate ON ai_dialogue_log (citation_rate);

CREATE TABLE provenance (
  id                     uuid               NOT NULL DEFAULT gen_random_uuid(),
  content_id             text               NOT NULL,
  content_type           content_type       NOT NULL,
  -- Source management
  source_uri             text,
  license_type           license_type,
  acquisition_method     acquisition_method,
  rights_holder          text,
  permission_flag        boolean            NOT NULL DEFAULT false,
  -- Digital signatures
  hash_c2pa              text,
  hash_sha256            text,
  -- Retention and sharing
  retention_years        bigint,
  access_policy          jsonb,
  external_share_consent boolean            NOT NULL DEFAULT false,
  -- Audit trail
  acquired_by            uuid,
  acquired_at            timestamptz        NOT NULL DEFAULT now(),
  last_verified_at       timestamptz,
  verification_status    text,
  created_at             timestamptz        NOT NULL DEFAULT now(),
  updated_at             timestamptz        NOT NULL DEFAULT now(),
  CONSTRAINT provenance_pkey PRIMARY KEY (id),
  CONSTRAINT chk_provenance_retention_years CHECK (retention_years > 0)
);

CREATE INDEX idx_provenance_content ON provenance (content_id, content_type);
CREATE INDEX idx_provenance_source ON provenance (source_uri);
CREATE INDEX idx_provenance_license ON provenance (license_type);
CREATE INDEX idx_provenance_retention ON provenance (retention_years);
-- For fk_provenance_acquired_by (010): deleting a user profile sets these to NULL.
CREATE INDEX idx_provenance_acquired_by ON provenance (acquired_by);

-- Daily aggregates written by the metrics job; `date` is the start of the day
-- the row covers (one row per UTC day: idx_rag_metrics_date_unique, 009).
CREATE TABLE rag_metrics_history (
  id                       uuid          NOT NULL DEFAULT gen_random_uuid(),
  date                     timestamptz   NOT NULL,
  -- Citations
  citation_rate            numeric(5,2),
  citation_count           bigint,
  unique_sources_count     bigint,
  -- Latency
  latency_p50_ms           bigint,
  latency_p95_ms           bigint,
  latency_p99_ms           bigint,
  -- Cost
  cost_per_answer          numeric(6,2),
  total_cost               numeric(10,2),
  -- Volume
  total_queries            bigint,
  unique_users             bigint,
  average_tokens_per_query bigint,
  -- Quality
  average_relevance_score  numeric(3,2),
  positive_votes_rate      numeric(5,2),
  -- SLO compliance: {"citationRateMet", "latencyMet", "costMet", "overallMet"}
  slo_compliance           jsonb,
  created_at               timestamptz   NOT NULL DEFAULT now(),
  CONSTRAINT rag_metrics_history_pkey PRIMARY KEY (id)
);

CREATE INDEX idx_rag_metrics_date ON rag_metrics_history (date);
CREATE INDEX idx_rag_metrics_compliance ON rag_metrics_history USING gin (slo_compliance);

-- Content sources the assistant can pull from (note.com, local materials, ...).
CREATE TABLE plugin_registry (
  id                uuid        NOT NULL DEFAULT gen_random_uuid(),
  name              text        NOT NULL,
  source            text        NOT NULL,
  -- {"list", "search", "filter", "fetch", "transform"}: booleans
  capabilities      jsonb       NOT NULL,
  config            jsonb,
  api_endpoint      text,
  -- The name of an environment variable holding the key, never the key.
  api_key_env_var   text,
  enabled           boolean     NOT NULL DEFAULT true,
  version           text        NOT NULL,
  last_health_check timestamptz,
  health_status     text,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT plugin_registry_pkey PRIMARY KEY (id),
  CONSTRAINT uq_plugin_registry_name UNIQUE (name),
  CONSTRAINT uq_plugin_registry_source UNIQUE (source)
);
-- Lookups by name use uq_plugin_registry_name; the active-plugin query uses
-- idx_plugin_enabled_healthy (009). No separate index on name or enabled.

CREATE TRIGGER update_ai_dialogue_log_updated_at
  BEFORE UPDATE ON ai_dialogue_log
  FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_provenance_updated_at
  BEFORE UPDATE ON provenance
  FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_plugin_registry_updated_at
  BEFORE UPDATE ON plugin_registry
  FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

COMMENT ON TABLE ai_dialogue_log IS 'RAG dialogue logs with citation tracking and quality metrics';
COMMENT ON COLUMN ai_dialogue_log.citations IS 'JSONB array of citation objects with source, confidence and timestamp';
COMMENT ON COLUMN ai_dialogue_log.latency_ms IS 'Response latency in milliseconds for performance monitoring';
COMMENT ON COLUMN ai_dialogue_log.citation_rate IS 'Percentage of the response backed by citations (0-100)';
COMMENT ON TABLE provenance IS 'Data provenance tracking for compliance and transparency (GDPR, C2PA ready)';
COMMENT ON COLUMN provenance.content_id IS 'Polymorphic reference, read with content_type: a vector_embeddings.content_id or knowledge_graph_nodes.node_id for material, an ai_dialogue_log.id for ai_response; checked by the application';
COMMENT ON COLUMN provenance.hash_c2pa IS 'C2PA digital signature hash for content authenticity verification';
COMMENT ON COLUMN provenance.retention_years IS 'Data retention period in years for GDPR compliance';
COMMENT ON TABLE rag_metrics_history IS 'Daily aggregated RAG metrics for dashboard and SLO monitoring';
COMMENT ON COLUMN rag_metrics_history.slo_compliance IS 'JSONB object tracking SLO targets: citationRateMet, latencyMet, costMet, overallMet';
COMMENT ON TABLE plugin_registry IS 'Extensible content source registry for plugin architecture';
COMMENT ON COLUMN plugin_registry.capabilities IS 'JSONB object defining plugin capabilities: list, search, filter, fetch, transform';
