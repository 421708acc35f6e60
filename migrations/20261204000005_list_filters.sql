-- `GET /v1/jobs?kind=` and `?queue=` walked the primary key, newest first, until they had a page: at
-- 200,000 rows a rare kind cost a scan of the whole table (27 ms), and 64 such clients held the small pool
-- long enough to slow every other request from 2 ms to 800 ms. These serve each filter in list order
-- (newest first, keyset on id). They cost every job version an entry each (BENCHMARKS.md has the price).
CREATE INDEX jobs_listed_by_kind ON jobs (kind, id);
CREATE INDEX jobs_listed_by_queue ON jobs (queue, id);
