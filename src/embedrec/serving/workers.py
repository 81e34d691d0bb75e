"""``embedrec serve --workers N``: uvicorn's supervisor, each worker on a listening socket of
its own.

uvicorn's workers share one listening socket: a new connection goes to whichever worker
accepts first, and asyncio accepts every queued connection at once, so a few keep-alive
clients often all land on one worker (two workers served 869, 883 and 1662 req/s in three
runs where one served 900). Here every worker binds a socket of its own to the same address
with ``SO_REUSEPORT``, and the kernel spreads new connections over the listening sockets by a
hash of the client's address and port.

A worker that cannot start (a model or catalogue that cannot be served, the store gone) logs
one line and exits. One of the first workers exits with uvicorn's ``STARTUP_FAILURE``, so the
supervisor stops the server instead of starting it again and again (every start would fail
alike); a replacement exits with status 1 and is replaced, while the others serve on.

uvicorn's supervisor (``Multiprocess``) is used as it is: a dead worker is replaced at once, a
hung one killed after the health check, SIGTERM stops them all. It hands its sockets to every
worker it spawns by pickling them; :class:`WorkerSocket` stands in for that socket and is
unpickled in the worker as a new socket of the worker's own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from uvicorn import Config, Server
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

log = logging.getLogger("uvicorn.error")
# set in the environment of the workers the supervisor starts first, not of their replacements
FIRST_START_VARIABLE = "EMBEDREC_FIRST_START"


@dataclass(frozen=True)
class WorkerSocket:
    """The address every worker binds; pickled as "bind a socket of your own to it"."""

    family: int
    host: str
    port: int

    def __reduce__(self) -> tuple[Any, ...]:
        return (bind_worker_socket, (self.family, self.host, self.port))


def bind_worker_socket(family: int, host: str, port: int) -> socket.socket:
    """A worker's own socket on the shared address (runs in the worker, as its sockets are
    unpickled). Bound, not listening: uvicorn's server listens once the app has loaded, and
    the kernel sends a socket connections only from then on, so a loading worker gets none."""
    try:
        return _reuse_port_socket(family, host, port)
    except OSError as exc:
        # as uvicorn's own bind failure: the supervisor stops instead of respawning forever
        log.error("worker cannot bind %s:%d: %s", host, port, exc)
        sys.exit(STARTUP_FAILURE)


SIGHUP_IGNORED = (
    "SIGHUP ignored: embedrec serve neither reloads nor restarts on it (the token and settings "
    "are read at start: restart the service; a new model: POST /v1/admin/reload)"
)


def _hangup_ignored(_signum: int, _frame: Any) -> None:
    log.warning(SIGHUP_IGNORED)


class StopServer(Server):
    """uvicorn's server (one worker), stopping on SIGTERM or SIGINT as uvicorn's does (new
    connections refused, the requests in flight waited for up to the shutdown timeout) and
    then exiting with status 0, as the supervisor of ``--workers N`` and gunicorn do: a stop
    that was asked for and done is no failure. uvicorn's own raises the signal again once
    stopped, so the process ended by it (status 143 for SIGTERM) where N workers gave 0.
    SIGHUP is ignored with a warning, as in the supervisor."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only
            return
        handlers = {sig: self.handle_exit for sig in (signal.SIGINT, signal.SIGTERM)}
        handlers[signal.SIGHUP] = _hangup_ignored
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, telling the workers it starts first that they are (a failed
    start of one of them stops the server), and ignoring SIGHUP, as one worker does: uvicorn
    restarts every worker on it, which reads nothing new (the token and settings come from
    the parent, read at start) while one worker's process ended at once."""

    def init_processes(self) -> None:
        os.environ[FIRST_START_VARIABLE] = "1"  # spawned processes inherit it
        try:
            super().init_processes()
        finally:
            os.environ.pop(FIRST_START_VARIABLE, None)

    def handle_hup(self) -> None:
        log.warning(SIGHUP_IGNORED)


def ignore_hangup_in_worker() -> None:
    """A worker ignores SIGHUP (sent to the whole process group when a terminal closes, say):
    its supervisor says so once, and decides."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def first_start() -> bool:
    """Whether this worker is one of those the supervisor started first."""
    return os.environ.get(FIRST_START_VARIABLE) == "1"


@contextlib.contextmanager
def exit_on_termination() -> Iterator[None]:
    """While a worker loads its app, SIGTERM or SIGINT ends it at once (status 0).

    uvicorn's handlers only mark the server to stop, which it does once the app has loaded
    and started: a SIGTERM to ``embedrec serve`` while a worker loaded (a start, a
    replacement) waited for the whole load, minutes at 1M listings, past
    ``--shutdown-timeout``, and for ever for a worker waiting on a lock. Nothing is served
    yet, so no request is cut short, and a shared file being written is dropped, never left
    half written (atomic writes). uvicorn's handlers are back once the app is loaded."""

    def stop(signum: int, _frame: Any) -> None:
        log.info("worker %d stopped while loading (%s)", os.getpid(), signal.Signals(signum).name)
        raise SystemExit(0)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_workers(config: Config) -> bool:
    """Serve ``config.app`` (an import string) with ``config.workers`` processes under
    uvicorn's supervisor, each accepting on a socket of its own; returns once they stopped:
    False when the server stopped because a worker could not start (its log says why)."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    # SO_REUSEPORT lets any process of this user bind the port too: refuse a port that is in
    # use (a second server would silently take a share of the connections), as uvicorn does
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((config.host, config.port))
        # kept bound while the server runs: it holds the port between a worker's death and its
        # replacement, and gives port 0 one number for all. It never listens, so no connection
        # waits in it (a listening socket nobody accepts on would hold its share of them).
        reserved = _reuse_port_socket(family, config.host, config.port)
    except OSError as exc:
        log.error("%s", exc)
        sys.exit(STARTUP_FAILURE)
    with reserved:
        config.port = reserved.getsockname()[1]
        shown = f"[{config.host}]" if family == socket.AF_INET6 else config.host
        log.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", shown, config.port)
        # the supervisor only passes its "sockets" on to the workers it spawns
        sockets = cast(list[socket.socket], [WorkerSocket(family, config.host, config.port)])
        supervisor = _Supervisor(config, sockets=sockets)
        supervisor.run()
    return all(process.exitcode != STARTUP_FAILURE for process in supervisor.processes)


def _reuse_port_socket(family: int, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
