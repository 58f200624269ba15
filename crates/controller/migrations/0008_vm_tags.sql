-- ARM tags of hosts (issue 13): set when a host enrolls (`netwatch agent --tag
-- role=web`) or later (`PATCH …/virtualMachines/{vm}` {"tags": …}); a capture
-- may choose its hosts by tag (`properties.netwatch.targets.tags`).
ALTER TABLE vms ADD COLUMN tags_json TEXT NOT NULL DEFAULT '{}';
