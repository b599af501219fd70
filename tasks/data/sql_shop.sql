-- The small shop database of the `sql` task (built into a read-only SQLite file on first use).
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL);
CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL, price REAL NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
                     product_id INTEGER NOT NULL REFERENCES products(id), quantity INTEGER NOT NULL, day INTEGER NOT NULL);
INSERT INTO customers VALUES (1, 'Ines', 'Lyon'), (2, 'Tomas', 'Porto'), (3, 'Aiko', 'Lyon'), (4, 'Ravi', 'Leeds'),
  (5, 'Marta', 'Porto'), (6, 'Jonas', 'Lyon'), (7, 'Chloe', 'Leeds');
INSERT INTO products VALUES (1, 'Desk lamp', 'office', 24.5), (2, 'Stapler', 'office', 8.0), (3, 'Rake', 'garden', 19.0),
  (4, 'Hose', 'garden', 32.0), (5, 'Notebook', 'office', 3.5), (6, 'Watering can', 'garden', 12.0), (7, 'Armchair', 'home', 149.0),
  (8, 'Rug', 'home', 89.0);
INSERT INTO orders VALUES (1, 1, 1, 2, 1), (2, 2, 3, 1, 1), (3, 1, 5, 10, 2), (4, 3, 7, 1, 2), (5, 4, 1, 1, 3),
  (6, 2, 4, 2, 3), (7, 6, 2, 3, 3), (8, 1, 6, 1, 4), (9, 3, 1, 4, 5), (10, 4, 5, 6, 5);
