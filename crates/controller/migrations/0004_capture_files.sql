-- The files of each capture run that are in storage (DESIGN §3 "Files"):
-- written when an agent's upload is committed and its size checked, so the
-- status lists them (a continuous capture has one per rotated file) and a
-- download can check what it fetched against the agent's SHA-256.
CREATE TABLE capture_files (
    capture_key    TEXT NOT NULL,
    created_ms     BIGINT NOT NULL,   -- the run: a capture created again is another
    seq            INTEGER NOT NULL,  -- 0: the one file; n: a ring's n-th file
    storage_path   TEXT NOT NULL,
    size           BIGINT NOT NULL,
    sha256         TEXT NOT NULL,
    stored_ms      BIGINT NOT NULL,
    PRIMARY KEY (capture_key, created_ms, seq)
);
