"""The HTTP API: thin routes over the Recommender and its Catalogue.

``create_app(settings)`` builds the application; ``app_from_env()`` builds it from
``EMBEDREC_*`` environment variables, for uvicorn's ``--factory`` with several workers.
"""

import functools
import hmac
import json
import logging
import os
import random
import re
import sys
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, cast

import anyio
import numpy as np
import pandas as pd
from fastapi import Body, Depends, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from fastapi.staticfiles import StaticFiles
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException

from embedrec.bundle import BundleError
from embedrec.data.errors import DataError
from embedrec.data.jsonable import plain
from embedrec.geo import LAT_LON_COLUMNS, distance_km
from embedrec.index.catalogue import Catalogue
from embedrec.index.filters import FilterError, allowed_mask, filters_from_mapping
from embedrec.retrieval.results import Results, UnknownIdError
from embedrec.serving import schemas as s
from embedrec.serving.cors import RouteCors, check_origin, path_methods
from embedrec.serving.filter_params import EXCLUDE, RADIUS, RESULTS, filter_parameters
from embedrec.serving.metrics import CONTENT_TYPE, Metrics, MetricsAndLimits
from embedrec.serving.state import BatchError, ServingState, Settings, StateHolder
from embedrec.serving.store import StoreUnavailable, open_store
from embedrec.version import __version__

log = logging.getLogger("embedrec.serving")
STATIC = Path(__file__).parent / "static"
# the error answers each operation documents: reads are open (no 401 or 403) and a GET has
# no body to be too large, so a client generated from the schema expects what can come
READ_ERRORS = {code: {"model": s.ErrorBody} for code in (404, 422)}
BODY_ERRORS = {**READ_ERRORS, 413: {"model": s.ErrorBody}}
# writes, reloads: 503 (with Retry-After) while the store cannot be reached
WRITE_ERRORS = {
    **BODY_ERRORS,
    **{code: {"model": s.ErrorBody} for code in (401, 403, 503)},
}
PROMETHEUS_TEXT = {
    200: {
        "description": "Prometheus text format",
        "content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
    }
}
RETRY_AFTER_S = 2
# writes, reloads and rollbacks run in threads of their own, at most this many at once (the
# others wait without a thread): they wait for the store, a slow or locked database up to its
# statement timeout, and in the thread pool that serves the reads a burst of them took every
# thread, so that reads and /metrics waited for the database too
WRITE_THREADS = 16
PLACEHOLDER = (
    "<!doctype html><title>embedrec</title><h1>embedrec</h1>"
    "<p>The explorer page is not installed. The API is described at "
    '<a href="/docs">/docs</a> (<a href="/openapi.json">openapi.json</a>).</p>'
)
# the explorer page loads its script, styles and data from this server only, and is never framed
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
OUTSIDE_MODEL_ROOT = (
    "reloads are limited to model directories under the server's model root (--model-root)"
)
# query parameters that are not filters
NOT_FILTERS = {RESULTS}
SINGLE_VALUED = {"near", "within_km"}
NAMED_FILTERS = {*RADIUS, EXCLUDE}  # filters that are no column's
LOCATION_COLUMNS = {name for pair in LAT_LON_COLUMNS for name in pair}


class ApiError(Exception):
    """An error answer: HTTP status, message and the parameter or field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def create_app(settings: Settings) -> FastAPI:
    """The service for ``settings``: loads the model, replays the store, defines the routes."""
    check_token_text(settings.token, "the settings")  # before anything is loaded
    cors_origins = [check_origin(origin) for origin in settings.cors_origins]
    store = open_store(settings.store)
    try:
        holder = StateHolder(settings, store)
    except BaseException:
        store.close()
        raise
    metrics = Metrics()
    holder.on_write_failure = metrics.write_failed
    if settings.token is None:
        log.warning("no API token (EMBEDREC_API_TOKEN or --token-file): serving read-only")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        holder.close()  # the follower thread, if any, before its store's connections
        store.close()

    app = FastAPI(
        title="embedrec",
        version=__version__,
        summary="Similar listings, recommendations and cold-start listings over HTTP.",
        responses={422: {"model": s.ErrorBody}},
        lifespan=lifespan,
        # a path with a trailing slash is no route (404): Starlette's redirect to the path
        # without it took its Location's host from the request's Host header
        redirect_slashes=False,
    )
    app.state.holder = holder
    bearer = HTTPBearer(auto_error=False, description="the API token set at start-up")
    _add_error_handlers(app)
    model_root = os.path.realpath(settings.model_root or Path(settings.model_dir).parent)

    async def state() -> ServingState:
        # async: a sync dependency would cost each request an extra trip to the thread pool
        return holder.get()

    State = Annotated[ServingState, Depends(state)]

    def check_token(given: str) -> None:
        if settings.token is None:
            raise ApiError(
                403,
                "writes are disabled: the server was started without an API token "
                "(set EMBEDREC_API_TOKEN or --token-file)",
                "Authorization",
            )
        if not hmac.compare_digest(given.encode(), settings.token.encode()):
            raise ApiError(401, "missing or wrong bearer token", "Authorization")

    async def writer(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        check_token(credentials.credentials if credentials else "")

    def sends_token(request: Request) -> bool:
        """Whether the caller sends the API token (an operator). A read never fails for a
        wrong one."""
        scheme, given = get_authorization_scheme_param(request.headers.get("Authorization"))
        if settings.token is None or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.encode(), settings.token.encode())

    def shown_model_dir(request: Request, st: ServingState) -> str | None:
        """The served directory's path for a caller that sends the API token, else None: a
        path on the server is for its operators."""
        return st.model_dir if sends_token(request) else None

    def shown_error(request: Request, st: ServingState, text: str | None) -> str | None:
        """An error of readiness whole for a caller that sends the API token; for others
        each path on the server in it replaced by its file's or directory's name."""
        if text is None or sends_token(request):
            return text
        known = (
            settings.model_dir,
            holder.settings.model_dir,
            st.model_dir,
            model_root,
            settings.listings,
            settings.cache_dir,
            holder.reload_error_dir,
            getattr(holder.store, "path", None),  # SQLite's file (PostgreSQL's: no path)
        )
        return names_only(text, known)

    Writer = Depends(writer)
    write_threads = anyio.CapacityLimiter(WRITE_THREADS)

    def on_write_threads(endpoint: Callable) -> Callable:
        """The (sync) route ``endpoint`` run in a thread limited by ``write_threads``, not in
        the thread pool that serves the reads."""

        @functools.wraps(endpoint)  # FastAPI reads the parameters of ``endpoint``
        async def run(*args: Any, **kwargs: Any) -> Any:
            call = functools.partial(endpoint, *args, **kwargs)
            # abandoned when cancelled (a shutdown past its timeout), not waited for
            return await anyio.to_thread.run_sync(
                call, limiter=write_threads, abandon_on_cancel=True
            )

        return run

    # routes defined from here on check the token of a write before FastAPI reads its body
    app.router.route_class = _token_first_route(writer, check_token)
    K = Annotated[s.QueryCount, Query(ge=1, le=s.MAX_K, description="number of results")]

    # the filters are read from the whole query string (any listing column filters); these
    # entries only document the served catalogue's columns
    documented_filters = {
        "parameters": filter_parameters(holder.current.catalogue.schema, reserved=NOT_FILTERS)
    }
    Id = Annotated[str, PathParam(min_length=1, max_length=256)]

    # ------------------------------------------------------------------ reads
    # async: served on the event loop. The search takes about a millisecond, less than the
    # hop to the thread pool and back costs the hottest endpoint under load.
    @app.get(
        "/v1/listings/{listing_id}/similar",
        response_model=s.SimilarResponse,
        responses=READ_ERRORS,
        openapi_extra=documented_filters,
    )
    async def similar(listing_id: Id, request: Request, k: K = 10) -> Response:
        """Listings most similar to one listing. Any listing column filters, e.g. ``fuel=diesel``
        (comma-separated, or repeated: each value whole) or ``year_min=2018``."""
        # the state without ``State``: FastAPI's resolution of a dependency took about 2% of
        # the hottest endpoint's time in a worker under load
        st = holder.get()
        filters = _filters(st, _query_mapping(request))
        query = st.listing_id(listing_id)
        catalogue = st.catalogue  # once: a compaction swaps in another, with other row numbers
        row = catalogue.rows_of([query])
        if row[0] < 0:  # removed: not embedded from training fields
            raise ApiError(404, f"unknown listing_id {query!r}", "listing_id")
        (answer,) = st.retriever.similar([query], k, filters)
        origin = _near(filters) or _location(catalogue, row)
        return _answer(query=query, results=_distances(answer, origin))

    @app.get(
        "/v1/users/{user_id}/recommendations",
        response_model=s.RecommendationsResponse,
        responses=READ_ERRORS,
        openapi_extra=documented_filters,
    )
    def recommendations(user_id: Id, request: Request, st: State, k: K = 10) -> Response:
        """Listings for a known user, excluding those they have seen; filters as for similar."""
        filters = _filters(st, _query_mapping(request))
        query = st.user_id(user_id)
        (answer,) = st.retriever.recommend([query], k, filters)
        return _answer(query=query, results=_distances(answer, _near(filters)))

    @app.post("/v1/recommendations", response_model=s.SessionResponse, responses=BODY_ERRORS)
    def session_recommendations(request_body: s.SessionRequest, st: State) -> Response:
        """Listings for an anonymous visitor, from the listings viewed in their session."""
        mapping = request_body.filters or {}
        filters = _filters(st, mapping, within="filters.")
        session = [st.listing_id(str(i)) for i in request_body.session]
        try:
            answer = st.retriever.recommend_session(session, request_body.k, filters)
        except UnknownIdError as exc:
            raise ApiError(404, str(exc), "session") from None
        except FilterError as exc:  # one the search finds (a radius without coordinates)
            raise _filter_error(exc, mapping, within="filters.") from None
        return _answer(
            query=answer.query, results=_distances(answer, _near(filters)), unknown=answer.unknown
        )

    @app.get("/v1/listings:random", responses=READ_ERRORS)
    @app.get("/v1/random-listing", responses=READ_ERRORS)
    def random_listing(st: State) -> s.RandomListing:
        """A random live listing id."""
        return s.RandomListing(listing_id=_random_live(st))

    @app.get("/v1/listings/{listing_id}", responses=READ_ERRORS)
    def get_listing(listing_id: Id, st: State) -> s.ListingFields:
        """A live listing's fields."""
        return s.ListingFields(**_fields(st, st.listing_id(listing_id)))

    @app.get("/v1/projection", responses=READ_ERRORS)
    def projection(
        st: State,
        request: Request,
        method: Annotated[str, Query(pattern="^pca$")] = "pca",
        sample: Annotated[s.QueryCount, Query(ge=3, le=100_000)] = 5000,
    ) -> s.ProjectionResponse:
        """2-D PCA coordinates of a sample of listing vectors (cached per model)."""
        # FastAPI took the last of sample=100&sample=5000 and let a misspelt samples=100 pass
        # for the default, where the search routes refuse either
        for key in request.query_params:
            if key not in ("method", "sample"):
                raise ApiError(422, "unknown parameter; this one takes method and sample", key)
            if len(request.query_params.getlist(key)) > 1:
                raise ApiError(422, "given more than once", key)
        try:
            return s.ProjectionResponse(**st.projection(method, sample))
        except ValueError as exc:  # e.g. fewer than three live listings
            raise ApiError(422, str(exc), "sample") from None

    @app.get("/v1/catalogue")
    def catalogue_info(st: State) -> s.CatalogueInfo:
        """The catalogue's columns: each one's kind, the query parameters that filter it and,
        for categories, its most frequent values in a sample of up to 20,000 live listings
        (kept until the next write)."""
        return s.CatalogueInfo(**st.describe(reserved=NOT_FILTERS))

    @app.get("/v1/model")
    def model_info(st: State, request: Request) -> s.ModelInfo:
        """The served model: version, training date and its evaluation figures; its
        directory's path only for a caller that sends the API token."""
        return _model_info(st, shown_model_dir(request, st))

    # probes (a HEAD, as uptime monitors send, is answered as the GET: _HeadAsGet). The
    # probes and /metrics are answered on the event loop: from memory, in no queue behind
    # slow requests waiting for threads
    @app.get("/healthz/live")
    async def live() -> s.Liveness:
        """The process answers (for a load balancer's or an orchestrator's liveness probe)."""
        return s.Liveness(status="alive")

    @app.get("/healthz/ready", responses={503: {"model": s.Readiness}})
    async def ready(st: State, request: Request, response: Response) -> s.Readiness:
        """Ready to serve: the model is loaded, its index built and the store's writes applied
        (the app is created only once its index is built; with PostgreSQL, 503 ``catching
        up`` until the follower listens and has applied the store's changes). Says so when a
        reload recorded in the store failed here, while the model before it is served, and
        when the store cannot be reached (reads are still answered: still ready)."""
        caught_up = holder.caught_up.is_set()
        if not caught_up:
            response.status_code = 503
        return s.Readiness(
            status="ready" if caught_up else "catching up",
            model_dir=shown_model_dir(request, st),
            model_name=os.path.basename(st.model_dir),
            model_id=st.model_tag,
            generation=st.generation,
            seq=st.seq,
            listings=len(st.catalogue),
            skipped=len(st.skipped),
            reload_error=shown_error(request, st, holder.reload_error),
            store_error=shown_error(request, st, holder.store_problem),
        )

    @app.get("/healthz")
    async def healthz(st: State) -> s.Health:
        return s.Health(
            status="ok",
            listings=len(st.catalogue),
            generation=st.generation,
            seq=st.seq,
            writable=settings.token is not None,
        )

    @app.get("/metrics", response_class=Response, responses=PROMETHEUS_TEXT)
    async def prometheus(st: State) -> Response:
        text = metrics.render(
            len(st.catalogue),
            st.seq,
            st.generation,
            loaded_at=st.loaded_at,
            skipped=len(st.skipped),
            store_error=holder.store_problem is not None,
            reload_error=holder.reload_error is not None,
        )
        return Response(text, media_type=CONTENT_TYPE)

    # ------------------------------------------------------------------ writes
    @app.put(
        "/v1/listings/{listing_id}",
        dependencies=[Writer],
        responses={201: {"model": s.WriteResponse, "description": "created"}, **WRITE_ERRORS},
    )
    @on_write_threads
    def put_listing(
        listing_id: Id,
        fields: Annotated[dict[str, Any], Body(examples=[{"make": "Nissan", "price": 23221}])],
        response: Response,
        st: State,
    ) -> s.WriteResponse:
        """Add or replace a listing; it is embedded from its features and searchable at once."""
        typed = st.listing_id(listing_id)
        embedded = st.embed(st.listing_frame(typed, fields), fields)
        # created as the store's transaction saw it: of concurrent PUTs of one new id, one
        ((seq, created),) = holder.write_many(st, [typed], embedded)
        response.status_code = 201 if created else 200
        return s.WriteResponse(listing_id=typed, seq=seq, created=created)

    @app.post("/v1/listings:batch", dependencies=[Writer], responses=WRITE_ERRORS)
    @on_write_threads
    def put_listings(request_body: s.BatchRequest, st: State) -> s.BatchResponse:
        """Add or replace up to 1,000 listings in one transaction, all or none: the batch is
        validated and embedded as a whole first, and a 422 names every bad listing (``errors``:
        index and field)."""
        typed, fields, table = _batch_items(st, request_body.listings)
        embedded = st.embed(table, fields)
        results = holder.write_many(st, typed, embedded)
        created = sum(new for _, new in results)  # as the store's transaction saw them
        return s.BatchResponse(count=len(results), created=created, seqs=[q for q, _ in results])

    @app.delete("/v1/listings/{listing_id}", dependencies=[Writer], responses=WRITE_ERRORS)
    @on_write_threads
    def delete_listing(listing_id: Id, st: State) -> s.WriteResponse:
        """Remove a listing (sold): it is no longer returned."""
        typed = st.listing_id(listing_id)
        # a stored listing this model cannot serve may still be sold
        if not (st.catalogue.rows_of([typed]) >= 0).any() and typed not in st.skipped:
            raise ApiError(404, f"unknown listing_id {typed!r}", "listing_id")
        seq = holder.write(st, typed, None)
        return s.WriteResponse(listing_id=typed, seq=seq, deleted=True)

    @app.post("/v1/admin/reload", dependencies=[Writer], responses=WRITE_ERRORS)
    @on_write_threads
    def reload(request_body: s.ReloadRequest | None = None) -> s.ModelInfo:
        """Load a model directory (default: the one served) and swap it in atomically; the
        reload is recorded in the store, so every worker and replica loads it too."""
        requested = request_body.model_dir if request_body else None
        if requested and not _under(requested, model_root):
            # the same answer whether or not the path exists: no probing of the file system
            raise ApiError(403, OUTSIDE_MODEL_ROOT, "model_dir")
        model_dir = requested or holder.current.model_dir
        try:
            new = holder.reload(model_dir)
        except (BundleError, DataError) as exc:  # no model, or its catalogue cannot be served
            # the model before it keeps serving; the operator's log says why in one line
            log.error("reload of %s refused, still serving %s: %s", model_dir,
                      holder.current.model_dir, exc)  # fmt: skip
            raise ApiError(422, str(exc), "model_dir") from None
        return _model_info(new, new.model_dir)  # the token was checked

    @app.post(
        "/v1/admin/rollback",
        dependencies=[Writer],
        responses={**WRITE_ERRORS, 409: {"model": s.ErrorBody}},
    )
    @on_write_threads
    def rollback() -> s.ModelInfo:
        """Serve the model directory served before the current one again: a reload of it,
        recorded in the store, so every worker and replica follows. A second rollback undoes
        the first; 409 when no earlier model directory is known."""
        try:
            new = holder.rollback()
        except LookupError as exc:
            raise ApiError(409, str(exc), None) from None
        except (BundleError, DataError) as exc:
            log.error("rollback refused, still serving %s: %s", holder.current.model_dir, exc)
            raise ApiError(422, str(exc), "model_dir") from None
        return _model_info(new, new.model_dir)  # the token was checked

    # ------------------------------------------------------------------ explorer page
    if STATIC.is_dir():
        app.mount("/static", _PageFiles(directory=STATIC), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> Response:
        page = STATIC / "index.html"
        if page.is_file():
            return FileResponse(page, headers=PAGE_HEADERS)
        return HTMLResponse(PLACEHOLDER, headers=PAGE_HEADERS)

    # inside the metrics: a HEAD is counted as a HEAD, under its route
    app.add_middleware(_HeadAsGet)
    app.add_middleware(
        MetricsAndLimits,
        metrics=metrics,
        max_body=settings.max_body_bytes,
        larger={"/v1/listings:batch": max(settings.max_batch_bytes, settings.max_body_bytes)},
    )
    if cors_origins:
        # outside the limits: a body refused as too large is an answer the page may read
        writes = [
            route
            for route in app.routes
            if isinstance(route, APIRoute)
            and any(d.call is writer for d in route.dependant.dependencies)
        ]
        app.add_middleware(
            RouteCors, origins=cors_origins, routes=app.routes, writes=writes, metrics=metrics
        )
    return app


_FROM_ENV: Any = object()  # app_from_env's token: read from the environment or token file


class WorkerApp:
    """The app factory ``embedrec serve --workers N`` hands uvicorn: the supervisor pickles
    it to each worker it spawns (over the spawn pipe, not the environment or the command
    line) with the API token it read once at start, so that every worker, a replacement
    started after the token file changed included, checks the same token until the service
    is restarted."""

    def __init__(self, token: str | None) -> None:
        self._token = token

    def __call__(self) -> FastAPI:
        from embedrec.serving.workers import exit_on_termination, ignore_hangup_in_worker

        ignore_hangup_in_worker()
        with exit_on_termination():  # a SIGTERM while loading stops the worker at once
            return app_from_env(token=self._token)

    def __repr__(self) -> str:  # never the token, wherever it is shown
        return "WorkerApp(token=***)"


def app_from_env(token: str | None = _FROM_ENV) -> FastAPI:
    """The app configured by EMBEDREC_* variables (uvicorn workers start it this way), in a
    process set up for serving by :func:`limit_threads`. ``token``: the API token (None: read
    only), else EMBEDREC_TOKEN_FILE's or EMBEDREC_API_TOKEN's."""
    from embedrec.serving.workers import STARTUP_FAILURE, first_start

    if not logging.getLogger().handlers:  # a fresh worker process: its messages to stderr
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        # with all cores while the catalogue is embedded
        app = create_app(settings_from_env(token))
    except (BundleError, DataError, StoreUnavailable) as exc:
        # one line, no traceback; a model or catalogue that cannot be served fails every
        # start alike: the first workers stop the server (embedrec serve exits with status 2),
        # a replacement is replaced again while the others serve. The store may come back.
        log.error("worker %d cannot start: %s", os.getpid(), exc)
        permanent = first_start() and not isinstance(exc, StoreUnavailable)
        sys.exit(STARTUP_FAILURE if permanent else 1)
    limit_threads()
    return app


def limit_threads() -> None:
    """One thread per request computation: parallelism comes from requests and workers.

    A second torch or OpenMP thread only adds wake-ups for the tensors of one request (a GELU
    over 128 numbers took 7 ms with two threads under load). This changes the whole process,
    so only a server's own start-up calls it (``embedrec serve``, :func:`app_from_env`),
    never :func:`create_app`, which a program may call in-process.
    """
    import torch

    from embedrec.index.vector_index import set_search_threads

    set_search_threads(1)
    torch.set_num_threads(1)


def settings_from_env(token: str | None = _FROM_ENV) -> Settings:
    env = os.environ
    if token is _FROM_ENV:
        # a token file is read here: the token itself stays out of the environment
        token_file = env.get("EMBEDREC_TOKEN_FILE")
        token = (
            read_token_file(token_file)
            if token_file
            else check_token_text(env.get("EMBEDREC_API_TOKEN") or None, "EMBEDREC_API_TOKEN")
        )
    return Settings(
        model_dir=env["EMBEDREC_MODEL_DIR"],
        listings=env.get("EMBEDREC_LISTINGS") or None,
        store=env.get("EMBEDREC_STORE", "embedrec-store.sqlite"),
        token=token,
        model_root=env.get("EMBEDREC_MODEL_ROOT") or None,
        max_body_bytes=int(env.get("EMBEDREC_MAX_BODY_BYTES", 64 * 1024)),
        follow_store=env.get("EMBEDREC_FOLLOW_STORE") == "1",
        cache_dir=env.get("EMBEDREC_CACHE_DIR") or None,
        cors_origins=tuple(env.get("EMBEDREC_CORS_ORIGINS", "").split()),
    )


def read_token_file(path: str) -> str:
    """The API token: the first line of ``path``, stripped. ValueError for a file whose first
    line holds none, and for a token that no client could send (:func:`check_token_text`).

    A file named holds a token: one that is empty (a secret that was never written into it)
    served read-only before, with a warning that no token was given, so every write answered
    403 where the operator had asked for writes."""
    lines = Path(path).read_text().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ValueError(
            f"token file {path} holds no API token on its first line; write one into it "
            "(e.g. openssl rand -hex 24), or leave --token-file out to serve read-only"
        )
    return cast(str, check_token_text(token, f"token file {path}"))


_TOKEN_TEXT = re.compile(r"[\x21-\x7e]+")


def check_token_text(token: str | None, source: str) -> str | None:
    """``token``, or ValueError naming ``source`` when it holds other characters than
    printable ASCII without spaces. HTTP headers arrive decoded as Latin-1, so a token with
    other characters (``pässwört``) never matched what a client sent: every write answered
    401. The message never quotes the token."""
    if token is not None and not _TOKEN_TEXT.fullmatch(token):
        raise ValueError(
            f"the API token in {source} holds a character other than printable ASCII "
            "(letters, digits and punctuation, no spaces), which no Authorization header can "
            "carry; make a new one, e.g. openssl rand -hex 24"
        )
    return token


# ---------------------------------------------------------------------- helpers
def _batch_items(
    st: ServingState, items: list[dict[str, Any]]
) -> tuple[list, list[dict], pd.DataFrame | None]:
    """Each item's typed id and fields, and their validated listings table; BatchError
    naming every bad item at once: those without a usable id, and the others' bad ids and
    fields as :meth:`ServingState.listing_table` finds them."""
    typed, fields, places, errors = [], [], [], []
    for index, item in enumerate(items):
        raw = item.get("listing_id")
        if isinstance(raw, bool) or not isinstance(raw, str | int) or raw == "":
            errors.append((index, "listing_id", "a string or integer id (1-256 characters)"))
            continue
        typed.append(st.listing_id(str(raw)))
        fields.append({k: v for k, v in item.items() if k != "listing_id"})
        places.append(index)
    table = None
    try:
        if typed:
            table = st.listing_table(list(zip(typed, fields, strict=True)), places=places)
    except BatchError as exc:
        errors += exc.errors
    if errors:
        raise BatchError(sorted(errors, key=lambda error: error[0]))
    return typed, fields, table


def _token_first_route(writer: Callable, check_token: Callable[[str], None]) -> type[APIRoute]:
    """Routes that check the bearer token of a write (a route depending on ``writer``) before
    FastAPI reads the body: a wrong token answers 401, whatever the body holds."""

    class TokenFirstRoute(APIRoute):
        def get_route_handler(self) -> Callable:
            handler = parse = super().get_route_handler()
            if self.body_field is not None:  # reads untouched: the hottest routes

                async def handler(request: Request) -> Response:
                    return await parse(_TextJsonRequest(request.scope, request.receive))

            if not any(d.call is writer for d in self.dependant.dependencies):
                return handler

            async def token_first(request: Request) -> Response:
                scheme, credentials = get_authorization_scheme_param(
                    request.headers.get("Authorization")
                )
                check_token(credentials if scheme.lower() == "bearer" else "")
                return await handler(request)

            return token_first

    return TokenFirstRoute


class _HeadAsGet:
    """ASGI middleware: a HEAD request is served as the GET of its path, without the body.

    The answer's status and headers are the GET's, ``Content-Length`` included, as
    Starlette's StaticFiles answers a HEAD. The routes name GET only, so the OpenAPI schema
    lists no HEAD operation for them (a HEAD operation beside a GET would share its operation
    id, which client generators refuse); a path without GET answers a HEAD 405, as before.
    """

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        get = {**scope, "method": "GET"}
        try:
            await self.app(get, receive, without_body)
        finally:
            # the route the router found (the metrics' endpoint label), as for any request
            if "route" in get:
                scope["route"] = get["route"]


class _PageFiles(StaticFiles):
    """The explorer's files with the page's headers: ``/static/index.html`` is the page too,
    and must not be framed either."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(PAGE_HEADERS)
        return response


class _TextJsonRequest(Request):
    """A request whose JSON body is read as text: UTF-8, every string made of characters.

    JSON's ``\\u`` escapes can write half of a UTF-16 surrogate pair alone (``"\\ud800"``),
    and Python's JSON reader decodes one, and encoded surrogate bytes, into a string that no
    answer, store or Arrow column can hold: refused here as invalid JSON (FastAPI answers
    422), not at the first place that has to encode it (a 500).
    """

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                text = body.decode("utf-8-sig")  # strict: no surrogates; a BOM, as before
            except UnicodeDecodeError as exc:
                raise json.JSONDecodeError("not UTF-8 text", "", exc.start) from None
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise
            except RecursionError:  # arrays or objects nested past Python's recursion limit
                raise json.JSONDecodeError("nested too deeply", text, 0) from None
            except ValueError:  # a number past Python's limit on an integer's digits
                long = _LONG_NUMBER.search(text)
                where = long.start() if long else 0
                raise json.JSONDecodeError("a number of too many digits", text, where) from None
            lone = _lone_surrogate(text)
            if lone is not None:
                raise json.JSONDecodeError(
                    f"{text[lone : lone + 6]} is half of a UTF-16 surrogate pair, no character",
                    text,
                    lone,
                )
            self._json = value
        return self._json


_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONG_NUMBER = re.compile(rf"\d{{{sys.get_int_max_str_digits() + 1},}}")


def _lone_surrogate(text: str) -> int | None:
    """Where in ``text`` (valid JSON) a ``\\u`` escape writes a surrogate outside a pair."""
    if not _SURROGATE_ESCAPE.search(text):  # most bodies: one scan, no escapes read
        return None
    high: re.Match | None = None  # a high surrogate's escape, waiting for its low half
    for escape in _ESCAPE.finditer(text):
        code = int(escape.group(1), 16) if escape.group(1) else None
        low = code is not None and 0xDC00 <= code <= 0xDFFF
        if high is not None:
            if low and escape.start() == high.end():
                high = None
                continue
            return high.start()
        if low:
            return escape.start()
        if code is not None and 0xD800 <= code <= 0xDBFF:
            high = escape
    return None if high is None else high.start()


def _under(path: str, root: str) -> bool:
    """Whether ``path``, symbolic links resolved, is ``root`` or inside it."""
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):  # e.g. a NUL byte
        return False
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _query_mapping(request: Request) -> dict[str, Any]:
    """Filter mapping from query parameters. A set (``make``, ``exclude``) given once holds
    the values between its commas, trimmed; given more than once, each value whole, so that
    a value or an id with a comma can be named (``exclude=Flat 3, Köln&exclude=L2``), as the
    command line's repeated ``--exclude`` and ``--session`` take them."""
    mapping: dict[str, Any] = {}
    params = request.query_params
    for key, value in params.multi_items():
        if key in NOT_FILTERS:
            # FastAPI would take the last of k=2&k=3: no number of results is meant twice
            if len(params.getlist(key)) > 1:
                raise ApiError(422, "given more than once", key)
            continue
        if key in SINGLE_VALUED or key.endswith(("_min", "_max")):
            if key in mapping:
                raise ApiError(422, "given more than once", key)
            mapping[key] = value
        elif key not in mapping:
            given = params.getlist(key)
            values = given if len(given) > 1 else [v.strip() for v in value.split(",")]
            mapping[key] = [v for v in values if v.strip()]
    return mapping


def _filters(st: ServingState, mapping: dict[str, Any], within: str = "") -> list:
    """Parsed filters, checked against the catalogue's columns before any search. An error
    names the key as the client gave it, after ``within`` (the body field holding the
    filters: ``filters.``)."""
    if not isinstance(mapping, dict):
        raise ApiError(422, "filters must be an object", "filters")
    schema = st.catalogue.schema
    for key in mapping:
        if key not in schema.columns and key not in NAMED_FILTERS:
            base, _, side = key.rpartition("_")
            if side not in ("min", "max") or base not in schema.columns:
                # in the API's words: the library's message names its own filters (within=)
                names = [p["name"] for p in filter_parameters(schema, reserved=NOT_FILTERS)]
                raise ApiError(
                    422,
                    f"unknown filter {key!r}; the filters are: {', '.join(names)}",
                    within + key,
                )
    if any(_holds_bool(value) for value in mapping.values()):
        mapping = _json_booleans(mapping, st.boolean_columns)
    try:
        filters = filters_from_mapping(mapping)
        allowed_mask(filters, st.catalogue.schema)
    except FilterError as exc:
        raise _filter_error(exc, mapping, within) from None
    return filters


def _filter_error(exc: FilterError, mapping: dict[str, Any], within: str = "") -> ApiError:
    """``exc`` naming the key the client gave: the library names a range by its column
    (``price`` for price_min above price_max, ``make`` for make_min on a text column), which
    is no parameter of the request, or another filter (``price=...``)."""
    given = exc.field
    if given not in mapping:
        given = next((k for k in mapping if k in (f"{given}_min", f"{given}_max")), given)
    return ApiError(422, str(exc), within + given)


def _holds_bool(value: Any) -> bool:
    return isinstance(value, bool) or (
        isinstance(value, list) and any(isinstance(v, bool) for v in value)
    )


def _json_booleans(mapping: dict[str, Any], booleans: Collection[str]) -> dict[str, Any]:
    """JSON's true and false on a column of booleans as the values its filter matches
    (``"true"``, as a query string gives them); elsewhere they stay, and are refused as no
    value of the column (a make of true)."""

    def text(value: Any) -> Any:
        return str(value).lower() if isinstance(value, bool) else value

    return {
        key: ([text(v) for v in value] if isinstance(value, list) else text(value))
        if key in booleans
        else value
        for key, value in mapping.items()
    }


def _near(filters: list) -> tuple[float, float] | None:
    for f in filters:
        if getattr(f, "radius_km", None) is not None:
            return f.lat, f.lon
    return None


def _location(catalogue: Catalogue, row: np.ndarray) -> tuple[float, float] | None:
    """The coordinates of the listing at ``row`` (one live row of ``catalogue``)."""
    record = catalogue.fields(row, columns=LOCATION_COLUMNS)[0]
    for lat, lon in LAT_LON_COLUMNS:
        if record.get(lat) is not None and record.get(lon) is not None:
            return float(record[lat]), float(record[lon])
    return None


def _answer(**content: Any) -> Response:
    """A route's answer (its ``response_model``) as JSON, written without validating it
    again: it is made of the catalogue's JSON-ready values, and pydantic's model with
    FastAPI's check of a returned value cost about 0.1 ms, a tenth of a similar-listing
    request's time in a worker."""
    return Response(to_json(content, inf_nan_mode="null"), media_type="application/json")


def _distances(answer: Results, origin: tuple[float, float] | None) -> list[dict]:
    """The answer's results as JSON objects (``ListingResult``), with ``distance_km``
    (great-circle) from ``origin`` where a result has coordinates, else null."""
    results = []
    for hit in answer.hits:
        distance = None
        if origin is not None:
            for lat_name, lon_name in LAT_LON_COLUMNS:
                lat, lon = hit.fields.get(lat_name), hit.fields.get(lon_name)
                if lat is not None and lon is not None:
                    distance = round(distance_km(*origin, lat, lon), 3)
                    break
        # no field replaces the computed ones: the state refuses a catalogue with a column
        # of their names (check_column_names), so they are not checked per result
        results.append(
            {
                "listing_id": hit.listing_id,
                "score": hit.score,
                "distance_km": distance,
                **hit.fields,
            }
        )
    return results


def _fields(st: ServingState, listing_id: Any) -> dict[str, Any]:
    catalogue = st.catalogue  # once: a compaction swaps in another, with other row numbers
    row = catalogue.rows_of([listing_id])
    if row[0] < 0:
        raise ApiError(404, f"unknown listing_id {listing_id!r}", "listing_id")
    return catalogue.fields(row)[0]


def _random_live(st: ServingState) -> Any:
    catalogue = st.catalogue  # once: a compaction swaps in another, with other row numbers
    live = catalogue.live
    if not live.any():
        raise ApiError(404, "the catalogue is empty", None)
    for _ in range(32):  # rejection sampling: O(1) while most rows are live
        row = random.randrange(len(live))
        if live[row]:
            break
    else:
        row = int(np.random.default_rng().choice(np.flatnonzero(live)))
    return catalogue.fields(np.array([row]))[0]["listing_id"]


# where a path in a message ends: spaces, quotes, brackets, separators (a ':' too, as in
# "/srv/models/v2: cannot load"; a path holding one is cut there)
_PATH_END = r"""\s'"`,;:()\[\]{}<>"""
# an absolute path not inside a word, a URL or another path ("postgresql://host/db")
_ABSOLUTE_PATH = re.compile(rf"(?<![\w.~:/-])/[^{_PATH_END}]+")


def names_only(text: str, paths: Collection[str | os.PathLike | None] = ()) -> str:
    """``text`` with each path on the server replaced by its last name: ``paths`` (known,
    and with whatever follows them inside, even where they hold spaces) and then any other
    absolute path."""
    known = {str(p) for p in paths if p is not None and str(p)}
    known |= {os.path.abspath(p) for p in known} | {os.path.realpath(p) for p in known}

    def name(match: re.Match) -> str:
        return os.path.basename(match[0].rstrip("/")) or match[0]

    for path in sorted(known, key=len, reverse=True):
        pattern = re.escape(path.rstrip("/") or "/") + rf"(?:/[^{_PATH_END}]*)?(?![^{_PATH_END}])"
        text = re.sub(pattern, name, text)
    return _ABSOLUTE_PATH.sub(name, text)


def _model_info(st: ServingState, model_dir: str | None) -> s.ModelInfo:
    """The served model, its directory's path given as ``model_dir`` (None: not shown)."""
    rec = st.recommender
    manifest = getattr(rec, "manifest_", {}) or {}
    return s.ModelInfo(
        model_dir=model_dir,
        model_name=os.path.basename(st.model_dir),
        model_id=st.model_tag,
        model=rec.model,
        version=manifest.get("embedrec_version"),
        trained_at=manifest.get("trained_at") or rec.report_.get("trained_at"),
        generation=st.generation,
        listings=len(st.catalogue),
        loaded_at=st.loaded_at,
        report=plain(rec.report_),  # JSON has no NaN: null
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method a route of the request's path answers (sorted; empty for no route): HEAD
    wherever GET is (:class:`_HeadAsGet`)."""
    return path_methods(request.app.router.routes, request.scope)[1]


# where FastAPI found a value: the first part of a validation error's location, which no
# client writes (a body field is named by its path in the JSON body, as ``BatchError`` does)
_SOURCES = ("body", "query", "path", "header", "cookie")


def _field_name(location: tuple) -> str | None:
    """A validation error's field as a client sends it: ``session``, ``listings.0``, ``k``,
    ``listing_id``; ``body`` for the body as a whole (not an object, or none)."""
    parts = [str(part) for part in location]
    if parts[:1] == ["body"] and len(parts) == 1:
        return "body"
    if parts[:1] and parts[0] in _SOURCES:
        parts = parts[1:]
    return ".".join(parts) or None


def _error(status: int, message: str, field: str | None, headers: dict | None = None):
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, exc.message, exc.field, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            # FastAPI puts the character's offset where a field's name goes ("body.1")
            where = first.get("loc", ("body", 0))[-1]
            why = first.get("ctx", {}).get("error", "cannot parse")
            return _error(422, f"body: invalid JSON at character {where}: {why}", "body")
        location = tuple(first.get("loc", ()))
        field = _field_name(location)
        message = first.get("msg", "invalid request")
        if location[:1] == ("body",) and isinstance(exc.body, bytes) and exc.body:
            # FastAPI leaves a body without a JSON Content-Type unparsed: its fields then look
            # missing
            content_type = request.headers.get("content-type")
            got = repr(content_type) if content_type else "none"
            message = f"expected JSON (Content-Type: application/json), got {got}"
            return _error(422, f"body: {message}", "body")
        return _error(422, f"{field}: {message}" if field else message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        allowed = _allowed_methods(request) if exc.status_code == 405 else None
        if allowed:
            # Starlette names the methods of the first route matching the path only
            # (/v1/listings/{id}: GET, where PUT and DELETE are routes of their own)
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        return _error(exc.status_code, str(exc.detail), None, headers)

    @app.exception_handler(UnknownIdError)
    async def unknown_id(_: Request, exc: UnknownIdError) -> JSONResponse:
        return _error(404, str(exc), exc.kind)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
        # reads go on from memory; a write is refused before it is acknowledged: retry it
        return _error(503, str(exc), None, {"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(FilterError)
    async def filter_error(_: Request, exc: FilterError) -> JSONResponse:
        return _error(422, str(exc), exc.field)

    @app.exception_handler(BatchError)
    async def batch_error(_: Request, exc: BatchError) -> JSONResponse:
        errors = [{"index": i, "field": f, "error": m} for i, f, m in exc.errors]
        index, field, _ = exc.errors[0]
        where = f"listings.{index}" + (f".{field}" if field else "")
        return JSONResponse({"error": exc.message, "field": where, "errors": errors}, 422)

    @app.exception_handler(DataError)
    async def data_error(_: Request, exc: DataError) -> JSONResponse:
        return _error(422, exc.message if exc.column else str(exc), exc.column)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__})", None)
