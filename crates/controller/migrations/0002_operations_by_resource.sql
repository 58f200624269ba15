-- Agent reports settle the operations of the capture they are about.
CREATE INDEX operations_by_resource ON operations (resource_key, kind, status);
