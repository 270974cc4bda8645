-- Seed data from the design (seeds/000): the default tenant, the default RBAC
-- rules (learner, trainer, hr, admin) and the sample ABAC rule.
--
-- Idempotent: the rows have fixed ids and ON CONFLICT DO NOTHING, so running
-- this again (or on a database that already has them) changes nothing, and an
-- operator's later edits to these rows are never overwritten. The rules are
-- attached to the tenant found by its domain, whatever its id.

INSERT INTO tenants (id, name, domain, settings)
VALUES (
  '00000000-0000-4000-8000-000000000001',
  'Development Tenant',
  'dev.educore.local',
  '{"queryRetentionDays": 90, "enableAuditLogs": true, "enablePersonalization": true}'
)
ON CONFLICT DO NOTHING;

INSERT INTO access_control_rules
  (id, tenant_id, rule_type, subject_type, subject_id, resource_type, resource_id,
   permission, conditions, is_active)
SELECT r.id::uuid, t.id, r.rule_type, r.subject_type, r.subject_id, r.resource_type, NULL,
       r.permission, r.conditions::jsonb, true
FROM (VALUES
  -- RBAC: resource_id NULL = every resource of the type.
  ('00000000-0000-4000-8000-000000000101', 'RBAC', 'role', 'learner', 'course', 'read',  '{}'),
  ('00000000-0000-4000-8000-000000000102', 'RBAC', 'role', 'trainer', 'course', 'write', '{}'),
  ('00000000-0000-4000-8000-000000000103', 'RBAC', 'role', 'hr',      'report', 'read',  '{}'),
  ('00000000-0000-4000-8000-000000000104', 'RBAC', 'role', 'admin',   '*',      'all',   '{}'),
  -- ABAC: any user of the HR or Management department may read reports.
  ('00000000-0000-4000-8000-000000000201', 'ABAC', 'user', '*',       'report', 'read',
   '{"department": ["HR", "Management"]}')
) AS r (id, rule_type, subject_type, subject_id, resource_type, permission, conditions)
JOIN tenants t ON t.domain = 'dev.educore.local'
ON CONFLICT (id) DO NOTHING;
