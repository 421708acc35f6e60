#!/usr/bin/env python3
"""The whole asynchronous request-reply flow of jobdock, through a client generated from openapi.yaml.

Run by scripts/check-openapi-clients.sh, which generates the client (package `jobdock_client`, made by
openapi-python-client) and puts it on PYTHONPATH. Every request goes through the generated operation
functions (`jobdock_client.api.<tag>.<operationId>`); nothing here calls httpx directly.

    PYTHONPATH=/path/to/generated python3 scripts/client_flow.py http://127.0.0.1:8080

Exits non-zero at the first contract violation. Known gaps of the generated client (things a user of it
trips over, not server bugs) are printed as `NOTE` lines, and each check says when a gap has gone away.
"""

from __future__ import annotations

import datetime
import sys
import time
import uuid

from jobdock_client import Client
from jobdock_client.api.health import get_health, get_readiness
from jobdock_client.api.jobs import (
    cancel_job,
    delete_job,
    get_job,
    get_job_result,
    list_jobs,
    submit_job,
    submit_jobs_batch,
)
from jobdock_client.errors import UnexpectedStatus
from jobdock_client.models import JobList, JobMonitor, JobStatus, Problem, SubmitBatch, SubmitJob
from jobdock_client.models.batch_accepted import BatchAccepted

BASE_URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
# Unique per run, so list filters only see this run's jobs.
QUEUE = f"clientflow-{uuid.uuid4().hex[:12]}"
POLL_DEADLINE_SECS = 30.0

notes: list[str] = []
checks = 0


def step(text: str) -> None:
    print(f"--- {text}", flush=True)


def ok(text: str) -> None:
    global checks
    checks += 1
    print(f"    ok: {text}", flush=True)


def note(text: str) -> None:
    notes.append(text)
    print(f"    NOTE: {text}", flush=True)


def expect(condition: bool, text: str) -> None:
    if not condition:
        raise AssertionError(text)
    ok(text)


def header(response, name: str) -> str | None:
    # Response headers are not modelled by the generator: only the raw httpx headers carry them.
    return response.headers.get(name)


def expect_problem(response, status: int, what: str) -> Problem:
    expect(response.status_code == status, f"{what}: status {status} (got {response.status_code})")
    ctype = header(response, "content-type") or ""
    expect(ctype.startswith("application/problem+json"), f"{what}: content-type problem+json (got {ctype!r})")
    problem = response.parsed
    expect(isinstance(problem, Problem), f"{what}: body parsed as Problem (got {type(problem).__name__})")
    expect(problem.status == status, f"{what}: problem.status == {status}")
    # The generator renames the `type` member to `type_` (it shadows a Python builtin).
    expect(bool(problem.type_) and bool(problem.title), f"{what}: problem has type (as `type_`) and title")
    return problem


def submit(client: Client, body: SubmitJob, **kwargs) -> JobMonitor:
    response = submit_job.sync_detailed(client=client, body=body, **kwargs)
    if response.status_code != 202:
        raise AssertionError(f"submit {body.kind}: expected 202, got {response.status_code}: {response.content[:300]!r}")
    ok(f"submit {body.kind}: 202")
    monitor = response.parsed
    expect(isinstance(monitor, JobMonitor), "submit: body parsed as JobMonitor")
    expect(header(response, "location") == f"/v1/jobs/{monitor.id}", "submit: Location is the status monitor")
    retry_after = header(response, "retry-after")
    expect(retry_after is not None and retry_after.isdigit(), f"submit: Retry-After is whole seconds ({retry_after!r})")
    return monitor


def poll_until(client: Client, job_id: uuid.UUID, done, what: str):
    """Polls get_job (redirects not followed) until done(response) is true."""
    deadline = time.monotonic() + POLL_DEADLINE_SECS
    polls = 0
    while True:
        response = get_job.sync_detailed(job_id, client=client)
        polls += 1
        if done(response):
            ok(f"{what} after {polls} poll(s)")
            return response
        if response.status_code != 200:
            raise AssertionError(f"{what}: unexpected {response.status_code} while polling: {response.content[:300]!r}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {response.parsed.status} after {POLL_DEADLINE_SECS}s")
        # Retry-After is whole seconds (1 while due); poll faster so the run stays short.
        time.sleep(0.1)


def fetch_result(client: Client, job_id: uuid.UUID, what: str) -> bytes:
    response = get_job_result.sync_detailed(job_id, client=client)
    expect(response.status_code == 200, f"{what}: get_job_result 200 (got {response.status_code})")
    if response.parsed is None:
        note(
            "get_job_result: the 200 response (`*/*`, format binary) is dropped by the generator "
            "(warning 'Unsupported content_type */*'): `.parsed` is None, the result is only in `.content`, "
            "and `sync()`/`asyncio()` return None for a success"
        )
    else:
        ok(f"{what}: get_job_result 200 is parsed ({type(response.parsed).__name__}): the */* gap is fixed")
    return response.content


def main() -> int:
    # Redirects are not followed (the generated client's default); see the follow_redirects check below.
    client = Client(base_url=BASE_URL, timeout=10.0)
    strict = Client(base_url=BASE_URL, timeout=10.0, raise_on_unexpected_status=True)

    step("health")
    health = get_health.sync(client=client)
    expect(health is not None and health.status == "ok", "get_health: status ok")
    ready = get_readiness.sync_detailed(client=client)
    expect(ready.status_code == 200, "get_readiness: 200")

    step("echo job: submit, poll to 302, fetch the result")
    echo_payload = {"hello": "world", "n": [1, 2, 3]}
    echo = submit(client, SubmitJob(kind="echo", payload=echo_payload, queue=QUEUE))
    expect(echo.status in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED), f"submit: status {echo.status.value}")
    found = poll_until(client, echo.id, lambda r: r.status_code == 302, "get_job answers 302 for the echo job")
    expect(header(found, "location") == f"/v1/jobs/{echo.id}/result", "302: Location is the result")
    expect(header(found, "retry-after") is None, "302: no Retry-After")
    expect(header(found, "cache-control") == "no-store", "302: Cache-Control no-store")
    expect(isinstance(found.parsed, JobMonitor) and found.parsed.status == JobStatus.SUCCEEDED,
           "302: body parsed as JobMonitor, status succeeded")
    expect(found.parsed.result_url == f"/v1/jobs/{echo.id}/result", "302: result_url set")
    body = fetch_result(client, echo.id, "echo")
    import json

    expect(json.loads(body) == echo_payload, "echo result equals the payload")

    step("echo job: redirect=false gives 200 with result_url")
    plain = get_job.sync_detailed(echo.id, client=client, redirect=False)
    expect(plain.status_code == 200, "get_job(redirect=False): 200")
    expect(plain.parsed.result_url == f"/v1/jobs/{echo.id}/result", "get_job(redirect=False): result_url")

    step("sleep job {ms: 500}: running with progress, then 302, result {slept_ms: 500}")
    slept = submit(client, SubmitJob(kind="sleep", payload={"ms": 500}, queue=QUEUE))
    pending = get_job.sync_detailed(slept.id, client=client)
    if pending.status_code == 200:
        expect(pending.parsed.status in (JobStatus.QUEUED, JobStatus.RUNNING), "sleep: pending status while running")
        expect((header(pending, "retry-after") or "").isdigit(), "sleep: Retry-After while pending")
    poll_until(client, slept.id, lambda r: r.status_code == 302, "get_job answers 302 for the sleep job")
    expect(json.loads(fetch_result(client, slept.id, "sleep")) == {"slept_ms": 500}, "sleep result is {slept_ms: 500}")

    step("strict client (raise_on_unexpected_status=True) on the result")
    try:
        strict_result = get_job_result.sync_detailed(slept.id, client=strict)
        ok(f"strict get_job_result did not raise ({strict_result.status_code})")
    except UnexpectedStatus as err:
        note(
            "get_job_result with raise_on_unexpected_status=True raises UnexpectedStatus(200) on success, "
            f"because the 200 response was dropped from the generated client ({err.status_code})"
        )

    step("follow_redirects=True on the status monitor")
    following = Client(base_url=BASE_URL, timeout=10.0, follow_redirects=True)
    try:
        followed = get_job.sync_detailed(slept.id, client=following)
        if isinstance(followed.parsed, JobMonitor):
            ok("get_job with follow_redirects=True parsed a JobMonitor")
        else:
            note(f"get_job with follow_redirects=True: parsed is {type(followed.parsed).__name__}")
    except Exception as err:  # noqa: BLE001 - the point is to show what a user hits
        note(
            "get_job with Client(follow_redirects=True) crashes: httpx follows the 302 to the result, and the "
            "generated code parses the result body as a JobMonitor "
            f"({type(err).__name__}: {err}); keep redirects off, or use redirect=False"
        )

    step("unknown kind -> 400 problem")
    bad = submit_job.sync_detailed(client=client, body=SubmitJob(kind="no-such-kind", queue=QUEUE))
    problem = expect_problem(bad, 400, "unknown kind")
    expect("no-such-kind" in (problem.detail or ""), "unknown kind: detail names the kind")
    bad_sleep = submit_job.sync_detailed(client=client, body=SubmitJob(kind="sleep", payload={"ms": "soon"}, queue=QUEUE))
    expect_problem(bad_sleep, 400, "sleep with a bad payload")

    step("unknown id -> 404 problem on every id operation")
    missing = uuid.uuid4()
    expect_problem(get_job.sync_detailed(missing, client=client), 404, "get_job unknown id")
    expect_problem(get_job_result.sync_detailed(missing, client=client), 404, "get_job_result unknown id")
    expect_problem(cancel_job.sync_detailed(missing, client=client), 404, "cancel_job unknown id")
    expect_problem(delete_job.sync_detailed(missing, client=client), 404, "delete_job unknown id")

    step("idempotency: same key same request -> same job; different request -> 422")
    key = f"clientflow-{uuid.uuid4()}"
    first = submit(client, SubmitJob(kind="echo", payload={"k": 1}, queue=QUEUE), idempotency_key=key)
    again = submit(client, SubmitJob(kind="echo", payload={"k": 1}, queue=QUEUE), idempotency_key=key)
    expect(first.id == again.id, "same Idempotency-Key, same request: same job")
    clash = submit_job.sync_detailed(client=client, body=SubmitJob(kind="echo", payload={"k": 2}, queue=QUEUE),
                                     idempotency_key=key)
    expect_problem(clash, 422, "same Idempotency-Key, different request")

    step("cancel a queued job (run_at in the future) -> 200 cancelled")
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    queued = submit(client, SubmitJob(kind="echo", queue=QUEUE, run_at=later))
    deleting_queued = delete_job.sync_detailed(queued.id, client=client)
    expect_problem(deleting_queued, 409, "delete_job on a queued job")
    cancelled = cancel_job.sync_detailed(queued.id, client=client)
    expect(cancelled.status_code == 200, f"cancel_job queued: 200 (got {cancelled.status_code})")
    expect(isinstance(cancelled.parsed, JobMonitor) and cancelled.parsed.status == JobStatus.CANCELLED,
           "cancel_job queued: JobMonitor with status cancelled")
    again_cancelled = cancel_job.sync_detailed(queued.id, client=client)
    expect(again_cancelled.status_code == 200, "cancel_job again: 200 (already cancelled)")
    monitor = get_job.sync_detailed(queued.id, client=client)
    expect(monitor.status_code == 200 and monitor.parsed.status == JobStatus.CANCELLED, "get_job: cancelled, 200")
    expect(header(monitor, "retry-after") is None, "cancelled: no Retry-After")
    if not isinstance(monitor.parsed.error, dict):
        note(f"JobMonitor.error is untyped (Any): got {type(monitor.parsed.error).__name__}")
    else:
        note("JobMonitor.error is typed Any (a plain dict), not a Problem model: no attribute access")
    expect_problem(get_job_result.sync_detailed(queued.id, client=client), 409, "get_job_result on a cancelled job")

    step("cancel a running sleep job -> 202, then it ends cancelled")
    long = submit(client, SubmitJob(kind="sleep", payload={"ms": 60000}, queue=QUEUE))
    poll_until(client, long.id, lambda r: r.status_code == 200 and r.parsed.status == JobStatus.RUNNING,
               "the long sleep job is running")
    requested = cancel_job.sync_detailed(long.id, client=client)
    if requested.status_code == 202:
        ok("cancel_job running: 202")
        expect(header(requested, "location") == f"/v1/jobs/{long.id}", "cancel 202: Location is the monitor")
        expect(requested.parsed.cancel_requested is True, "cancel 202: cancel_requested")
    else:
        expect(requested.status_code == 200, f"cancel_job running: 202 or 200 (got {requested.status_code})")
    poll_until(client, long.id, lambda r: r.status_code == 200 and r.parsed.status == JobStatus.CANCELLED,
               "the long sleep job ends cancelled")
    progress = get_job.sync_detailed(long.id, client=client).parsed.progress
    if progress is not None:
        note(f"JobMonitor.progress is typed Any: {progress!r}")

    step("cancel and delete a succeeded job")
    expect_problem(cancel_job.sync_detailed(echo.id, client=client), 409, "cancel_job on a succeeded job")
    deleted = delete_job.sync_detailed(echo.id, client=client)
    expect(deleted.status_code == 204, f"delete_job succeeded job: 204 (got {deleted.status_code})")
    expect_problem(get_job.sync_detailed(echo.id, client=client), 404, "get_job after delete")
    expect_problem(get_job_result.sync_detailed(echo.id, client=client), 404, "get_job_result after delete")
    expect(delete_job.sync_detailed(queued.id, client=client).status_code == 204, "delete_job cancelled job: 204")

    step("batch: two jobs accepted; an invalid one rejects the batch with its index")
    batch = submit_jobs_batch.sync_detailed(client=client, body=SubmitBatch(jobs=[
        SubmitJob(kind="echo", payload={"i": 0}, queue=QUEUE),
        SubmitJob(kind="sleep", payload={"ms": 10}, queue=QUEUE),
    ]))
    expect(batch.status_code == 202, f"submit_jobs_batch: 202 (got {batch.status_code})")
    expect(isinstance(batch.parsed, BatchAccepted) and len(batch.parsed.jobs) == 2, "batch: two monitors")
    expect([j.kind for j in batch.parsed.jobs] == ["echo", "sleep"], "batch: monitors in the order sent")
    rejected = submit_jobs_batch.sync_detailed(client=client, body=SubmitBatch(jobs=[
        SubmitJob(kind="echo", queue=QUEUE),
        SubmitJob(kind="no-such-kind", queue=QUEUE),
    ]))
    problem = expect_problem(rejected, 400, "batch with an unknown kind")
    expect(problem.index == 1, f"batch 400: index names the invalid job (got {problem.index!r})")
    for job in batch.parsed.jobs:
        poll_until(client, job.id, lambda r: r.status_code == 302, f"batch job {job.kind} succeeded")

    step("list_jobs: filters and keyset pagination")
    listed = list_jobs.sync_detailed(client=client, queue=QUEUE, limit=500)
    expect(listed.status_code == 200 and isinstance(listed.parsed, JobList), "list_jobs: 200 JobList")
    ids = [j.id for j in listed.parsed.jobs]
    expect(len(ids) == 5, f"list_jobs: this run's jobs are listed ({len(ids)})")
    expect(listed.parsed.next_cursor is None, "list_jobs: last page has next_cursor null")
    pages, cursor, seen = 0, None, []
    while True:
        kwargs = {"cursor": cursor} if cursor else {}
        page = list_jobs.sync_detailed(client=client, queue=QUEUE, limit=2, **kwargs)
        expect(page.status_code == 200, f"list_jobs page {pages}: 200")
        pages += 1
        seen += [j.id for j in page.parsed.jobs]
        cursor = page.parsed.next_cursor
        if not cursor:
            break
    expect(seen == ids, f"list_jobs: {pages} pages of 2 give the same jobs in the same order")
    by_status = list_jobs.sync_detailed(client=client, queue=QUEUE, status=JobStatus.SUCCEEDED)
    expect(all(j.status == JobStatus.SUCCEEDED for j in by_status.parsed.jobs), "list_jobs: status filter")
    by_kind = list_jobs.sync_detailed(client=client, queue=QUEUE, kind="sleep")
    expect(by_kind.parsed.jobs and all(j.kind == "sleep" for j in by_kind.parsed.jobs), "list_jobs: kind filter")
    expect_problem(list_jobs.sync_detailed(client=client, cursor="not-a-cursor"), 400, "list_jobs bad cursor")

    step("async variant (asyncio_detailed)")
    import asyncio

    async def async_flow() -> None:
        monitor = await submit_job.asyncio(client=client, body=SubmitJob(kind="echo", payload="async", queue=QUEUE))
        assert isinstance(monitor, JobMonitor), monitor
        for _ in range(300):
            response = await get_job.asyncio_detailed(monitor.id, client=client)
            if response.status_code == 302:
                break
            await asyncio.sleep(0.1)
        result = await get_job_result.asyncio_detailed(monitor.id, client=client)
        assert result.status_code == 200 and json.loads(result.content) == "async", result

    asyncio.run(async_flow())
    ok("async flow: submit, poll to 302, fetch the result")

    print(f"\nclient flow: {checks} checks passed against {BASE_URL}")
    distinct = list(dict.fromkeys(notes))
    if distinct:
        print(f"{len(distinct)} note(s) on the generated client:")
        for text in distinct:
            print(f"  - {text}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as err:
        print(f"\nFAILED: {err}", file=sys.stderr)
        sys.exit(1)
