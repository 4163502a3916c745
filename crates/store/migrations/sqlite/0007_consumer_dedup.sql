-- Event ids each consumer has applied (the consumer runtime's exactly-once effects in this database).
CREATE TABLE IF NOT EXISTS consumer_dedup (
    consumer   TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (consumer, event_id)
);
