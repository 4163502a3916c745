-- The simulated payment provider's ledger: at most one charge per order (the order id is the idempotency
-- key), however often the payments role asks. `attempts` counts the requests, so re-deliveries show.
CREATE TABLE payment_charges (
    order_id     UUID        PRIMARY KEY,
    payment_id   UUID        NOT NULL UNIQUE,
    event_id     UUID        NOT NULL UNIQUE,
    order_version BIGINT     NOT NULL,
    amount_minor BIGINT      NOT NULL CHECK (amount_minor >= 0),
    currency     CHAR(3)     NOT NULL,
    outcome      TEXT        NOT NULL CHECK (outcome IN ('CAPTURED', 'DECLINED', 'FAILED')),
    reason       TEXT,
    attempts     INTEGER     NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    charged_at   TIMESTAMPTZ NOT NULL
);
