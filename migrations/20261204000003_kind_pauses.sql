-- Back-pressure (DESIGN §9): an upstream that answers 429 or 503 with Retry-After pauses its whole kind.
-- Until `paused_until`, no replica claims the kind's jobs: they wait without spending attempts.
CREATE TABLE kind_pauses (
    kind          text        PRIMARY KEY CHECK (length(kind) BETWEEN 1 AND 255),
    paused_until  timestamptz NOT NULL
);
