-- A lease token exists only while its job is running (before, a token without an expiry was allowed on a
-- job in any other state). Fenced writes can then match a job by id and token alone: leaving
-- `status = 'running'` out of their WHERE clause keeps the planner from reaching the rows through the
-- partial index on running jobs, a plan that cost a scan of every job that had run since the last vacuum.
ALTER TABLE jobs DROP CONSTRAINT jobs_running_has_lease;
ALTER TABLE jobs ADD CONSTRAINT jobs_running_has_lease
    CHECK ((status = 'running') = (lease_token IS NOT NULL)
           AND (status <> 'running' OR lease_expires_at IS NOT NULL));
