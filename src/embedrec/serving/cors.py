"""Cross-origin requests (``embedrec serve --cors-origin``): the web pages a browser lets call
the API.

Off by default: no CORS header, and a preflight ``OPTIONS`` answers 405 as any method a path
does not take. With origins named, Starlette's ``CORSMiddleware`` answers each request by one
of three policies:

- an origin named: every method its path takes, with the ``Authorization`` header that writes
  need. The token is one the page sends itself, not a cookie: credentials mode stays off;
- any other origin where ``*`` is named: the reads only (the methods of routes that need no
  token), without ``Authorization``, and ``Access-Control-Allow-Origin: *``, never the origin
  reflected: a page anywhere may search, none may write;
- any other origin otherwise: no CORS header; its preflight is refused (400).

A preflight is answered with the methods its path takes (HEAD wherever GET), not one list for
the whole API, and counted in the metrics under its route as the other requests are.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match

from embedrec.serving.metrics import Metrics

ANY_ORIGIN = "*"
# scheme://host[:port], as a browser writes an Origin header: no path, query or user
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#@\s]+")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
# beside the headers a page may always read: when to try a write again (503)
EXPOSED_HEADERS = ("Retry-After",)
PREFLIGHT_MAX_AGE_S = 600
NAMED, ANYONE, REFUSED = "named", "anyone", "refused"


def check_origin(value: str) -> str:
    """``value`` as a browser sends it in ``Origin`` (scheme and host in lower case), or
    ``*``; ValueError saying why no browser sends it otherwise (a trailing slash, a path, a
    default port), which would never match."""
    if value == ANY_ORIGIN:
        return value
    origin = value.lower()
    if origin == "null":
        raise ValueError(
            "'null' is the origin of sandboxed pages and local files, which any page can "
            "claim; name the page's origin, e.g. https://shop.example"
        )
    if not _ORIGIN.fullmatch(origin):
        raise ValueError(
            f"{value!r} is no origin: scheme://host[:port] as a browser sends it, without a "
            "path or a trailing slash (e.g. https://shop.example)"
        )
    scheme, _, rest = origin.partition("://")
    if not rest.isascii():
        rest = _punycode(value, rest)
        origin = f"{scheme}://{rest}"
    default = _DEFAULT_PORTS.get(scheme)
    if default and rest.endswith(default):
        raise ValueError(
            f"{value!r}: browsers leave out the default port; name "
            f"{scheme}://{rest.removesuffix(default)}"
        )
    return origin


def _punycode(value: str, host_port: str) -> str:
    """A host with non-ASCII letters as browsers send it in ``Origin``: in punycode
    (``bücher.example`` is ``xn--bcher-kva.example``)."""
    host, colon, port = host_port.rpartition(":")
    if not (colon and port.isdigit()):
        host, port = host_port, ""
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{value!r}: its host is no domain name a browser would send") from None
    return ascii_host + (f":{port}" if port else "")


def path_methods(
    routes: Iterable[BaseRoute], scope: dict, leave_out: Collection[int] = ()
) -> tuple[BaseRoute | None, list[str]]:
    """The first route of the request's path (None: no route) and the methods the path's
    routes answer, sorted, HEAD wherever GET is (the server answers a GET route's HEAD);
    ``leave_out``: ids of routes whose methods are not counted."""
    first, methods = None, set()
    for route in routes:
        allowed = getattr(route, "methods", None)
        if not allowed or route.matches(scope)[0] is Match.NONE:
            continue
        first = first or route
        if id(route) not in leave_out:
            methods |= allowed
    if "GET" in methods:
        methods.add("HEAD")
    return first, sorted(methods)


class RouteCors:
    """ASGI middleware: CORS for ``origins`` by the policies of the module docstring.
    ``writes``: the routes that need the token, which ``*`` does not open."""

    def __init__(
        self,
        app: Callable,
        origins: Collection[str],
        routes: Iterable[BaseRoute],
        writes: Iterable[BaseRoute],
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.named = tuple(o for o in origins if o != ANY_ORIGIN)
        self.anyone = ANY_ORIGIN in origins
        self.routes = routes
        self.writes = {id(route) for route in writes}
        self.metrics = metrics
        self._policies: dict[tuple[str, tuple[str, ...]], _Preflights] = {}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        policy = NAMED if origin in self.named else ANYONE if self.anyone else REFUSED
        if (
            scope["method"] == "OPTIONS"
            and origin is not None
            and "access-control-request-method" in headers
        ):
            leave_out = self.writes if policy == ANYONE else ()
            route, methods = path_methods(self.routes, scope, leave_out)
            if route is not None:  # else no route: the app's 404, with the headers below
                await self._preflight(self._policy(policy, methods), route, scope, receive, send)
                return
        await self._policy(policy, ()).simple_response(scope, receive, send, headers)

    async def _preflight(
        self, middleware: _Preflights, route: BaseRoute, scope: dict, receive: Callable,
        send: Callable,
    ) -> None:  # fmt: skip
        started, status = time.perf_counter(), 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await middleware(scope, receive, send_status)
        finally:
            if self.metrics is not None:
                endpoint = getattr(route, "path", "unmatched")
                self.metrics.observe(endpoint, "OPTIONS", status, time.perf_counter() - started)

    def _policy(self, policy: str, methods: Iterable[str]) -> _Preflights:
        key = (policy, tuple(methods))
        middleware = self._policies.get(key)
        if middleware is None:
            middleware = self._policies[key] = _Preflights(
                self.app,
                allow_origins=(ANY_ORIGIN,) if policy == ANYONE else self.named,
                allow_methods=key[1],
                # the bearer token of a write: only pages of the origins named may send it
                allow_headers=("Authorization",) if policy == NAMED else (),
                # no cookies or HTTP authentication: never an origin reflected with them
                allow_credentials=False,
                expose_headers=() if policy == REFUSED else EXPOSED_HEADERS,
                max_age=PREFLIGHT_MAX_AGE_S,
            )
        return middleware


class _Preflights(CORSMiddleware):
    """Starlette's CORS middleware, whose refused preflight answers as the API's errors do:
    JSON naming the request header at fault and why (Starlette: ``Disallowed CORS method``)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        field, message = self._refusal(request_headers)
        # an origin refused learns nothing of what others may do
        kept = ("vary",) if field == "Origin" else ("vary", "access-control-")
        headers = {k: v for k, v in response.headers.items() if k.startswith(kept) and v}
        body = {"error": f"CORS preflight refused: {message}", "field": field}
        return JSONResponse(body, status_code=response.status_code, headers=headers)

    def _refusal(self, request_headers: Headers) -> tuple[str, str]:
        origin = request_headers["origin"]
        if not self.is_allowed_origin(origin):
            return "Origin", (
                f"origin {origin!r} may not call this API from a browser (the server's "
                "--cors-origin names those that may)"
            )
        method = request_headers["access-control-request-method"]
        writes = " (writes only from origins named by --cors-origin, not '*')"
        if method not in self.allow_methods:
            allowed = ", ".join(self.allow_methods) or "none"
            note = writes if self.allow_all_origins else ""
            return "Access-Control-Request-Method", (
                f"{method} is not allowed on this path from this origin; allowed: {allowed}{note}"
            )
        requested = request_headers.get("access-control-request-headers", "")
        for name in (h.strip() for h in requested.split(",")):
            if name.lower() not in self.allow_headers:
                note = writes if self.allow_all_origins else ""
                allowed = ", ".join(self.allow_headers)
                return "Access-Control-Request-Headers", (
                    f"header {name!r} is not allowed from this origin; allowed: {allowed}{note}"
                )
        return "Access-Control-Request-Private-Network", (
            "requests from public pages to a private network are not allowed"
        )
