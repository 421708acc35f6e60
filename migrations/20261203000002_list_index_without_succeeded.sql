-- jobs_status_id indexed every row and took a new entry at every status change: three per job on the hot
-- path. Listing by status needs it only for statuses no other index serves well: `queued` (a backlog can be
-- large; jobs_claimable is not in id order) and the rare `failed` and `cancelled`. `running` jobs are few
-- (at most the workers' slots) and come from jobs_leased; `succeeded` is most of the table, so the primary
-- key in id order finds them at once.
DROP INDEX jobs_status_id;
CREATE INDEX jobs_listed_by_status ON jobs (status, id) WHERE status IN ('queued', 'failed', 'cancelled');
