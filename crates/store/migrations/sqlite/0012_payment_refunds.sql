-- The simulated payment provider's refunds: at most one per order (the order id is the idempotency key). A
-- refund is claimed when the order is rejected for want of stock or cancelled (`reason`), and settled
-- (`amount_minor`, `currency`, `refunded_at`) once the order's charge is captured, in full; the claim of an
-- order that was never captured stays unsettled.
CREATE TABLE payment_refunds (
    order_id      BLOB    PRIMARY KEY,
    event_id      BLOB    NOT NULL UNIQUE,
    refund_id     BLOB    NOT NULL UNIQUE,
    order_version INTEGER NOT NULL,
    reason        TEXT    NOT NULL CHECK (reason IN ('rejected', 'cancelled')),
    claimed_at    TEXT    NOT NULL,
    amount_minor  INTEGER CHECK (amount_minor >= 0),
    currency      TEXT,
    refunded_at   TEXT
);
