// drain: N no-op jobs pre-enqueued, then a worker started -> jobs/s until the queue is empty.
// DATABASE_URL (a fresh database), JOBS (default 20000), TUNED=1 for the tuned configuration
// (24 concurrent, local queue of 500, batched completion), else graphile-worker's defaults.
import { Logger, makeWorkerUtils, run } from "graphile-worker";
import pg from "pg";

const connectionString = process.env.DATABASE_URL;
const jobs = Number(process.env.JOBS ?? 20000);
const tuned = process.env.TUNED === "1";

// Per-job logging would dominate the measurement.
const logger = new Logger(() => () => {});
const utils = await makeWorkerUtils({ connectionString, logger });
await utils.migrate();
for (let queued = 0; queued < jobs; queued += 1000) {
  const batch = Array.from({ length: Math.min(1000, jobs - queued) }, () => ({ identifier: "noop", payload: {} }));
  await utils.addJobs(batch);
}
await utils.release();

const client = new pg.Client({ connectionString });
await client.connect();
// Options that have no top-level form in 0.17 go through the preset.
const worker = tuned
  ? { connectionString, concurrentJobs: 24, maxPoolSize: 26, localQueue: { size: 500 }, completeJobBatchDelay: 0 }
  : { connectionString };
const started = performance.now();
const runner = await run({
  noHandleSignals: true,
  logger,
  taskList: { noop: async () => {} },
  preset: { worker },
});
for (;;) {
  const { rows } = await client.query("SELECT count(*)::int AS n FROM graphile_worker.jobs");
  if (rows[0].n === 0) break;
  await new Promise((resolve) => setTimeout(resolve, 5));
}
const seconds = (performance.now() - started) / 1000;
await runner.stop();
await client.end();
console.log(JSON.stringify({ peer: "graphile-worker", scenario: "drain", tuned, jobs, jobs_per_sec: jobs / seconds }));
