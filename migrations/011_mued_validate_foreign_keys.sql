-- Validates the foreign keys added NOT VALID by 010. VALIDATE takes SHARE
-- UPDATE EXCLUSIVE on the table and ROW SHARE on user_profiles: reads and
-- writes go on during the scan. Outside a transaction so that 010 is committed
-- first and each VALIDATE commits alone.
--
-- Re-runnable as is: validating a constraint that is already valid does nothing.
--
-- db-setup: no-transaction
-- db-setup: statement-timeout=15min
--
-- squawk-disable-assume-in-transaction
-- squawk-ignore-file require-lock-timeout, require-statement-timeout -- the runner sets both (this file's statement-timeout included)
-- squawk-ignore-file prefer-robust-stmts -- VALIDATE CONSTRAINT is idempotent, so a retry after a partial run is safe

ALTER TABLE ai_dialogue_log VALIDATE CONSTRAINT fk_ai_dialogue_user;
ALTER TABLE provenance VALIDATE CONSTRAINT fk_provenance_acquired_by;
