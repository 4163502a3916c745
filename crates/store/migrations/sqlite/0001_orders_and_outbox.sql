-- Orders, their lines, and the transactional outbox (UUIDs stored as 16-byte BLOBs).
CREATE TABLE orders (
    id          BLOB    PRIMARY KEY,
    customer_id TEXT    NOT NULL,
    currency    TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    total_minor INTEGER NOT NULL CHECK (total_minor >= 0),
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);
CREATE INDEX orders_by_customer ON orders (customer_id, id);

CREATE TABLE order_items (
    order_id         BLOB    NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no          INTEGER NOT NULL,
    sku              TEXT    NOT NULL,
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_minor INTEGER NOT NULL CHECK (unit_price_minor > 0),
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     BLOB    NOT NULL UNIQUE,
    topic        TEXT    NOT NULL,
    msg_key      TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    headers      TEXT    NOT NULL,
    created_at   TEXT    NOT NULL,
    published_at TEXT
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
