-- The audit trail: every event, appended in one chain. Each row's hash covers the previous row's hash,
-- its position and the event, so a changed, removed or reordered row breaks the chain at that point.
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    event_id    TEXT    NOT NULL UNIQUE,
    topic       TEXT    NOT NULL,
    msg_key     TEXT,
    payload     BLOB    NOT NULL,
    prev_hash   BLOB    NOT NULL,
    hash        BLOB    NOT NULL,
    recorded_at TEXT    NOT NULL
);

-- The chain's head: the last position and hash. Appenders lock this one row, so appends are serial.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB    NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));
