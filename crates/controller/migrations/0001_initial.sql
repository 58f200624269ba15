-- netwatch controller state. One SQL for SQLite and PostgreSQL: TEXT and BIGINT
-- only (the Any driver maps nothing else on both), times as Unix milliseconds,
-- resource ids stored as given in `id` and looked up by their lower-case `key`
-- (ARM ids compare case-insensitively).

-- Hosts whose agent registered: each is a VM resource (DESIGN §2).
CREATE TABLE vms (
    key            TEXT PRIMARY KEY,
    id             TEXT NOT NULL,
    subscription   TEXT NOT NULL,
    location       TEXT NOT NULL,
    agent_json     TEXT NOT NULL,   -- live agent facts: version, interfaces, addresses
    last_seen_ms   BIGINT,
    created_ms     BIGINT NOT NULL
);

-- One network watcher per location, created on first use.
CREATE TABLE network_watchers (
    key            TEXT PRIMARY KEY,
    id             TEXT NOT NULL,
    subscription   TEXT NOT NULL,
    location       TEXT NOT NULL,
    created_ms     BIGINT NOT NULL
);

CREATE TABLE packet_captures (
    key            TEXT PRIMARY KEY,
    id             TEXT NOT NULL,
    watcher_key    TEXT NOT NULL REFERENCES network_watchers (key),
    target_key     TEXT NOT NULL,
    target_id      TEXT NOT NULL,
    request_json   TEXT NOT NULL,   -- the validated request, as echoed to clients
    status         TEXT NOT NULL,   -- NotStarted | Running | Stopped | Error
    stop_reason    TEXT,
    errors_json    TEXT NOT NULL,   -- packetCaptureError list
    started_ms     BIGINT,
    stats_json     TEXT NOT NULL,   -- counters the agent reported last
    etag           TEXT NOT NULL,
    version        BIGINT NOT NULL, -- optimistic concurrency: bumped by every update
    created_ms     BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL
);
CREATE INDEX packet_captures_by_watcher ON packet_captures (watcher_key);
CREATE INDEX packet_captures_by_target ON packet_captures (target_key);

-- Long-running operations (Azure-AsyncOperation / Location status resources).
CREATE TABLE operations (
    id             TEXT PRIMARY KEY,
    resource_key   TEXT NOT NULL,
    kind           TEXT NOT NULL,   -- create | stop | delete | queryStatus
    status         TEXT NOT NULL,   -- InProgress | Succeeded | Failed
    error_json     TEXT,
    created_ms     BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL
);
