-- Event ids each consumer has applied (the consumer runtime's exactly-once effects in this database).
-- Created here so that services running without DDL rights find it; the runtime creates it too when it
-- runs against a database of its own.
CREATE TABLE IF NOT EXISTS consumer_dedup (
    consumer   TEXT        NOT NULL,
    event_id   TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
