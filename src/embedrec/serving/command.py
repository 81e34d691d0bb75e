"""The ``embedrec serve`` command (registered in embedrec.cli; runnable as
``python -m embedrec.serving.command``)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

import click

from embedrec.bundle import MODEL_FILES, BundleError, read_manifest
from embedrec.cache import cache_root
from embedrec.data.errors import DataError, os_error_message

TOKEN_VARIABLE = "EMBEDREC_API_TOKEN"
TOKEN_FILE_VARIABLE = "EMBEDREC_TOKEN_FILE"


def _store_path(value: str) -> str:
    from embedrec.serving.store import check_store_location

    try:
        kind = check_store_location(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if kind == "sqlite" and Path(value).is_dir():
        raise click.BadParameter(f"{value!r} is a directory; give the path of a SQLite file")
    return value


def _cors_origins(values: tuple[str, ...]) -> tuple[str, ...]:
    if not values:
        return ()
    from embedrec.serving.cors import check_origin

    try:
        return tuple(dict.fromkeys(check_origin(value) for value in values))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port to listen on.",
)
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Processes."
)
@click.option(
    "--store",
    default="embedrec-store.sqlite",
    show_default=True,
    callback=lambda _ctx, _param, value: _store_path(value),
    help="Where the listings written through the API are kept: a SQLite file (one host), or "
    "postgresql://USER@HOST:PORT/DB shared by several replicas (docs/serving.md).",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False),
    help=f"File holding the API token for writes (or set {TOKEN_VARIABLE}). "
    "Without a token the server is read-only.",
)
@click.option(
    "--model-root",
    type=click.Path(exists=True, file_okay=False),
    help="POST /v1/admin/reload loads only model directories under this directory (symbolic "
    "links resolved); others answer 403. Default: the parent directory of MODEL_DIR.",
)
@click.option(
    "--listings",
    type=click.Path(exists=True, dir_okay=False),
    help="Listings file to serve instead of the training listings (new ones embedded from "
    "their features).",
)
@click.option(
    "--worker-timeout",
    default=30,
    show_default=True,
    type=click.IntRange(1, 3600),
    help="With --workers above 1: seconds a worker may leave the supervisor's health check "
    "unanswered (alive but hung) before it is killed and replaced; on a busy machine a few "
    "seconds can kill a worker that is still loading. A dead worker is replaced at once.",
)
@click.option(
    "--shutdown-timeout",
    default=20,
    show_default=True,
    type=click.IntRange(1, 3600),
    help="Seconds SIGTERM waits for the requests in flight (a client still sending its body, "
    "a write waiting for the database) before they are cancelled and the server stops.",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    callback=lambda _ctx, _param, values: _cors_origins(values),
    help="Let web pages of ORIGIN (scheme://host[:port], as the browser sends it) call the API "
    "from a browser: CORS headers, and preflights answered with the methods each path takes, "
    "writes with the bearer token included. Repeatable. '*': pages of any origin, for reads "
    "only. Default: none (no CORS headers; a preflight OPTIONS answers 405).",
)
@click.option(
    "--log-level",
    # uvicorn's levels (uvicorn.config.LOG_LEVELS), named here so that --help needs no import
    type=click.Choice(
        ["critical", "error", "warning", "info", "debug", "trace"], case_sensitive=False
    ),
    default="info",
    show_default=True,
    help="Least severe message logged, the server's and uvicorn's.",
)
def serve_command(
    model_dir: str,
    host: str,
    port: int,
    workers: int,
    store: str,
    token_file: str | None,
    model_root: str | None,
    listings: str | None,
    worker_timeout: int,
    shutdown_timeout: int,
    cors_origins: tuple[str, ...],
    log_level: str,
) -> None:
    """Serve MODEL_DIR over HTTP: similar listings, recommendations, listing writes."""
    import uvicorn
    from uvicorn.config import LOG_LEVELS

    from embedrec.serving.app import (
        WorkerApp,
        check_token_text,
        create_app,
        limit_threads,
        read_token_file,
    )
    from embedrec.serving.protocol import http_protocol
    from embedrec.serving.state import Settings
    from embedrec.serving.store import StoreUnavailable, open_store
    from embedrec.serving.workers import STARTUP_FAILURE, StopServer, run_workers

    log_level = log_level.lower()
    logging.basicConfig(  # a number: Python's logging names no TRACE until uvicorn adds it
        level=LOG_LEVELS[log_level], format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    try:
        if token_file:
            token_file = os.path.abspath(token_file)
            _warn_if_others_can_read(token_file)
            token = read_token_file(token_file)
        else:
            token = check_token_text(os.environ.get(TOKEN_VARIABLE) or None, TOKEN_VARIABLE)
    except ValueError as exc:  # a token no client could send: every write would answer 401
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if token is None:
        click.echo(
            f"warning: no API token ({TOKEN_VARIABLE} or --token-file): read-only, "
            "PUT/DELETE/reload answer 403",
            err=True,
        )
    model_root = os.path.realpath(model_root or Path(model_dir).parent)
    # served, recorded and reported as the directory a link (models/current) points to now
    model_dir = os.path.realpath(model_dir)
    settings = Settings(
        model_dir=model_dir,
        listings=listings,
        store=store,
        token=token,
        model_root=model_root,
        # the --listings catalogue, its vector index and the model's tensors in files that a
        # restart (and every worker) maps instead of computing again (serving/shared.py)
        cache_dir=str(_cache_dir()),
        cors_origins=cors_origins,
    )
    try:
        if workers == 1:
            app = create_app(settings)  # with all cores while the catalogue is embedded
            limit_threads()
            server = StopServer(
                uvicorn.Config(
                    app,
                    host=host,
                    port=port,
                    log_level=log_level,
                    access_log=False,
                    timeout_graceful_shutdown=shutdown_timeout,
                    http=http_protocol(),  # a request's head bounded in size and time
                    server_header=False,  # no "server: uvicorn" telling a scanner what to try
                )
            )
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C before it took signals
                server.run()  # SIGTERM or SIGINT: a graceful stop, then status 0
            if not server.started:  # the port in use, say: uvicorn logged why
                sys.exit(STARTUP_FAILURE)
            return
        read_manifest(model_dir, MODEL_FILES)  # fail here, not in every worker
        opened = open_store(store)  # an unreachable database, too, fails here
        try:
            if not opened.listens:
                # the workers load what the store names: this model now, a reloaded one
                # later (a shared PostgreSQL store keeps naming the replicas' model)
                opened.record_reload(str(model_dir))
        finally:
            opened.close()
        os.environ.update(
            EMBEDREC_MODEL_DIR=str(model_dir),
            EMBEDREC_STORE=str(store),
            EMBEDREC_LISTINGS=listings or "",
            EMBEDREC_FOLLOW_STORE="1",
            EMBEDREC_MODEL_ROOT=model_root,
            EMBEDREC_CACHE_DIR=settings.cache_dir,
            EMBEDREC_CORS_ORIGINS=" ".join(cors_origins),  # no origin holds a space
        )
        # the token read above goes to each worker inside the app factory the supervisor
        # pickles to it, not in the environment, where any process of the user could read
        # it in /proc/PID/environ; a worker started later (a replacement) gets the same token
        # as the first ones, even if the token file changed meanwhile: rotating the token
        # means restarting the service
        os.environ.pop(TOKEN_FILE_VARIABLE, None)
        config = uvicorn.Config(
            WorkerApp(token),
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=False,
            http=http_protocol(),
            server_header=False,
            # a dead worker is replaced at once; this bounds how long one that is alive but
            # hung (not answering the supervisor's ping, which a loading worker still
            # answers from its own thread) serves nobody before it is killed and replaced
            timeout_worker_healthcheck=worker_timeout,
            timeout_graceful_shutdown=shutdown_timeout,
        )
        # each worker accepts on a socket of its own (SO_REUSEPORT)
        if not run_workers(config):
            click.echo("error: a worker could not start; its log line above says why", err=True)
            sys.exit(2)
    except (BundleError, DataError, StoreUnavailable) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"error: {os_error_message(exc)}", err=True)
        sys.exit(2)


def _cache_dir() -> Path:
    return cache_root() / "serving"


def _warn_if_others_can_read(token_file: str) -> None:
    mode = os.stat(token_file).st_mode
    if mode & 0o077:
        click.echo(
            f"warning: token file {token_file} is accessible to group or others (mode "
            f"{mode & 0o777:o}); restrict it: chmod 600 {token_file}",
            err=True,
        )


if __name__ == "__main__":
    serve_command()
