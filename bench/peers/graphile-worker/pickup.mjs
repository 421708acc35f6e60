// pickup: an idle worker, one job at a time -> submit-to-handler-start latency p50/p99 (ms).
// DATABASE_URL (a fresh database), PROBES (default 200). graphile-worker's defaults (LISTEN/NOTIFY).
import { Logger, makeWorkerUtils, run } from "graphile-worker";

const connectionString = process.env.DATABASE_URL;
const probes = Number(process.env.PROBES ?? 200);

// Per-job logging would dominate the measurement.
const logger = new Logger(() => () => {});
const utils = await makeWorkerUtils({ connectionString, logger });
await utils.migrate();
let started = null;
const runner = await run({
  connectionString,
  noHandleSignals: true,
  logger,
  taskList: {
    probe: async (payload) => {
      started?.(performance.now() - payload.sent);
    },
  },
});
await new Promise((resolve) => setTimeout(resolve, 500));
const latencies = [];
// As jobdock-bench's pickup: 20 warm-up probes first, not counted.
const warmUp = 20;
for (let i = 0; i < warmUp + probes; i++) {
  const latency = new Promise((resolve) => (started = resolve));
  await utils.addJob("probe", { sent: performance.now() });
  const took = await latency;
  if (i >= warmUp) latencies.push(took);
}
await runner.stop();
await utils.release();
latencies.sort((a, b) => a - b);
const at = (q) => latencies[Math.round((latencies.length - 1) * q)];
console.log(JSON.stringify({ peer: "graphile-worker", scenario: "pickup", probes, pickup_p50_ms: at(0.5), pickup_p99_ms: at(0.99) }));
