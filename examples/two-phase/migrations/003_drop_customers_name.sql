-- db-setup: phase=contract
-- Release 2, contract (runs after the new application is deployed): the old column goes.
DROP TRIGGER customers_sync ON customers;
DROP FUNCTION customers_sync();
ALTER TABLE customers ALTER COLUMN full_name SET NOT NULL;
ALTER TABLE customers DROP COLUMN name;
