"""Prometheus metrics: requests and latency per endpoint, index and store size, and the
service's troubles (a store in error, a failed reload, skipped listings, refused writes).

Each worker process keeps its own counters (a scrape reaches one worker); the ``worker``
label is the process id so scrapes of different workers can be told apart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from embedrec.serving.protocol import REFUSALS, REFUSED
from embedrec.serving.store import FAILURE_REASONS

# latency buckets in seconds: most reads take about a millisecond, reloads seconds
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST
SHUTTING_DOWN = (
    "the server is shutting down and stopped this request (--shutdown-timeout); a write may "
    "or may not be stored: repeat it (PUT and DELETE are idempotent)"
)
log = logging.getLogger("embedrec.serving")


class Metrics:
    """The service's metrics in a registry of their own (several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        worker = ("worker",)
        self.requests = Counter(
            "embedrec_requests",
            "HTTP requests by endpoint, method and status",
            ("endpoint", "method", "status", *worker),
            registry=self.registry,
        )
        self.latency = Histogram(
            "embedrec_request_seconds",
            "Request latency by endpoint",
            ("endpoint", "method", *worker),
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.listings = Gauge(
            "embedrec_index_listings", "Live listings in the index", worker, registry=self.registry
        )
        self.seq = Gauge(
            "embedrec_store_seq", "Last store change applied", worker, registry=self.registry
        )
        self.generation = Gauge(
            "embedrec_model_generation", "Reload generation served", worker, registry=self.registry
        )
        # the service's troubles, as /healthz/ready reports them, for alerts
        self.loaded_at = Gauge(
            "embedrec_model_loaded_timestamp_seconds",
            "When the model served was loaded (Unix time)",
            worker,
            registry=self.registry,
        )
        self.skipped = Gauge(
            "embedrec_store_skipped_listings",
            "Stored listings the served model cannot serve (readiness 'skipped')",
            worker,
            registry=self.registry,
        )
        self.store_error = Gauge(
            "embedrec_store_error",
            "1 while the store cannot be reached or the last write failed (readiness "
            "'store_error'), else 0",
            worker,
            registry=self.registry,
        )
        self.reload_error = Gauge(
            "embedrec_reload_error",
            "1 while the last reload recorded in the store failed here (readiness "
            "'reload_error'), else 0",
            worker,
            registry=self.registry,
        )
        self.write_failures = Counter(
            "embedrec_store_write_failures",
            "Writes (and reload records) the store refused, answered 503, by reason",
            ("reason", *worker),
            registry=self.registry,
        )
        self.worker = str(os.getpid())
        for reason in FAILURE_REASONS:  # every series from the start: rate() sees the first
            self.write_failures.labels(reason, self.worker)
        self.registry.register(_RefusedRequests(self.worker))

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status), self.worker).inc()
        self.latency.labels(endpoint, method, self.worker).observe(seconds)

    def write_failed(self, reason: str) -> None:
        """Count a write the store refused (``StoreUnavailable.reason``)."""
        self.write_failures.labels(reason, self.worker).inc()

    def render(
        self,
        listings: int,
        seq: int,
        generation: int,
        *,
        loaded_at: float = 0.0,
        skipped: int = 0,
        store_error: bool = False,
        reload_error: bool = False,
    ) -> bytes:
        self.listings.labels(self.worker).set(listings)
        self.seq.labels(self.worker).set(seq)
        self.generation.labels(self.worker).set(generation)
        self.loaded_at.labels(self.worker).set(loaded_at)
        self.skipped.labels(self.worker).set(skipped)
        self.store_error.labels(self.worker).set(int(store_error))
        self.reload_error.labels(self.worker).set(int(reload_error))
        return generate_latest(self.registry)


class _RefusedRequests:
    """Requests the HTTP protocol refused before the app saw them (``serving/protocol.py``),
    read from its per-process counts at each scrape."""

    def __init__(self, worker: str) -> None:
        self.worker = worker

    def collect(self) -> Any:
        family = CounterMetricFamily(
            "embedrec_requests_refused",
            "Requests refused before the app by reason (head_too_large: 431; head_timeout, "
            "body_paused: 408); not in embedrec_requests",
            labels=("reason", "status", "worker"),
        )
        for reason, status in REFUSALS.items():
            family.add_metric((reason, str(status), self.worker), REFUSED[reason])
        yield family


class MetricsAndLimits:
    """ASGI middleware: times every request by route, refuses bodies over ``max_body`` and
    paths whose percent-escapes are no UTF-8 text."""

    def __init__(
        self, app: Callable, metrics: Metrics, max_body: int, larger: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.larger = larger or {}  # paths allowed bodies over max_body (bulk writes)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}
        answered = False

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                status["code"], answered = message["status"], True
            await send(message)

        try:
            limit = self.larger.get(scope["path"], self.max_body)
            declared = _content_length(scope)
            if not _path_is_text(scope):
                # the server decodes such escapes to U+FFFD: %FF and %FE would name one id
                message = "path: its percent-escapes are no UTF-8 text"
                await _refuse(send_status, 422, message, "path")
            elif declared is not None and declared > limit:
                await _too_large(send_status, limit)
            elif declared is None and scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_limited(receive, limit)
                if body is None:
                    await _too_large(send_status, limit)
                else:
                    await self.app(scope, _replay(body, receive), send_status)
            else:
                await self.app(scope, receive, send_status)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when its shutdown timeout passes
            # (a client that never sends all of its body, a write waiting for a database
            # that does not answer): an answer saying so, not a traceback and a bare 500
            if answered:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # answered: the task goes on as not cancelled
            log.warning("%s %s cancelled: the server is shutting down", scope["method"],
                        scope["path"])  # fmt: skip
            await _refuse(send_status, 503, SHUTTING_DOWN, None, {b"retry-after": b"2"})
        except Exception as exc:
            # answered here, inside the CORS middleware (a page reads the 500 as one) and not
            # raised on: Starlette's outermost handler would answer it and raise it again, for
            # uvicorn to log its traceback a second time
            if answered:
                raise
            log.exception("unexpected error in %s %s", scope["method"], scope["path"])
            await _refuse(send_status, 500, f"internal error ({type(exc).__name__})", None)
        finally:
            # the route template, not the path: one series per endpoint, not per listing
            endpoint = getattr(scope.get("route"), "path", None) or "unmatched"
            seconds = time.perf_counter() - started
            self.metrics.observe(endpoint, scope["method"], status["code"], seconds)

    async def _read_limited(self, receive: Callable, limit: int) -> bytes | None:
        """The whole body of a chunked request (no Content-Length), None when too large.

        Read here because FastAPI turns errors raised while it reads a body into 400.
        """
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Callable) -> Callable:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _content_length(scope: dict) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _path_is_text(scope: dict) -> bool:
    """Whether the request's path, its percent-escapes decoded, is UTF-8 text."""
    raw = scope.get("raw_path")
    try:
        if raw is not None:
            unquote_to_bytes(raw.split(b"?", 1)[0]).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


async def _too_large(send: Callable, limit: int) -> None:
    await _refuse(send, 413, f"request body larger than {limit} bytes", "body")


async def _refuse(
    send: Callable, status: int, message: str, field: str | None, headers: dict | None = None
) -> None:
    body = json.dumps({"error": message, "field": field}, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                *(headers or {}).items(),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
