-- The embedded schema registry: schemas deduplicated by fingerprint, subject versions, compatibility levels.
CREATE TABLE registry_schemas (
    id          BIGSERIAL PRIMARY KEY,
    fingerprint TEXT NOT NULL UNIQUE,
    schema      TEXT NOT NULL
);
CREATE TABLE registry_versions (
    subject   TEXT   NOT NULL,
    version   BIGINT NOT NULL,
    schema_id BIGINT NOT NULL REFERENCES registry_schemas (id),
    PRIMARY KEY (subject, version)
);
-- subject '' holds the global level.
CREATE TABLE registry_config (
    subject       TEXT PRIMARY KEY,
    compatibility TEXT NOT NULL
);
