-- Foreign keys of the RAG tables (design: seeds/002, its 0004 migration), the
-- zero-downtime way: added NOT VALID here (enforced for new rows at once, no
-- scan of existing rows under this ALTER's lock), validated in 011.
--
-- Adapted (docs/schema.md): the design's users(id) is user_profiles(id) here.
-- The design's third key, provenance.content_id -> materials(id), is not made:
-- content_id is polymorphic (content_type says which table it points into),
-- which a foreign key cannot express; the design's own fixed version of this
-- migration dropped it for that reason.
--
-- ADD FOREIGN KEY locks both tables (SHARE ROW EXCLUSIVE) for a moment; a short
-- lock timeout makes it give way to long transactions on user_profiles (the
-- runner then retries) rather than queue every writer behind it.
--
-- db-setup: lock-timeout=2s
--
-- squawk-ignore-file require-lock-timeout, require-statement-timeout -- the runner sets both (this file's lock-timeout included)

-- Deleting a user profile deletes the user's dialogue log.
ALTER TABLE ai_dialogue_log
  ADD CONSTRAINT fk_ai_dialogue_user
  FOREIGN KEY (user_id) REFERENCES user_profiles (id) ON DELETE CASCADE
  NOT VALID;

-- Deleting a user profile keeps the provenance record, without its acquirer.
ALTER TABLE provenance
  ADD CONSTRAINT fk_provenance_acquired_by
  FOREIGN KEY (acquired_by) REFERENCES user_profiles (id) ON DELETE SET NULL
  NOT VALID;
