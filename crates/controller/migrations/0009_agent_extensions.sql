-- The agent extension's settings per host (issue 14): what `vm extension set`
-- said about versions (autoUpgradeMinorVersion, typeHandlerVersion,
-- forceUpdateTag), as JSON (agent_builds::ExtensionSettings). A host without
-- a row has the defaults: minor upgrades on.
CREATE TABLE agent_extensions (
    vm_key TEXT PRIMARY KEY,
    settings_json TEXT NOT NULL
);
