"""schemathesis hooks for jobdock, loaded by scripts/check-openapi-clients.sh (SCHEMATHESIS_HOOKS).

Drops the "schema-valid request rejected" failures (positive_data_acceptance, ST202) that the contract
intends and that no schema can express:

- `kind` is a plain string on purpose (DESIGN.md, PITFALLS.md): a schema-valid but unknown kind, or a
  payload the kind rejects, is answered 400 by the server, not by the schema.
- `payload` is any JSON value in the schema, but PostgreSQL cannot store NUL characters, so a payload
  holding "\u0000" is answered 400 (PITFALLS.md); no JSON Schema for "any value" can say so.
- floats beyond 1e-300..1e300 in magnitude in `payload` are answered 400: jsonb stores them but prints them
  as 300-digit decimals that do not parse back into a float.
- the same `Idempotency-Key` with a different request is answered 422 by design.

Every other rejection of schema-valid data (unknown fields, bad cursors, ...) still fails the run.
"""

from __future__ import annotations

import json

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

# Substrings of a 400 problem's `detail` that mean "the kind said no", not "the schema is wrong".
KIND_REJECTIONS = (
    "unknown kind `",
    "invalid payload for kind `",
    "`payload` must not contain NUL characters",
    "which cannot be stored and read back exactly",
)


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    if not isinstance(failure, RejectedPositiveData):
        return True
    try:
        problem = json.loads(response.content)
    except ValueError:
        return True
    if not isinstance(problem, dict):
        return True
    detail = str(problem.get("detail", ""))
    kind = str(problem.get("type", ""))
    if response.status_code == 400 and any(marker in detail for marker in KIND_REJECTIONS):
        return False
    if response.status_code == 422 and kind.endswith(":idempotency-key-reused"):
        return False
    return True
