-- Reference data: each customer's tier, which enrichment adds to paid orders (unknown customers are
-- 'standard').
CREATE TABLE customers (
    id   TEXT PRIMARY KEY,
    tier TEXT NOT NULL CHECK (tier <> '')
);
