-- Client tokens made through the API (`netwatch token create`); those of the
-- configuration file are not here. Only digests: a leaked database lets no
-- one in. A revoked token keeps its row (revoked_ms) and frees its name.
CREATE TABLE client_tokens (
    digest         TEXT PRIMARY KEY,  -- sha256:<hex> of the token
    name_key       TEXT UNIQUE,       -- the name, lower case; NULL once revoked
    name           TEXT NOT NULL,
    role           TEXT NOT NULL,     -- reader | operator | admin
    created_ms     BIGINT NOT NULL,
    revoked_ms     BIGINT
);
