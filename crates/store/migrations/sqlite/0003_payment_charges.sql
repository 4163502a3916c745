-- The simulated payment provider's ledger: at most one charge per order (the order id is the idempotency
-- key), however often the payments role asks. `attempts` counts the requests, so re-deliveries show.
CREATE TABLE payment_charges (
    order_id      BLOB    PRIMARY KEY,
    payment_id    BLOB    NOT NULL UNIQUE,
    event_id      BLOB    NOT NULL UNIQUE,
    order_version INTEGER NOT NULL,
    amount_minor  INTEGER NOT NULL CHECK (amount_minor >= 0),
    currency      TEXT    NOT NULL,
    outcome       TEXT    NOT NULL CHECK (outcome IN ('CAPTURED', 'DECLINED', 'FAILED')),
    reason        TEXT,
    attempts      INTEGER NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    charged_at    TEXT    NOT NULL
);
