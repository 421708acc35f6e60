#!/usr/bin/env bash
# Checks the committed OpenAPI document (openapi.yaml) against a running jobdock with real tooling:
#
#   1. generates a Python client with openapi-python-client and runs scripts/client_flow.py through it
#      (the whole asynchronous request-reply flow: submit, poll to 302, result, cancel, delete, list, batch,
#      error paths);
#   2. runs a bounded schemathesis pass (all checks, all phases including stateful tests over the 202's
#      OpenAPI links) against the server.
#
# Usage: scripts/check-openapi-clients.sh [SERVER_URL]     (default http://127.0.0.1:8080)
#
# It does not start a server: run one first, e.g.
#   DATABASE_URL=postgres://localhost/jobdock_check cargo run --release -- serve --listen 127.0.0.1:8080
# It submits jobs (in its own queues), so point it at a development database, never production.
#
# Environment:
#   SCHEMATHESIS_MAX_TIME      seconds for the whole schemathesis run (default 120)
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 50)
#   SCHEMATHESIS_SEED          seed, for reproducible runs (default: random)
#   SCHEMATHESIS_EXTRA_ARGS    more arguments for `schemathesis run`, e.g. "--phases stateful"
#   SKIP_SCHEMATHESIS=1        only the generated-client flow
#   KEEP_WORKDIR=1             keep the temporary directory (venv, generated client, reports)
#
# For developers; not part of `cargo test` or CI. Needs python3 (with venv) and access to PyPI.
set -euo pipefail

OPENAPI_PYTHON_CLIENT_VERSION=0.29.1
SCHEMATHESIS_VERSION=4.32.5

url="${1:-http://127.0.0.1:8080}"
url="${url%/}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
document="$repo/openapi.yaml"
max_time="${SCHEMATHESIS_MAX_TIME:-120}"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-50}"

say() { printf '\n==> %s\n' "$*"; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

workdir="$(mktemp -d "${TMPDIR:-/tmp}/jobdock-openapi-check.XXXXXX")"
cleanup() {
    if [[ "${KEEP_WORKDIR:-0}" == 1 ]]; then
        echo "kept $workdir"
    else
        rm -rf "$workdir"
    fi
}
trap cleanup EXIT

failures=()

say "checking that jobdock answers at $url"
if ! python3 - "$url" <<'EOF'
import sys, urllib.request
url = sys.argv[1]
try:
    with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
        print(f"{url}/readyz: {response.status} {response.read().decode()[:200]}")
except Exception as err:  # noqa: BLE001
    sys.exit(f"{url}/readyz is not ready: {err}. Start the server first (this script does not).")
EOF
then
    exit 2
fi
if python3 - "$url" "$document" <<'EOF'
import sys, urllib.request
url, path = sys.argv[1], sys.argv[2]
with urllib.request.urlopen(url + "/openapi.yaml", timeout=5) as response:
    served = response.read().decode()
sys.exit(0 if served == open(path, encoding="utf-8").read() else 1)
EOF
then
    echo "the served /openapi.yaml equals $document"
else
    echo "WARNING: the served /openapi.yaml differs from $document (an older or newer server build?);"
    echo "         the checks below use the committed document."
fi

say "creating a virtualenv in $workdir/venv (openapi-python-client $OPENAPI_PYTHON_CLIENT_VERSION, schemathesis $SCHEMATHESIS_VERSION)"
started=$(date +%s)
python3 -m venv "$workdir/venv"
venv="$workdir/venv/bin"
"$venv/pip" install --quiet --disable-pip-version-check \
    "openapi-python-client==$OPENAPI_PYTHON_CLIENT_VERSION" "schemathesis==$SCHEMATHESIS_VERSION"
echo "installed in $(elapsed "$started")"

say "generating a Python client from $document"
# post_hooks: [] skips the ruff formatting step (ruff is not installed; the code works unformatted).
cat > "$workdir/generator.yaml" <<'EOF'
package_name_override: jobdock_client
post_hooks: []
EOF
generated="$workdir/generated"
mkdir -p "$generated"
set +e
"$venv/openapi-python-client" generate --path "$document" --config "$workdir/generator.yaml" \
    --meta none --output-path "$generated/jobdock_client" > "$workdir/generator.log" 2>&1
generator_status=$?
set -e
cat "$workdir/generator.log"
if [[ $generator_status -ne 0 ]]; then
    failures+=("openapi-python-client failed (exit $generator_status)")
else
    # Known and accepted: the result's `*/*` 200 response is left out of the client (see client_flow.py).
    # Any other warning means a model or response was dropped or mis-typed: fail.
    unexpected=$(python3 - "$workdir/generator.log" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
blocks = re.split(r"\n(?=WARNING|ERROR)", text)
known = ("Unsupported content_type */*",)
for block in blocks:
    if block.startswith(("WARNING", "ERROR")) and not any(k in block for k in known):
        print(block.strip().splitlines()[0])
EOF
)
    if [[ -n "$unexpected" ]]; then
        echo "unexpected generator warnings:"
        echo "$unexpected"
        failures+=("openapi-python-client warned about more than the known */* result response")
    fi
fi

if [[ $generator_status -eq 0 ]]; then
    say "running scripts/client_flow.py through the generated client"
    started=$(date +%s)
    if PYTHONPATH="$generated" "$venv/python" "$here/client_flow.py" "$url"; then
        echo "client flow passed in $(elapsed "$started")"
    else
        failures+=("the generated-client flow failed")
    fi
fi

if [[ "${SKIP_SCHEMATHESIS:-0}" != 1 ]]; then
    say "running schemathesis (all checks, at most ${max_time}s, ${max_examples} examples per operation)"
    seed_args=()
    if [[ -n "${SCHEMATHESIS_SEED:-}" ]]; then
        seed_args=(--seed "$SCHEMATHESIS_SEED")
    fi
    # shellcheck disable=SC2206 # word splitting of the extra arguments is intended
    extra_args=(${SCHEMATHESIS_EXTRA_ARGS:-})
    started=$(date +%s)
    # Run from the work dir so no schemathesis.toml or cache from elsewhere is picked up or left behind.
    if (cd "$workdir" && SCHEMATHESIS_HOOKS="$here/schemathesis_hooks.py" "$venv/schemathesis" run "$document" \
        --url "$url" \
        --checks all \
        --max-examples "$max_examples" \
        --max-time "$max_time" \
        --generation-database none \
        --no-color \
        --report junit \
        --report-dir "$workdir/schemathesis-report" \
        "${seed_args[@]}" "${extra_args[@]}"); then
        echo "schemathesis passed in $(elapsed "$started")"
    else
        echo "schemathesis failed after $(elapsed "$started") (run with KEEP_WORKDIR=1 to keep its report)"
        failures+=("schemathesis found failures")
    fi
fi

say "summary"
if [[ ${#failures[@]} -eq 0 ]]; then
    echo "all OpenAPI client checks passed against $url"
    exit 0
fi
for failure in "${failures[@]}"; do
    echo "FAILED: $failure"
done
exit 1
