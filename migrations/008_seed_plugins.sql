-- Seed data from the design (seeds/002): the two default content plugins.
-- Idempotent: name and source are unique, and ON CONFLICT DO NOTHING leaves an
-- existing row (and any later edit to it, such as disabling it) as it is.

INSERT INTO plugin_registry (name, source, capabilities, version, enabled)
VALUES
  ('Note.com Integration', 'note',
   '{"list": true, "search": true, "filter": true, "fetch": true, "transform": false}',
   '1.0.0', true),
  ('Local Materials', 'local',
   '{"list": true, "search": true, "filter": true, "fetch": true, "transform": true}',
   '1.0.0', true)
ON CONFLICT DO NOTHING;
