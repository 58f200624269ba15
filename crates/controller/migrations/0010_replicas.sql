-- Controller replicas on one PostgreSQL (issue 15). Each replica notes itself
-- here and says it is alive every few seconds (`seen_ms`); a VM's `replica`
-- is the one its agent's channel is open to, so any replica knows whether a
-- host is connected somewhere and pushes it work through that replica
-- (LISTEN/NOTIFY). A replica not seen for a while is gone, and so are the
-- channels it held. On SQLite (one controller) the same rows are kept.
ALTER TABLE vms ADD COLUMN replica TEXT;

CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    started_ms BIGINT NOT NULL,
    seen_ms BIGINT NOT NULL,
    draining_ms BIGINT
);
