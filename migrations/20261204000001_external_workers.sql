-- External workers (DESIGN §8).
-- The lease a worker asked for when it claimed the job over HTTP: its heartbeats extend the lease by as
-- much. NULL for jobs claimed in-process, whose runtime passes its lease with every heartbeat.
ALTER TABLE jobs ADD COLUMN lease_secs integer CHECK (lease_secs BETWEEN 1 AND 86400);
-- The lease token that wrote a result: a worker that repeats its `complete` after a lost reply is told
-- it succeeded, and anyone else is told the lease is gone. NULL for results written in-process.
ALTER TABLE results ADD COLUMN lease_token uuid;
