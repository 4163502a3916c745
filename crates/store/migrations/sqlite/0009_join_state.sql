-- Windowed join state (orderflow-join's database backend): per join and key, the left record (an order),
-- the right record (its payment), the id fixed for the join's output and for the expiry report, the deadline
-- of a left record still waiting (NULL once settled or reported), and when the entry may be deleted. It is
-- durable, so losing Redis or restarting a process loses no half-made join.
CREATE TABLE join_state (
    join_name TEXT NOT NULL,
    join_key TEXT NOT NULL,
    left_record BLOB,
    right_record BLOB,
    join_id TEXT,
    report_id TEXT,
    deadline_ms INTEGER,
    keep_until_ms INTEGER NOT NULL,
    PRIMARY KEY (join_name, join_key)
);
CREATE INDEX join_state_deadlines ON join_state (join_name, deadline_ms) WHERE deadline_ms IS NOT NULL;
CREATE INDEX join_state_kept_until ON join_state (keep_until_ms);
