-- Storage accounts made through the API (`PUT …/storageAccounts/{name}`,
-- `netwatch storage account create`); those of the configuration file are
-- not here. Names are unique across resource groups, as Azure's are global.
CREATE TABLE storage_accounts (
    key            TEXT PRIMARY KEY,  -- the name, lower case
    name           TEXT NOT NULL,
    resource_group TEXT NOT NULL,
    location       TEXT NOT NULL,
    tags_json      TEXT NOT NULL,     -- ARM tags, a JSON object
    config_json    TEXT NOT NULL,     -- the [[storage]] table as JSON, secrets included
    version        BIGINT NOT NULL,   -- bumped by every change; caches compare it
    created_ms     BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL
);
