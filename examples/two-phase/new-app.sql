-- The new application (release 2): one query per line, against release 2's schema.
SELECT full_name FROM customers WHERE id = 1
INSERT INTO customers (id, full_name) VALUES (20, 'written by the new application')
UPDATE customers SET full_name = 'Ada King' WHERE id = 1
