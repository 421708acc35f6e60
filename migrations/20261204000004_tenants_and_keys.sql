-- API keys and tenants (DESIGN §11).
--
-- Every job belongs to a tenant: the tenant of the key that submitted it, or `default` while the server
-- runs without keys. A constant default is stored in the catalogue, so adding the column rewrites nothing.
-- Compared byte by byte (`COLLATE "C"`): it leads the claim index, where a locale collation would make
-- every comparison a strcoll call. No CHECK: PostgreSQL re-checks every constraint on every UPDATE, and a
-- regular expression on each of a job's three row versions cost the drain about 6%; tenants come only
-- from `api_keys` (checked there) or this default.
ALTER TABLE jobs ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT 'default';

-- Idempotency keys were scoped by a digest of the Authorization header ("anonymous" without one); they are
-- now scoped by tenant. Keys taken without credentials carry over to the `default` tenant.
UPDATE jobs SET idempotency_caller = 'default' WHERE idempotency_caller = 'anonymous';
UPDATE jobs SET idempotency_caller = 'default#batch' WHERE idempotency_caller = 'anonymous#batch';

-- The claim takes from each tenant with queued jobs in turn (fair share): it finds those tenants with a
-- loose scan of this index and then reads each tenant's claimable rows in claim order from it. It replaces
-- jobs_claimable, whose order it keeps within a tenant, so the hot table gains no index.
CREATE INDEX jobs_claimable_by_tenant ON jobs (tenant, priority DESC, run_at, id) WHERE status = 'queued';
DROP INDEX jobs_claimable;

-- Keys are stored as the SHA-256 of the key: a leaked table does not let anyone in.
CREATE TABLE api_keys (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant        text        NOT NULL CHECK (tenant ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    name          text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    scopes        text[]      NOT NULL CHECK (cardinality(scopes) >= 1
                                              AND scopes <@ ARRAY['submit', 'read', 'work', 'admin']),
    key_sha256    bytea       NOT NULL UNIQUE CHECK (length(key_sha256) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
