-- Soft-deleted subject versions stay (hidden) until deleted for good; modes (READWRITE, READONLY) per
-- subject, '' holding the global one.
ALTER TABLE registry_versions ADD COLUMN deleted BOOLEAN NOT NULL DEFAULT FALSE;
CREATE TABLE registry_mode (
    subject TEXT PRIMARY KEY,
    mode    TEXT NOT NULL
);
