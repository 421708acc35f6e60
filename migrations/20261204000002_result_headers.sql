-- Response headers served with a result (the `http` kind keeps some of the upstream's, and its status as
-- Upstream-Status): a JSON array of [name, value] pairs. NULL for results without any.
ALTER TABLE results ADD COLUMN headers jsonb;
