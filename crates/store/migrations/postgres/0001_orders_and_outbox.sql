-- Orders, their lines, and the transactional outbox.
CREATE TABLE orders (
    id          UUID PRIMARY KEY,
    customer_id TEXT        NOT NULL,
    currency    CHAR(3)     NOT NULL,
    status      TEXT        NOT NULL,
    version     BIGINT      NOT NULL CHECK (version >= 1),
    total_minor BIGINT      NOT NULL CHECK (total_minor >= 0),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX orders_by_customer ON orders (customer_id, id);

CREATE TABLE order_items (
    order_id         UUID    NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no          INTEGER NOT NULL,
    sku              TEXT    NOT NULL,
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_minor BIGINT  NOT NULL CHECK (unit_price_minor > 0),
    PRIMARY KEY (order_id, line_no)
);

-- One row per event to publish; the relay publishes in id order and stamps published_at.
CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,
    event_id     UUID        NOT NULL UNIQUE,
    topic        TEXT        NOT NULL,
    msg_key      TEXT        NOT NULL,
    event_type   TEXT        NOT NULL,
    payload      BYTEA       NOT NULL,
    headers      TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    published_at TIMESTAMPTZ
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
