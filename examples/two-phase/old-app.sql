-- The old application (release 1): one query per line, against release 1's schema.
SELECT name FROM customers WHERE id = 1
INSERT INTO customers (id, name) VALUES (10, 'written by the old application')
UPDATE customers SET name = 'Ada Lovelace' WHERE id = 1
