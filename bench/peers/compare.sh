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
cargo build --release --quiet --bin jobdock-bench

echo "== jobdock: drain ($JOBS jobs) and pickup ($PROBES probes), $RUNS runs each" >&2
./target/release/jobdock-bench drain --jobs "$JOBS" --runs "$RUNS" --database-url "$BASE_URL" | tail -n1 | tee -a "$out"
./target/release/jobdock-bench pickup --probes "$PROBES" --runs "$RUNS" --database-url "$BASE_URL" | tail -n1 | tee -a "$out"

peer() { # script, extra env...
  local script="$1"; shift
  local db="peer_bench_$$_$RANDOM"
  createdb "$db"
  (cd bench/peers/graphile-worker && env DATABASE_URL="postgres://${PGUSER}@${PGHOST}/$db" "$@" node "$script") | tail -n1
  dropdb "$db"
}
echo "== graphile-worker: drain (defaults and tuned) and pickup, $RUNS runs each" >&2
for _ in $(seq "$RUNS"); do
  peer drain.mjs JOBS="$JOBS" TUNED=0 | tee -a "$out"
  peer drain.mjs JOBS="$JOBS" TUNED=1 | tee -a "$out"
  peer pickup.mjs PROBES="$PROBES" | tee -a "$out"
done

python3 - "$out" <<'PY'
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
def med(rows, key):
    values = [r[key] for r in rows if key in r]
    return statistics.median(values) if values else float("nan")
jd = {l["scenario"]: l["median"] for l in lines if "scenario" in l and "peer" not in l}
gw = [l for l in lines if l.get("peer") == "graphile-worker"]
drain_default = med([l for l in gw if l["scenario"] == "drain" and not l["tuned"]], "jobs_per_sec")
drain_tuned = med([l for l in gw if l["scenario"] == "drain" and l["tuned"]], "jobs_per_sec")
pickup = [l for l in gw if l["scenario"] == "pickup"]
print("\nmedians                         jobdock     graphile-worker", file=sys.stderr)
print(f"drain jobs/s                 {jd['drain']['jobs_per_sec']:>10.0f}     {drain_default:>8.0f} (defaults)  {drain_tuned:>8.0f} (tuned)", file=sys.stderr)
print(f"drain SQL-only ceiling       {jd['drain']['sql_ceiling_jobs_per_sec']:>10.0f}", file=sys.stderr)
print(f"pickup p50 ms                {jd['pickup']['pickup_p50_ms']:>10.2f}     {med(pickup, 'pickup_p50_ms'):>8.2f}", file=sys.stderr)
print(f"pickup p99 ms                {jd['pickup']['pickup_p99_ms']:>10.2f}     {med(pickup, 'pickup_p99_ms'):>8.2f}", file=sys.stderr)
print(f"drain vs graphile tuned      {jd['drain']['jobs_per_sec'] / drain_tuned:>10.2f}x", file=sys.stderr)
PY
