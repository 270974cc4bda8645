-- Release 2, expand (runs before the new application): the new column, filled, and kept in
-- step with the old one whichever application version writes.
ALTER TABLE customers ADD COLUMN full_name text;
UPDATE customers SET full_name = name;
CREATE FUNCTION customers_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.full_name := coalesce(NEW.full_name, NEW.name);
  NEW.name := coalesce(NEW.name, NEW.full_name);
  RETURN NEW;
END $$;
CREATE TRIGGER customers_sync BEFORE INSERT OR UPDATE ON customers
  FOR EACH ROW EXECUTE FUNCTION customers_sync();
