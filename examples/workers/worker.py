#!/usr/bin/env python3
"""A reference external worker for jobdock, in Python with the standard library only.

It claims jobs of `external` kinds over HTTP (a long poll), keeps each job's lease alive from a
heartbeat thread (which also reports progress and notices cancellation), and reports the outcome with
`complete` or `fail`. Copy it, and put your own work in HANDLERS.

    python3 examples/workers/worker.py --server http://127.0.0.1:8080 --kinds textstats

The protocol (DESIGN section 8):
    POST /v1/worker/claim                {"worker_id", "kinds", "max_jobs", "wait_secs", "lease_secs"}
    POST /v1/worker/jobs/{id}/heartbeat  {"lease_token", "progress"} -> {"lease_expires_at", "cancel_requested"}
    POST /v1/worker/jobs/{id}/complete   header Lease-Token, body = the result, with its Content-Type
    POST /v1/worker/jobs/{id}/fail       {"lease_token", "error": {"title", ...}, "retryable", "retry_after_secs"}
A 409 `lease-lost` means another worker now owns the job: stop, and report nothing.
"""

import argparse
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request


class LeaseLost(Exception):
    """The lease token no longer holds the job (rescued, timed out, or ended)."""


class Cancelled(Exception):
    """A client cancelled the job; the handler stopped."""


class Retry(Exception):
    """A failure worth another attempt, optionally after `after_secs`."""

    def __init__(self, message, after_secs=None):
        super().__init__(message)
        self.after_secs = after_secs


class Job:
    """What a handler sees: the payload, progress reports, and whether it should stop."""

    def __init__(self, claimed):
        self.id = claimed["id"]
        self.kind = claimed["kind"]
        self.payload = claimed["payload"]
        self.attempt = claimed["attempt"]
        self.lease_token = claimed["lease_token"]
        self.stop = threading.Event()
        self._progress = None
        self._lock = threading.Lock()

    def progress(self, percent=None, message=None):
        with self._lock:
            self._progress = {"percent": percent, "message": message}

    def take_progress(self):
        with self._lock:
            progress, self._progress = self._progress, None
            return progress

    def sleep(self, seconds):
        """Waits, but wakes at once when the job should stop."""
        if self.stop.wait(seconds):
            raise Cancelled()


def textstats(job):
    """The example kind of examples/jobdock.toml: counts and hashes a text, slowly if asked."""
    text = job.payload["text"]
    delay = job.payload.get("delay_ms", 0) / 1000
    for step in range(1, 5):
        job.sleep(delay / 4)
        job.progress(step * 25, f"step {step} of 4")
    result = {
        "words": len(text.split()),
        "lines": len(text.splitlines()),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    return "application/json", json.dumps(result).encode()


# kind -> function(job) returning (content_type, body bytes). Raise Retry for a retryable failure; any
# other exception fails the job for good.
HANDLERS = {"textstats": textstats}


class Client:
    def __init__(self, server, api_key=None, timeout=90):
        self.server = server.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def post(self, path, body=None, headers=None, data=None, content_type="application/json"):
        if body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data or b"", method="POST")
        request.add_header("Content-Type", content_type)
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            problem = json.loads(raw) if raw else {}
            if err.code == 409 and problem.get("type", "").endswith("lease-lost"):
                raise LeaseLost() from None
            raise RuntimeError(f"{path}: {err.code} {problem.get('detail', problem)}") from None


class Worker:
    def __init__(self, client, kinds, worker_id, max_jobs, lease_secs):
        self.client = client
        self.kinds = kinds
        self.worker_id = worker_id
        self.max_jobs = max_jobs
        self.lease_secs = lease_secs
        self.stopping = threading.Event()
        self.done = 0
        self._done_lock = threading.Lock()

    def claim(self):
        _, answer = self.client.post("/v1/worker/claim", {
            "worker_id": self.worker_id,
            "kinds": self.kinds,
            "max_jobs": self.max_jobs,
            "wait_secs": 20,
            "lease_secs": self.lease_secs,
        })
        return [Job(claimed) for claimed in answer["jobs"]]

    def heartbeat(self, job, finished):
        """Renews the lease every third of it (at least every 2 s, so progress shows promptly); tells the
        handler to stop on cancel or a lost lease."""
        while not finished.wait(min(self.lease_secs / 3, 2)):
            try:
                _, answer = self.client.post(f"/v1/worker/jobs/{job.id}/heartbeat", {
                    "lease_token": job.lease_token,
                    "progress": job.take_progress(),
                })
                if answer["cancel_requested"]:
                    job.stop.set()
            except LeaseLost:
                job.lost = True
                job.stop.set()
                return
            except Exception as err:  # a network blip: the lease has two more beats before it runs out
                log(f"job {job.id}: heartbeat failed: {err}")

    def run_job(self, job):
        handler = HANDLERS.get(job.kind)
        job.lost = False
        finished = threading.Event()
        beat = threading.Thread(target=self.heartbeat, args=(job, finished), daemon=True)
        beat.start()
        try:
            try:
                if handler is None:
                    raise ValueError(f"this worker has no handler for kind {job.kind!r}")
                content_type, body = handler(job)
            finally:
                finished.set()
                beat.join()
            if job.lost:
                raise LeaseLost()
            self.client.post(f"/v1/worker/jobs/{job.id}/complete", data=body,
                             content_type=content_type, headers={"Lease-Token": job.lease_token})
            log(f"job {job.id}: succeeded")
        except LeaseLost:
            log(f"job {job.id}: lease lost; another worker has it")
        except Cancelled:
            self.fail(job, {"title": "Cancelled", "detail": "stopped on request"}, retryable=False)
            log(f"job {job.id}: cancelled")
        except Retry as err:
            self.fail(job, {"title": "Retryable failure", "detail": str(err)}, True, err.after_secs)
        except Exception as err:
            self.fail(job, {"title": "The job failed", "detail": str(err)}, retryable=False)
        with self._done_lock:
            self.done += 1

    def fail(self, job, error, retryable, retry_after_secs=None):
        body = {"lease_token": job.lease_token, "error": error, "retryable": retryable}
        if retry_after_secs is not None:
            body["retry_after_secs"] = retry_after_secs
        try:
            self.client.post(f"/v1/worker/jobs/{job.id}/fail", body)
            log(f"job {job.id}: failed ({error['title']}: {error.get('detail', '')})")
        except LeaseLost:
            log(f"job {job.id}: lease lost before the failure was reported")

    def run(self, exit_after=None):
        while not self.stopping.is_set():
            if exit_after is not None and self.done >= exit_after:
                return
            try:
                jobs = self.claim()
            except Exception as err:
                log(f"claim failed: {err}; retrying in 2 s")
                self.stopping.wait(2)
                continue
            threads = [threading.Thread(target=self.run_job, args=(job,)) for job in jobs]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()


def log(message):
    print(f"worker: {message}", file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("JOBDOCK_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--api-key", default=os.environ.get("JOBDOCK_API_KEY"))
    parser.add_argument("--kinds", default=",".join(HANDLERS), help="comma-separated kinds to claim")
    parser.add_argument("--worker-id", default=f"{socket.gethostname()}-{os.getpid()}")
    parser.add_argument("--max-jobs", type=int, default=4, help="jobs claimed (and run) at once")
    parser.add_argument("--lease-secs", type=int, default=30)
    parser.add_argument("--exit-after", type=int, help="stop after this many jobs (for tests)")
    args = parser.parse_args()

    worker = Worker(Client(args.server, args.api_key), args.kinds.split(","), args.worker_id,
                    args.max_jobs, args.lease_secs)
    # Finish the jobs in hand, claim no more. (A claim waiting in its long poll ends within 20 s.)
    signal.signal(signal.SIGTERM, lambda *_: worker.stopping.set())
    log(f"claiming {args.kinds} from {args.server}")
    try:
        worker.run(args.exit_after)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
