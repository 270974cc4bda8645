-- EDUCORE contextual assistant: tenants, access control, user profiles, the
-- knowledge graph, vector embeddings and the query log (design: seeds/000).
-- Every row belongs to a tenant; deleting a tenant deletes its rows.
-- The HNSW index on vector_embeddings and the four named check constraints of
-- the design come in their own migrations (003, 004), as the design orders them.
--
-- Transactional: this file commits with its history row or not at all, so its
-- statements need no IF NOT EXISTS (an unexpected existing table is an error
-- worth stopping for, not something to skip).
--
-- squawk-ignore-file require-lock-timeout, require-statement-timeout -- the runner sets both before every migration

-- Keeps updated_at current on every UPDATE (shared by all tables with that column).
CREATE OR REPLACE FUNCTION update_updated_at_column()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  NEW.updated_at = now();
  RETURN NEW;
END;
$$;

CREATE TABLE tenants (
  id         uuid        NOT NULL DEFAULT gen_random_uuid(),
  name       text        NOT NULL,
  domain     text        NOT NULL,
  settings   jsonb       NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  deleted_at timestamptz,
  CONSTRAINT tenants_pkey PRIMARY KEY (id),
  CONSTRAINT uq_tenants_domain UNIQUE (domain)
);

-- RBAC rules (subject_type 'role') and ABAC rules (JSON conditions on the
-- subject's attributes, e.g. {"department": ["HR", "Management"]}).
-- resource_id NULL means every resource of resource_type.
CREATE TABLE access_control_rules (
  id            uuid        NOT NULL DEFAULT gen_random_uuid(),
  tenant_id     uuid        NOT NULL,
  rule_type     text        NOT NULL,
  subject_type  text        NOT NULL,
  subject_id    text        NOT NULL,
  resource_type text        NOT NULL,
  resource_id   text,
  permission    text        NOT NULL,
  conditions    jsonb       NOT NULL DEFAULT '{}',
  is_active     boolean     NOT NULL DEFAULT true,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT access_control_rules_pkey PRIMARY KEY (id),
  CONSTRAINT fk_access_control_rules_tenant FOREIGN KEY (tenant_id)
    REFERENCES tenants (id) ON DELETE CASCADE,
  CONSTRAINT chk_access_control_rules_rule_type
    CHECK (rule_type IN ('RBAC', 'ABAC', 'content_permission')),
  CONSTRAINT chk_access_control_rules_conditions
    CHECK (jsonb_typeof(conditions) = 'object')
);

-- The permission check: tenant, subject, resource type, then resource id or NULL.
CREATE INDEX idx_access_control_rules_lookup
  ON access_control_rules (tenant_id, subject_type, subject_id, resource_type, resource_id);

-- Personalisation: user_id is the identity provider's id (e.g. 'learner-001').
CREATE TABLE user_profiles (
  id                uuid        NOT NULL DEFAULT gen_random_uuid(),
  tenant_id         uuid        NOT NULL,
  user_id           text        NOT NULL,
  role              text        NOT NULL,
  department        text,
  region            text,
  skill_gaps        jsonb       NOT NULL DEFAULT '[]',
  learning_progress jsonb       NOT NULL DEFAULT '{}',
  preferences       jsonb       NOT NULL DEFAULT '{}',
  metadata          jsonb       NOT NULL DEFAULT '{}',
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT user_profiles_pkey PRIMARY KEY (id),
  CONSTRAINT uq_user_profiles_tenant_user UNIQUE (tenant_id, user_id),
  CONSTRAINT fk_user_profiles_tenant FOREIGN KEY (tenant_id)
    REFERENCES tenants (id) ON DELETE CASCADE,
  CONSTRAINT chk_user_profiles_skill_gaps CHECK (jsonb_typeof(skill_gaps) = 'array')
);

CREATE INDEX idx_user_profiles_tenant_role ON user_profiles (tenant_id, role);
-- "Who lacks skill X": skill_gaps ? 'React'.
CREATE INDEX idx_user_profiles_skill_gaps_gin ON user_profiles USING gin (skill_gaps);

-- Nodes are addressed by a readable id ('course-001', 'skill-001'), unique
-- within a tenant; edges reference them by (tenant_id, node_id), so an edge
-- can never join two tenants' graphs.
CREATE TABLE knowledge_graph_nodes (
  id         uuid        NOT NULL DEFAULT gen_random_uuid(),
  tenant_id  uuid        NOT NULL,
  node_id    text        NOT NULL,
  node_type  text        NOT NULL,
  properties jsonb       NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT knowledge_graph_nodes_pkey PRIMARY KEY (id),
  CONSTRAINT uq_kg_nodes_tenant_node UNIQUE (tenant_id, node_id),
  CONSTRAINT fk_kg_nodes_tenant FOREIGN KEY (tenant_id)
    REFERENCES tenants (id) ON DELETE CASCADE
);

CREATE INDEX idx_kg_nodes_tenant_type ON knowledge_graph_nodes (tenant_id, node_type);
-- Containment queries on properties: properties @> '{"difficulty": "beginner"}'.
CREATE INDEX idx_kg_nodes_properties
  ON knowledge_graph_nodes USING gin (properties jsonb_path_ops);

CREATE TABLE knowledge_graph_edges (
  id             uuid         NOT NULL DEFAULT gen_random_uuid(),
  tenant_id      uuid         NOT NULL,
  source_node_id text         NOT NULL,
  target_node_id text         NOT NULL,
  edge_type      text         NOT NULL,
  -- NULL or within 0..1: chk_weight (migration 004).
  weight         numeric(3,2),
  properties     jsonb        NOT NULL DEFAULT '{}',
  created_at     timestamptz  NOT NULL DEFAULT now(),
  updated_at     timestamptz  NOT NULL DEFAULT now(),
  CONSTRAINT knowledge_graph_edges_pkey PRIMARY KEY (id),
  CONSTRAINT uq_kg_edges_edge UNIQUE (tenant_id, source_node_id, target_node_id, edge_type),
  CONSTRAINT fk_kg_edges_tenant FOREIGN KEY (tenant_id)
    REFERENCES tenants (id) ON DELETE CASCADE,
  CONSTRAINT fk_kg_edges_source_node FOREIGN KEY (tenant_id, source_node_id)
    REFERENCES knowledge_graph_nodes (tenant_id, node_id) ON DELETE CASCADE,
  CONSTRAINT fk_kg_edges_target_node FOREIGN KEY (tenant_id, target_node_id)
    REFERENCES knowledge_graph_nodes (tenant_id, node_id) ON DELETE CASCADE
);

-- Outgoing edges use uq_kg_edges_edge; this one serves incoming edges (and
-- the cascade from a deleted target node).
CREATE INDEX idx_kg_edges_target ON knowledge_graph_edges (tenant_id, target_node_id);
CREATE INDEX idx_kg_edges_edge_type ON knowledge_graph_edges (tenant_id, edge_type);

-- One row per chunk of a piece of content; embedding from a 1536-dimension
-- model (OpenAI text-embedding-3-small / ada-002).
CREATE TABLE vector_embeddings (
  id           uuid         NOT NULL DEFAULT gen_random_uuid(),
  tenant_id    uuid         NOT NULL,
  content_id   text         NOT NULL,
  content_type text         NOT NULL,
  embedding    vector(1536) NOT NULL,
  content_text text         NOT NULL,
  -- >= 0: chk_chunk_index (migration 004).
  chunk_index  bigint       NOT NULL DEFAULT 0,
  metadata     jsonb        NOT NULL DEFAULT '{}',
  created_at   timestamptz  NOT NULL DEFAULT now(),
  updated_at   timestamptz  NOT NULL DEFAULT now(),
  CONSTRAINT vector_embeddings_pkey PRIMARY KEY (id),
  CONSTRAINT uq_vector_embeddings_chunk UNIQUE (tenant_id, content_id, content_type, chunk_index),
  CONSTRAINT fk_vector_embeddings_tenant FOREIGN KEY (tenant_id)
    REFERENCES tenants (id) ON DELETE CASCADE
);

CREATE INDEX idx_vector_embeddings_content_id ON vector_embeddings (content_id);

-- The questions asked and the answers given, kept queryRetentionDays (tenant setting).
CREATE TABLE queries (
  id                 uuid         NOT NULL DEFAULT gen_random_uuid(),
  tenant_id          uuid         NOT NULL,
  user_id            text         NOT NULL,
  session_id         text,
  query_text         text         NOT NULL,
  answer             text         NOT NULL,
  -- Within 0..1: chk_confidence_score (migration 004).
  confidence_score   numeric(3,2) NOT NULL,
  -- >= 0: chk_processing_time (migration 004).
  processing_time_ms bigint       NOT NULL,
  model_version      text         NOT NULL,
  is_personalized    boolean      NOT NULL DEFAULT false,
  is_cached          boolean      NOT NULL DEFAULT false,
  metadata           jsonb        NOT NULL DEFAULT '{}',
  created_at         timestamptz  NOT NULL DEFAULT now(),
  CONSTRAINT queries_pkey PRIMARY KEY (id),
  CONSTRAINT fk_queries_tenant FOREIGN KEY (tenant_id)
    REFERENCES tenants (id) ON DELETE CASCADE
);

CREATE INDEX idx_queries_tenant_created ON queries (tenant_id, created_at DESC);
CREATE INDEX idx_queries_user_created ON queries (user_id, created_at DESC);
CREATE INDEX idx_queries_tenant_session ON queries (tenant_id, session_id);

CREATE TRIGGER update_tenants_updated_at
  BEFORE UPDATE ON tenants
  FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_access_control_rules_updated_at
  BEFORE UPDATE ON access_control_rules
  FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_user_profiles_updated_at
  BEFORE UPDATE ON user_profiles
  FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_knowledge_graph_nodes_updated_at
  BEFORE UPDATE ON knowledge_graph_nodes
  FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_knowledge_graph_edges_updated_at
  BEFORE UPDATE ON knowledge_graph_edges
  FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_vector_embeddings_updated_at
  BEFORE UPDATE ON vector_embeddings
  FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
