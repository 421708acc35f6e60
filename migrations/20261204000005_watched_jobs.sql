-- Waiting for a job without polling (DESIGN §12): long polls, `Prefer: wait` and event streams wake on a
-- notification when a job they wait for changes.
--
-- Only jobs somebody waits for notify: a NOTIFY serializes the commits of every transaction that sends one
-- (PostgreSQL holds a database-wide lock from pre-commit until after the commit record is flushed), so a
-- notification on every completion would cost the drain its group commit. A waiter marks the job
-- `watched` once; from then on every change the monitor shows (each one moves `updated_at` or `status`)
-- sends the job's id on `jobdock_changed`. Jobs nobody waits for pay for one trigger condition per update,
-- evaluated without calling the function.
ALTER TABLE jobs ADD COLUMN watched boolean NOT NULL DEFAULT false;

CREATE FUNCTION jobdock_notify_watched() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jobdock_changed', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_watched AFTER UPDATE ON jobs FOR EACH ROW
    WHEN (OLD.watched AND (OLD.updated_at, OLD.status) IS DISTINCT FROM (NEW.updated_at, NEW.status))
    EXECUTE FUNCTION jobdock_notify_watched();
