"""``embedrec serve --workers N``: uvicorn's supervisor, each worker on a listening socket of
its own.

uvicorn's workers share one listening socket: a new connection goes to whichever worker
accepts first, and asyncio accepts every queued connection at once, so a few keep-alive
clients often all land on one worker (two workers served 869, 883 and 1662 req/s in three
runs where one served 900). Here every worker binds a socket of its own to the same address
with ``SO_REUSEPORT``, and the kernel spreads new connections over the listening sockets by a
hash of the client's address and port.

uvicorn's supervisor (``Multiprocess``) is used as it is: a dead worker is replaced at once, a
hung one killed after the health check, SIGTERM stops them all. It hands its sockets to every
worker it spawns by pickling them; :class:`WorkerSocket` stands in for that socket and is
unpickled in the worker as a new socket of the worker's own.
"""

from __future__ import annotations

import logging
import socket
import sys
from dataclasses import dataclass
from typing import Any, cast

from uvicorn import Config
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

log = logging.getLogger("uvicorn.error")


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


def run_workers(config: Config) -> None:
    """Serve ``config.app`` (an import string) with ``config.workers`` processes under
    uvicorn's supervisor, each accepting on a socket of its own; returns once they stopped."""
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
        Multiprocess(config, sockets=sockets).run()


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
