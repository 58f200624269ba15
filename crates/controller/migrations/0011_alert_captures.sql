-- Captures triggered by alerts (issue 16).
--
-- A flight recorder names the VM or scale set whose hosts keep a rolling
-- window of recent traffic (`spec_json`: the validated resource as echoed);
-- each host's agent says how its recorder is doing (`recorder_status`).
CREATE TABLE flight_recorders (
    key         TEXT PRIMARY KEY,
    id          TEXT NOT NULL,
    watcher_key TEXT NOT NULL,
    target_key  TEXT NOT NULL,
    spec_json   TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL
);
CREATE INDEX flight_recorders_by_target ON flight_recorders (target_key);

CREATE TABLE recorder_status (
    vm_key      TEXT PRIMARY KEY,
    status_json TEXT NOT NULL,
    updated_ms  BIGINT NOT NULL
);

-- A trigger: which alerts start which captures. Its webhook is found by the
-- SHA-256 of its secret (the secret itself is never stored). `version` is
-- bumped by every firing, so firings of one trigger take turns (their guards
-- count what the others did).
CREATE TABLE triggers (
    key           TEXT PRIMARY KEY,
    id            TEXT NOT NULL,
    watcher_key   TEXT NOT NULL,
    spec_json     TEXT NOT NULL,
    secret_digest TEXT NOT NULL UNIQUE,
    version       BIGINT NOT NULL,
    created_ms    BIGINT NOT NULL,
    updated_ms    BIGINT NOT NULL
);

-- The captures a trigger started: one per (alert, host), so an alert
-- delivered again starts nothing more.
CREATE TABLE trigger_firings (
    trigger_key TEXT NOT NULL,
    alert_id    TEXT NOT NULL,
    vm_key      TEXT NOT NULL,
    capture_key TEXT NOT NULL,
    fired_ms    BIGINT NOT NULL,
    created_ms  BIGINT NOT NULL,
    PRIMARY KEY (trigger_key, alert_id, vm_key)
);
CREATE INDEX trigger_firings_by_time ON trigger_firings (trigger_key, created_ms);
