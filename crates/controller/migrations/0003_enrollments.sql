-- Enrollment of hosts (the "VM extension" install, DESIGN §2): a one-time
-- token bound to a VM, traded by its agent for a credential of its own.
-- Tokens are kept as SHA-256 digests only.
CREATE TABLE enrollments (
    digest         TEXT PRIMARY KEY,
    vm_key         TEXT NOT NULL,
    vm_id          TEXT NOT NULL,
    location       TEXT NOT NULL,
    created_ms     BIGINT NOT NULL,
    expires_ms     BIGINT NOT NULL,
    used_ms        BIGINT           -- set once, when an agent used it
);
CREATE INDEX enrollments_by_vm ON enrollments (vm_key);

-- Each enrolled agent's own credential: it may speak only for its VM.
CREATE TABLE agent_credentials (
    digest         TEXT PRIMARY KEY,
    vm_key         TEXT NOT NULL,
    vm_id          TEXT NOT NULL,
    created_ms     BIGINT NOT NULL,
    revoked_ms     BIGINT
);
