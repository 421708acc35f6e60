-- Completion webhooks (DESIGN §12): a job may carry a callback URL; when it ends, a delivery is queued in
-- the same transaction as the change that ended it (a trigger, so every path that ends a job — workers,
-- external workers, cancels, rescues — queues one, and none can forget to). Jobs without a callback pay one
-- trigger condition per update.
ALTER TABLE jobs ADD COLUMN callback_url text;

-- One delivery per job (`job_id` is unique: replicas cannot queue it twice). `id` is the `webhook-id`,
-- the same on every attempt so receivers can drop duplicates. `body` is fixed at the first attempt, so every
-- attempt sends the same bytes even after the job is pruned.
CREATE TABLE deliveries (
    id          uuid        PRIMARY KEY,
    job_id      uuid        NOT NULL UNIQUE,
    url         text        NOT NULL,
    state       text        NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'delivered', 'failed', 'stopped')),
    attempts    integer     NOT NULL DEFAULT 0,
    last_status integer,
    last_error  text,
    body        bytea,
    next_at     timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

-- The deliverer's claim: due pending deliveries, oldest first.
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE state = 'pending';
-- Pruning finished deliveries.
CREATE INDEX deliveries_finished ON deliveries (finished_at) WHERE finished_at IS NOT NULL;

CREATE FUNCTION jobdock_queue_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO deliveries (id, job_id, url) VALUES (gen_random_uuid(), NEW.id, NEW.callback_url)
    ON CONFLICT (job_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_queue_delivery AFTER UPDATE ON jobs FOR EACH ROW
    WHEN (NEW.callback_url IS NOT NULL
          AND NEW.status IN ('succeeded', 'failed', 'cancelled')
          AND OLD.status IN ('queued', 'running'))
    EXECUTE FUNCTION jobdock_queue_delivery();
