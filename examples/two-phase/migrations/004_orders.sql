-- Release 2, expand, but numbered after the contract file: it waits for the contract step
-- (no migration ever runs before one with a lower number).
CREATE TABLE orders (id int PRIMARY KEY, customer int NOT NULL REFERENCES customers);
