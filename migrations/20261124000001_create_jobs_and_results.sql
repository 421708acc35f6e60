-- The job queue: one row per job, and one results row per succeeded job.
--
-- Status machine (see src/job.rs for which component moves a job out of each state):
--   queued -> running -> succeeded | failed | cancelled
--   running -> queued (retry with backoff, lease expired, released at shutdown)
--   queued -> cancelled
-- Terminal states (succeeded, failed, cancelled) never change.

CREATE TABLE jobs (
    id                uuid        PRIMARY KEY,
    kind              text        NOT NULL CHECK (length(kind) BETWEEN 1 AND 255),
    queue             text        NOT NULL DEFAULT 'default' CHECK (length(queue) BETWEEN 1 AND 255),
    status            text        NOT NULL DEFAULT 'queued'
                                  CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    payload           jsonb       NOT NULL DEFAULT '{}',
    priority          integer     NOT NULL DEFAULT 0,
    run_at            timestamptz NOT NULL DEFAULT now(),
    attempt           integer     NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts      integer     NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    timeout_secs      integer     NOT NULL DEFAULT 300 CHECK (timeout_secs >= 1),
    progress          jsonb,
    error             jsonb,
    cancel_requested  boolean     NOT NULL DEFAULT false,
    -- Lease: who runs the job and until when. A fresh token per claim fences out a worker that lost it.
    lease_token       uuid,
    lease_expires_at  timestamptz,
    worker_id         text,
    -- Idempotency: a key is unique per caller; the fingerprint tells a repeat from a different request.
    idempotency_caller text,
    idempotency_key   text        CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_fingerprint text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,

    CONSTRAINT jobs_running_has_lease
        CHECK ((status = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CONSTRAINT jobs_finished_iff_terminal
        CHECK ((status IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CONSTRAINT jobs_idempotency_pair
        CHECK ((idempotency_key IS NULL) = (idempotency_caller IS NULL))
);

-- Serves the claim query exactly: claimable rows only, in claim order.
CREATE INDEX jobs_claimable ON jobs (priority DESC, run_at, id) WHERE status = 'queued';
-- Serves the rescuer: running rows by lease expiry.
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE status = 'running';
-- Serves the pruner: finished rows by age.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
-- Serves the list filter on status with keyset pagination on id. Filters on kind and queue walk the
-- primary key instead: another index on the hot table would tax every insert.
CREATE INDEX jobs_status_id ON jobs (status, id);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (idempotency_caller, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The hot table churns: vacuum it early so dead tuples from status flips do not pile up.
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02,
                      fillfactor = 85);

CREATE TABLE results (
    job_id       uuid        PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    content_type text        NOT NULL,
    body         bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
