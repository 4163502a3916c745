-- Idempotency keys (IETF httpapi Idempotency-Key): per client and key, the request's fingerprint and the
-- response it got, written in the transaction of the change the request made, so a retry gets the same answer
-- and makes no second change. Rows older than orders.idempotency_ttl_secs are ignored and pruned.
CREATE TABLE idempotency_keys (
    client      TEXT        NOT NULL,
    idem_key    TEXT        NOT NULL,
    fingerprint TEXT        NOT NULL,
    status      INTEGER     NOT NULL,
    body        TEXT        NOT NULL,
    location    TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (client, idem_key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- A customer's orders, newest first or oldest first, for keyset listing.
CREATE INDEX orders_by_customer_created ON orders (customer_id, created_at, id);
CREATE INDEX orders_by_created ON orders (created_at, id);
