-- Scale sets of plain hosts (issue 13, DESIGN §8 "Fleets"): Azure's
-- Microsoft.Compute/virtualMachineScaleSets, made explicitly (PUT) or when
-- the first host joins one with its enrollment key.
CREATE TABLE scale_sets (
    key            TEXT PRIMARY KEY,
    id             TEXT NOT NULL,
    subscription   TEXT NOT NULL,
    location       TEXT NOT NULL,
    tags_json      TEXT NOT NULL,     -- ARM tags, a JSON object
    next_instance  BIGINT NOT NULL,   -- instance ids are never given twice
    created_ms     BIGINT NOT NULL
);

-- Each host of a scale set: its instance id, kept across agent restarts and
-- re-joins (the host says who it is with the random id its agent keeps).
-- The instance is also a row of `vms`, under the id
-- …/virtualMachineScaleSets/{name}/virtualMachines/{instance}.
CREATE TABLE scale_set_instances (
    vm_key         TEXT PRIMARY KEY,
    scale_set_key  TEXT NOT NULL REFERENCES scale_sets (key) ON DELETE CASCADE,
    instance       BIGINT NOT NULL,
    host_key       TEXT NOT NULL,
    created_ms     BIGINT NOT NULL,
    UNIQUE (scale_set_key, host_key),
    UNIQUE (scale_set_key, instance)
);

-- Reusable enrollment keys of a scale set (`vmss extension set`): digests
-- only; each may expire, be capped to a number of hosts, and be revoked
-- (`vmss extension delete` revokes them all).
CREATE TABLE scale_set_keys (
    digest         TEXT PRIMARY KEY,
    scale_set_key  TEXT NOT NULL,
    created_ms     BIGINT NOT NULL,
    expires_ms     BIGINT NOT NULL,
    max_uses       BIGINT,            -- NULL: as many hosts as join
    uses           BIGINT NOT NULL,   -- hosts that joined with it
    revoked_ms     BIGINT
);
CREATE INDEX scale_set_keys_by_set ON scale_set_keys (scale_set_key);

-- A capture over many hosts is a parent row (target: the scale set) and one
-- row per host (target: the host, `parent_key` the parent's key, `instance`
-- its instance id): each host's row is the same state machine as a VM's.
ALTER TABLE packet_captures ADD COLUMN parent_key TEXT;
ALTER TABLE packet_captures ADD COLUMN instance TEXT;
CREATE INDEX packet_captures_by_parent ON packet_captures (parent_key, status);
