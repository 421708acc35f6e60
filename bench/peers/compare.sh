#!/usr/bin/env bash
# jobdock next to graphile-worker on the same PostgreSQL, in one run: the drain and pickup scenarios of
# jobdock-bench, and the same scenarios for graphile-worker 0.17.3 (defaults, and tuned for drain).
# Each measurement gets a fresh database. Prints each run as a JSON line, then medians side by side.
#
#   bench/peers/compare.sh                 # RUNS=3 JOBS=20000 PROBES=200
#   RUNS=1 JOBS=2000 PROBES=20 bench/peers/compare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS="${RUNS:-3}"
JOBS="${JOBS:-20000}"
PROBES="${PROBES:-200}"
export PGHOST="${PGHOST:-127.0.0.1}"
export PGUSER="${PGUSER:-$(id -un)}"
BASE_URL="postgres://${PGUSER}@${PGHOST}/postgres"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

echo "== installing graphile-worker (npm ci)" >&2
(cd bench/peers/graphile-worker && npm ci --silent --no-audit --no-fund >/dev/null)
echo "== building jobdock-bench" >&2
cargo build --release --quiet -p jobdock-bench

peer() { # script, extra env...
  local script="$1"; shift
  local db="peer_bench_$$_$RANDOM"
  createdb "$db"
  (cd bench/peers/graphile-worker && env DATABASE_URL="postgres://${PGUSER}@${PGHOST}/$db" "$@" node "$script") | tail -n1
  dropdb "$db"
}
# Interleaved, so each run compares the two queues within the same minutes: the shared machine's speed
# drifts (by 1.5x within minutes on 2026-12-03), and a peer measured after all of jobdock's runs would
# see a different machine.
for run in $(seq "$RUNS"); do
  echo "== run $run of $RUNS: drain ($JOBS jobs) and pickup ($PROBES probes), jobdock then graphile-worker" >&2
  ./target/release/jobdock-bench drain --jobs "$JOBS" --runs 1 --database-url "$BASE_URL" | tail -n1 | tee -a "$out"
  peer drain.mjs JOBS="$JOBS" TUNED=0 | tee -a "$out"
  peer drain.mjs JOBS="$JOBS" TUNED=1 | tee -a "$out"
  ./target/release/jobdock-bench pickup --probes "$PROBES" --runs 1 --database-url "$BASE_URL" | tail -n1 | tee -a "$out"
  peer pickup.mjs PROBES="$PROBES" | tee -a "$out"
done

python3 - "$out" <<'PY'
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
def med(values):
    return statistics.median(values) if values else float("nan")
jd_drain = [l["median"] for l in lines if l.get("scenario") == "drain" and "peer" not in l]
jd_pickup = [l["median"] for l in lines if l.get("scenario") == "pickup" and "peer" not in l]
gw = [l for l in lines if l.get("peer") == "graphile-worker"]
gw_default = [l["jobs_per_sec"] for l in gw if l["scenario"] == "drain" and not l["tuned"]]
gw_tuned = [l["jobs_per_sec"] for l in gw if l["scenario"] == "drain" and l["tuned"]]
gw_pickup = [l for l in gw if l["scenario"] == "pickup"]
# Ratios within each run (measured minutes apart at most), then their median.
vs_tuned = [j["jobs_per_sec"] / g for j, g in zip(jd_drain, gw_tuned) if g > 0]
vs_ceiling = [j["jobs_per_sec"] / j["sql_ceiling_jobs_per_sec"] for j in jd_drain if j["sql_ceiling_jobs_per_sec"] > 0]
print("\nmedians                         jobdock     graphile-worker", file=sys.stderr)
print(f"drain jobs/s                 {med([j['jobs_per_sec'] for j in jd_drain]):>10.0f}     {med(gw_default):>8.0f} (defaults)  {med(gw_tuned):>8.0f} (tuned)", file=sys.stderr)
print(f"drain SQL-only ceiling       {med([j['sql_ceiling_jobs_per_sec'] for j in jd_drain]):>10.0f}", file=sys.stderr)
print(f"pickup p50 ms                {med([p['pickup_p50_ms'] for p in jd_pickup]):>10.2f}     {med([p['pickup_p50_ms'] for p in gw_pickup]):>8.2f}", file=sys.stderr)
print(f"pickup p99 ms                {med([p['pickup_p99_ms'] for p in jd_pickup]):>10.2f}     {med([p['pickup_p99_ms'] for p in gw_pickup]):>8.2f}", file=sys.stderr)
print(f"drain vs graphile tuned      {med(vs_tuned):>10.2f}x  (median of per-run ratios)", file=sys.stderr)
print(f"drain vs SQL-only ceiling    {med(vs_ceiling):>10.2f}x", file=sys.stderr)
print(json.dumps({"compare": "graphile-worker", "runs": len(jd_drain),
                  "drain_vs_graphile_tuned": round(med(vs_tuned), 2),
                  "drain_vs_sql_ceiling": round(med(vs_ceiling), 2)}))
PY
