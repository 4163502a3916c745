-- The simulated payment provider's refunds: at most one per order (the order id is the idempotency key). A
-- refund is claimed when the order is rejected for want of stock or cancelled (`reason`), and settled
-- (`amount_minor`, `currency`, `refunded_at`) once the order's charge is captured, in full; the claim of an
-- order that was never captured stays unsettled.
CREATE TABLE payment_refunds (
    order_id      UUID        PRIMARY KEY,
    event_id      UUID        NOT NULL UNIQUE,
    refund_id     UUID        NOT NULL UNIQUE,
    order_version BIGINT      NOT NULL,
    reason        TEXT        NOT NULL CHECK (reason IN ('rejected', 'cancelled')),
    claimed_at    TIMESTAMPTZ NOT NULL,
    amount_minor  BIGINT      CHECK (amount_minor >= 0),
    currency      CHAR(3),
    refunded_at   TIMESTAMPTZ
);
CREATE INDEX payment_refunds_owed ON payment_refunds (order_id) WHERE refunded_at IS NULL;
