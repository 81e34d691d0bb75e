"""HTTP/1.1 connections with bounds on a request's head (request line and headers) and on
the pauses in its body.

uvicorn's httptools protocol bounds neither: one header of 300 MB was read into a worker's
memory, and a connection that sends nothing, or a byte of its head every few seconds, was
held open for good, so a few thousand such clients took every file descriptor a worker may
open. Here a head larger than :data:`MAX_HEAD_BYTES` answers 431, and one that has not
arrived :data:`HEAD_TIMEOUT_S` seconds after the connection was made, or after its first
byte, answers 408 (a connection that sent nothing is closed without an answer, as an idle
keep-alive one is); either closes the connection. A body that stops arriving for
:data:`BODY_IDLE_TIMEOUT_S` seconds (a client that sends its head and a few bytes, then
nothing, was waited for until the shutdown) answers 408 as well, and the app sees the
client gone. A body's size is bounded in ``serving/metrics.py``.
"""

from __future__ import annotations

import asyncio
import collections
import http
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# the request line with every header: far above what browsers and load balancers send
# (nginx's default buffers hold 32 KiB), and what a worker holds per connection at most
MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 10.0
# the longest pause between a body's bytes, while the app waits for them
BODY_IDLE_TIMEOUT_S = 30.0
# after a refusal, what the client still sends is read and dropped this long before the
# connection closes: closed with unread data, it is reset, and the client may never read
# the answer
LINGER_S = 1.0
log = logging.getLogger("uvicorn.error")
# why a request is refused before the app sees it, and its status; counted per process
# (REFUSED) for /metrics, since the app never sees these requests
REFUSALS = {"head_too_large": 431, "head_timeout": 408, "body_paused": 408}
REFUSED: collections.Counter[str] = collections.Counter()
# the parser callbacks and connection hooks this protocol extends: a uvicorn without one of
# them is one it was not written for (see http_protocol)
EXTENDED = (
    "connection_made", "connection_lost", "data_received", "on_message_begin",
    "on_headers_complete", "on_body", "on_message_complete",
)  # fmt: skip


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a size limit and a deadline on each request's head
    (``uvicorn.Config(http=...)``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._head_started = False  # a byte of the head being read has arrived
        self._heads_completed = 0
        # the first request's head is due from the connection on: uvicorn's keep-alive
        # timeout only starts after a response
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._body_timer: asyncio.TimerHandle | None = None
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # answered: the rest of the request is dropped
            return
        completed = self._heads_completed
        super().data_received(data)
        # httptools keeps a header in memory until its end: counted by what is fed while a
        # head is unfinished (a chunk in which one ends and the next begins is not counted,
        # so a head may pass the limit by one read, 256 KiB at most)
        if self._head_timer is None or completed != self._heads_completed:
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            log.warning("request head over %d bytes refused (431)", MAX_HEAD_BYTES)
            message = f"request line and headers larger than {MAX_HEAD_BYTES} bytes"
            self._refuse("head_too_large", message, self._may_answer_head())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        self._start_head_timer()  # a request after a keep-alive pause: its head is due now

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        self._head_bytes, self._head_started = 0, False
        self._heads_completed += 1
        super().on_headers_complete()
        self._restart_body_timer()  # stopped at once where the request has no body

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._restart_body_timer()

    def on_message_complete(self) -> None:
        self._stop_body_timer()
        super().on_message_complete()

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _restart_body_timer(self) -> None:
        self._stop_body_timer()
        self._body_timer = self.loop.call_later(BODY_IDLE_TIMEOUT_S, self._body_timed_out)

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None or cycle.response_complete:
            return
        if self.flow.read_paused:  # the app has not read what came: not the client's pause
            self._restart_body_timer()
            return
        log.warning("request body paused for %g s: connection closed (408)", BODY_IDLE_TIMEOUT_S)
        answer = not cycle.response_started
        # the app, waiting for the rest, reads the client as gone; what it answers is dropped
        cycle.disconnected = True
        cycle.message_event.set()
        message = f"request body paused for over {BODY_IDLE_TIMEOUT_S:g} s"
        self._refuse("body_paused", message, answer)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if not self._head_started:  # nothing sent: closed as an idle keep-alive connection
            self.transport.close()
            return
        log.warning("request head not received within %g s: connection closed (408)",
                    HEAD_TIMEOUT_S)  # fmt: skip
        message = f"request line and headers not received within {HEAD_TIMEOUT_S:g} s"
        self._refuse("head_timeout", message, self._may_answer_head())

    def _may_answer_head(self) -> bool:
        """Whether a head can be answered: not while an earlier (pipelined) request's answer
        is still to be written."""
        return self.cycle is None or self.cycle.response_complete

    def _refuse(self, reason: str, message: str, answer: bool) -> None:
        """Answer the status of ``reason`` with the API's error body (where ``answer``),
        count it and close the connection."""
        self._stop_head_timer()
        self._stop_body_timer()
        REFUSED[reason] += 1
        status = REFUSALS[reason]
        if answer:
            body = json.dumps({"error": message, "field": None}, separators=(",", ":")).encode()
            phrase = http.HTTPStatus(status).phrase
            head: list[Any] = [f"HTTP/1.1 {status} {phrase}\r\n".encode()]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head += [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
                body,
            ]
            self.transport.write(b"".join(head))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self._refused = True
        self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def http_protocol() -> type[HttpToolsProtocol] | str:
    """The protocol for ``uvicorn.Config(http=...)``: the bounded one, or uvicorn's own
    (``"auto"``, with a warning that heads and bodies are unbounded) where the installed
    uvicorn lacks what it extends, so that another uvicorn never stops the service."""
    missing = [name for name in EXTENDED if not callable(getattr(HttpToolsProtocol, name, None))]
    if missing:
        log.warning(
            "this uvicorn's httptools protocol lacks %s: request heads and bodies are served "
            "without the size and time bounds of embedrec.serving.protocol",
            ", ".join(missing),
        )
        return "auto"
    return BoundedHttpToolsProtocol
