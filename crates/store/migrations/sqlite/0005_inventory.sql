-- Products and their stock; the CHECK makes overselling impossible whatever runs concurrently.
CREATE TABLE products (
    sku         TEXT PRIMARY KEY,
    name        TEXT    NOT NULL,
    price_minor INTEGER NOT NULL CHECK (price_minor >= 0),
    stock       INTEGER NOT NULL CHECK (stock >= 0)
);

-- One reservation per order (the order id is the idempotency key): ALLOCATED (stock taken), REJECTED,
-- RELEASED (allocated, then given back on cancel) or CANCELLED (the cancel came first; never allocate).
CREATE TABLE inventory_reservations (
    order_id   BLOB PRIMARY KEY,
    status     TEXT NOT NULL CHECK (status IN ('ALLOCATED', 'REJECTED', 'RELEASED', 'CANCELLED')),
    event_id   BLOB NOT NULL UNIQUE,
    reason     TEXT,
    sku        TEXT,
    updated_at TEXT NOT NULL
);

CREATE TABLE inventory_reservation_lines (
    order_id BLOB    NOT NULL REFERENCES inventory_reservations (order_id) ON DELETE CASCADE,
    sku      TEXT    NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);
