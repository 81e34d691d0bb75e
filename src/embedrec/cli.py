"""The ``embedrec`` command: parses flags, calls the library, prints."""

from __future__ import annotations

import errno
import functools
import json
import logging
import math
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from embedrec.bundle import MANIFEST, check_destination
from embedrec.cache import cache_root
from embedrec.data.atomic import remove_abandoned
from embedrec.data.errors import DataError, os_error_message
from embedrec.data.ids import parse_id
from embedrec.data.io import check_event_weights
from embedrec.data.jsonable import plain
from embedrec.data.schema import SchemaConfig, column_kinds
from embedrec.evaluation.metrics import cut_offs
from embedrec.geo import LAT_LON_COLUMNS
from embedrec.index.filters import ExcludeFilter
from embedrec.models.registry import MODELS
from embedrec.recommender import Recommender
from embedrec.retrieval.batch import CHUNK_SIZE, check_output, torchrun_rank
from embedrec.retrieval.results import Results, UnknownIdError
from embedrec.retrieval.retriever import Retriever
from embedrec.training.checkpoint import POINTER
from embedrec.training.distributed import finish_distributed, stop_if_orphaned, watch_launcher

# DataError and BundleError are ValueErrors; library calls raise ValueError for bad arguments
USER_ERRORS = (ValueError, FileNotFoundError, UnknownIdError)
# the one source of the training defaults the options show
DEFAULTS = Recommender.defaults()


class CutOffs(click.ParamType):
    """Comma-separated whole numbers from 1 up (10,20), as a tuple."""

    name = "K[,K...]"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        parts = [part.strip() for part in str(value).split(",")]
        message = f"expected whole numbers from 1 up, comma-separated (10,20), got {value!r}"
        if not all(part.isascii() and part.isdigit() for part in parts):
            self.fail(message)
        try:  # the rule Recommender.evaluate applies
            return cut_offs([int(part) for part in parts])
        except ValueError:
            self.fail(message)


class ModelChoice(click.Choice):
    """The registered models, read when the option is parsed: a model registered after
    import (``embedrec.models.register``) is a valid choice too."""

    def __init__(self) -> None:
        super().__init__(list(MODELS))

    @property
    def choices(self) -> list[str]:
        return list(MODELS)

    @choices.setter
    def choices(self, _: Any) -> None:
        pass


def _user_errors(command: Callable) -> Callable:
    """Bad input ends with a one-line message and exit status 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = command(*args, **kwargs)
            # what is still buffered meets a closed pipe here, not in the exit's own flush
            sys.stdout.flush()
            return result
        except USER_ERRORS as exc:
            stop_if_orphaned()
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except ModuleNotFoundError as exc:  # an installation without a package a step needs
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except BrokenPipeError:
            # the reader stopped early (| head): click ends the command quietly, status 1
            raise
        except OSError as exc:  # the file system refused: no permission, a file in the way
            stop_if_orphaned()
            click.echo(f"error: {os_error_message(exc)}", err=True)
            sys.exit(2)
        except Exception:
            stop_if_orphaned()
            raise

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="embedrec")
def main() -> None:
    """Embeddings of marketplace listings: similar listings, recommendations, cold start."""
    log_to_stderr()
    watch_launcher()  # under torchrun: a rank stops when its launcher is killed


def log_to_stderr(level: int = logging.INFO) -> None:
    """The library's messages (``logging.getLogger("embedrec")``) as plain lines on stderr;
    other libraries' only from warnings up. ``serve`` replaces this with timestamped lines."""
    logging.basicConfig(format="%(message)s", stream=sys.stderr)
    logging.getLogger("embedrec").setLevel(level)


# ---------------------------------------------------------------------------- generate
@main.group()
def generate() -> None:
    """Generate built-in data sets."""


@generate.command("cars")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory for listings.parquet, interactions.parquet, users.parquet.",
)
@click.option(
    "--size",
    type=click.Choice(["tiny", "small", "large"]),
    default="small",
    show_default=True,
    help="tiny: tests; small: demo; large: benchmarks.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@_user_errors
def generate_cars_command(out_dir: str, size: str, seed: int) -> None:
    """A German used-car marketplace: listings, users and their interactions."""
    from embedrec.datasets.cars import generate_cars

    paths = generate_cars(out_dir, size=size, seed=seed, progress=None)
    for name, path in paths.items():
        click.echo(f"{name:<13} {path}")


# ---------------------------------------------------------------------------- train
def _window_options(command: Callable) -> Callable:
    command = click.option(
        "--until",
        help="Only events before this ISO date or time (exclusive; UTC unless it says).",
    )(command)
    return click.option(
        "--since",
        help="Only events at or after this ISO date or time (2026-11-01, 2026-11-01T12:00Z); "
        "partitions and row groups outside the window are not read.",
    )(command)


# a file, a folder of Parquet files (date=2026-11-01/ folders become columns), a glob, a URI
SOURCES = "CSV or Parquet file, folder of Parquet files, glob, or s3://, gs://, file:// URI"


@main.command()
@click.option(
    "--interactions",
    required=True,
    type=click.Path(),
    help=f"{SOURCES}: user_id, listing_id, timestamp[, event, weight].",
)
@click.option(
    "--listings",
    required=True,
    type=click.Path(),
    help=f"{SOURCES}: listing_id plus feature columns.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Model directory to write.",
)
@click.option(
    "--model",
    type=ModelChoice(),
    default=DEFAULTS["model"],
    show_default=True,
    help="hybrid: two towers with listing features (cold start); mf: dot product of "
    "id embeddings; deep: ids and features through dense layers.",
)
@click.option(
    "--dim", type=int, default=DEFAULTS["dim"], show_default=True, help="Embedding dimensions."
)
@click.option(
    "--epochs",
    type=int,
    default=DEFAULTS["epochs"],
    show_default=True,
    help="Most epochs; early stopping usually ends sooner.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(),
    help="TOML: [train] parameters, [events] weights, [features] types and drops.",
)
@click.option(
    "--seed",
    type=int,
    default=DEFAULTS["seed"],
    show_default=True,
    help="Random seed of the initial weights, shuffles, negatives and dropout.",
)
@click.option(
    "--tune",
    type=click.FloatRange(0, min_open=True),
    help="Seconds to search training settings on the run's own time hold-out first; "
    "what was tried and chosen is printed and kept in the model (config.json, report). "
    "With --init-from: train with what the old model's search chose, without searching.",
)
@click.option(
    "--device",
    default=DEFAULTS["device"],
    show_default=True,
    help="auto (CUDA when available), cpu, cuda or cuda:N.",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(1),
    help="Also checkpoint every N steps (a checkpoint follows every epoch in OUT.checkpoints).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the stopped run from its last checkpoint in OUT.checkpoints (a run that "
    "torchrun restarts after losing a rank does so by itself).",
)
@click.option(
    "--nproc",
    type=click.IntRange(1),
    help="Train data-parallel in N processes on this host (torchrun --standalone "
    "--nproc_per_node N); across hosts, launch with torchrun itself.",
)
@click.option(
    "--init-from",
    "init_from",
    type=click.Path(),
    help="Model directory to continue, e.g. nightly on the last day (--since): its vectors "
    "and encoders are kept, new users, listings and values get rows. Same model settings.",
)
@_window_options
@_user_errors
def train(
    interactions: str,
    listings: str,
    out_dir: str,
    model: str,
    dim: int,
    epochs: int,
    config_file: str | None,
    seed: int,
    tune: float | None,
    device: str,
    checkpoint_every: int | None,
    resume: bool,
    nproc: int | None,
    init_from: str | None,
    since: str | None,
    until: str | None,
) -> None:
    """Train a model and save it as a directory.

    Under torchrun (``torchrun --nproc_per_node N -m embedrec train ...``) every process
    trains on its share of the users and the first one writes the model."""
    if nproc is not None and not os.environ.get("WORLD_SIZE"):
        _relaunch_with_torchrun(nproc)
    params: dict[str, Any] = {
        "model": model,
        "dim": dim,
        "epochs": epochs,
        "seed": seed,
        "device": device,
    }
    if tune is not None:
        params["tune"] = tune
    if config_file:
        params.update(_read_config(config_file, explicit=_explicit_flags()))
    rank = (torchrun_rank() or (0, 1))[0]
    if rank != 0:  # the first rank speaks for the run
        logging.getLogger("embedrec").setLevel(logging.WARNING)
        params["progress"] = False
    check_destination(out_dir)  # a wrong --out stops now, not after the training
    if rank == 0:  # what a killed save left there may be a model's size: freed now
        remove_abandoned(out_dir)
    checkpoints = Path(out_dir).with_name(Path(out_dir).name + ".checkpoints")
    # torchrun --max-restarts restarts every rank after one is lost: go on where it stopped
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    try:
        recommender = Recommender(**params).fit(
            interactions,
            listings,
            since=since,
            until=until,
            init_from=init_from,
            checkpoint_dir=checkpoints,
            checkpoint_every=checkpoint_every,
            resume=resume or (restarted and (checkpoints / POINTER).is_file()),
        )
    except KeyboardInterrupt:  # Ctrl-C, or SIGINT from a job scheduler
        if rank == 0:
            click.echo(_interrupted(checkpoints), err=True)
        sys.exit(130)  # 128 + SIGINT, as a shell reports a command that Ctrl-C stopped
    if rank == 0:
        tuning = recommender.report_.get("tuning")
        if tuning is not None:
            click.echo(_tuning_summary(tuning))
        before = _manifest_bytes(Path(out_dir))
        try:
            path = recommender.save(out_dir)
            shutil.rmtree(checkpoints, ignore_errors=True)  # the model holds what they did
        except KeyboardInterrupt:
            click.echo(_interrupted_saving(Path(out_dir), before, checkpoints), err=True)
            sys.exit(130)
        click.echo(f"saved {path}")
    try:
        finish_distributed()
    except KeyboardInterrupt:  # the other ranks wait here while the first saves
        sys.exit(130)


def _interrupted(checkpoints: Path) -> str:
    """What an interrupted training run left, and how to go on."""
    if (checkpoints / POINTER).is_file():
        return (
            f"interrupted; the last checkpoint is in {checkpoints}: "
            "run the same command with --resume to continue from it"
        )
    return "interrupted before the first checkpoint; nothing was saved"


def _interrupted_saving(out_dir: Path, before: bytes | None, checkpoints: Path) -> str:
    """What an interrupt during the model's save left: the save is whole or not at all, so
    ``out_dir`` holds the model it held ``before`` (its manifest's bytes), or the new one."""
    if _manifest_bytes(out_dir) not in (before, None):
        return f"interrupted after the model was saved: {out_dir} holds the new model"
    kept = "the model it held before" if before is not None else "nothing"
    if (checkpoints / POINTER).is_file():
        return (
            f"interrupted while saving the model; {out_dir} holds {kept}: run the same "
            f"command with --resume to save it from the last checkpoint in {checkpoints}"
        )
    return f"interrupted while saving the model; {out_dir} holds {kept}"


def _manifest_bytes(out_dir: Path) -> bytes | None:
    try:
        return (out_dir / MANIFEST).read_bytes()
    except OSError:
        return None


def _tuning_summary(tuning: dict) -> str:
    """What a search of settings tried and chose, one line each."""
    if "continued_from" in tuning:  # a warm start trains with what the old search chose
        changes = ", ".join(f"{k}={v}" for k, v in tuning["chosen"].items()) or "as given"
        return f"tuning: the settings the search of {tuning['continued_from']} chose: {changes}"
    lines = [f"tuning: {len(tuning['tried'])} of {tuning['candidates']} settings tried in "
             f"{tuning['seconds']:.0f} s (budget {tuning['budget_seconds']:g} s)"]  # fmt: skip
    for tried in tuning["tried"]:
        changes = ", ".join(f"{k}={v}" for k, v in tried["changes"].items()) or "as given"
        score = tried["val_recall@10"]
        mark = "*" if tried["changes"] == tuning["chosen"] else " "
        lines.append(
            f" {mark} {changes}: validation Recall@10 "
            f"{'-' if score is None else f'{score:.4f}'}, best epoch {tried['best_epoch']}, "
            f"{tried['seconds']:.0f} s"
        )
    return "\n".join(lines)


def _relaunch_with_torchrun(nproc: int) -> None:
    """Run this same command under torchrun's launcher, in ``nproc`` processes."""
    arguments, skip = [], False
    for argument in sys.argv[1:]:
        if skip:
            skip = False
        elif argument == "--nproc":
            skip = True
        elif not argument.startswith("--nproc="):
            arguments.append(argument)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    os.execv(sys.executable, [*launcher, f"--nproc_per_node={nproc}", "-m", "embedrec", *arguments])


def _explicit_flags() -> set[str]:
    context = click.get_current_context()
    return {
        name
        for name, value in context.params.items()
        if context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
        and value is not None
    }


# the sections a --config file may have
CONFIG_SECTIONS = ("train", "events", "features")


def _read_config(path: str, explicit: set[str]) -> dict[str, Any]:
    """Recommender parameters from a TOML file; flags given on the command line win."""
    try:
        # utf-8-sig: Windows editors (Notepad) start a UTF-8 file with a byte order mark
        data = tomllib.loads(Path(path).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise DataError("config file not found", file=path) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"not valid TOML: {exc}", file=path) from None
    _check_sections(data, path)
    params = {k: v for k, v in data.get("train", {}).items() if k not in explicit}
    if "events" in data:
        try:
            check_event_weights(data["events"], key=lambda event: f"[events] {event}")
        except ValueError as exc:
            raise DataError(str(exc), file=path) from None
        params["event_weights"] = data["events"]
    if "features" in data:
        params["schema"] = SchemaConfig.from_mapping(data["features"], source=path)
    allowed = set(DEFAULTS)
    unknown = set(params) - allowed - {"schema"}
    if unknown:
        raise DataError(
            f"unknown [train] setting(s): {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(allowed))}",
            file=path,
        )
    try:
        Recommender(**params).check_params(continuing=True)  # fit checks the rest
    except (TypeError, ValueError) as exc:
        raise DataError(f"[train]: {exc}", file=path) from None
    return params


def _check_sections(data: dict[str, Any], path: str) -> None:
    """A misspelt ``[trian]`` or a setting above every section would otherwise be ignored
    and the run train with the defaults."""
    known = ", ".join(f"[{name}]" for name in CONFIG_SECTIONS)
    loose = sorted(k for k, v in data.items() if not isinstance(v, dict))
    if loose:
        raise DataError(
            f"setting(s) outside a section: {', '.join(loose)}; sections: {known}", file=path
        )
    unknown = sorted(set(data) - set(CONFIG_SECTIONS))
    if unknown:
        names = ", ".join(f"[{name}]" for name in unknown)
        raise DataError(f"unknown section(s) {names}; known: {known}", file=path)


# ---------------------------------------------------------------------------- queries
def _query_options(command: Callable) -> Callable:
    command = click.option(
        "--filter",
        "filters",
        multiple=True,
        help="Repeatable: price<=25000, year>=2018, make=Nissan,Toyota, body!=van, "
        "within=51.05,13.74,100km, exclude=ID1,ID2; a value in double quotes may hold "
        'commas: make="Rolls, Royce",Toyota.',
    )(command)
    command = click.option(
        "--exclude",
        multiple=True,
        help="Listing ids never returned: comma-separated (L1,L2), or the option repeated, "
        "which takes each value whole (--exclude 'L,1' --exclude L2).",
    )(command)
    command = click.option(
        "--json", "as_json", is_flag=True, help="One JSON object per query, one per line."
    )(command)
    command = click.option(
        "--listings",
        type=click.Path(),
        help="Catalogue to search (CSV or Parquet), e.g. today's listings.",
    )(command)
    command = click.option(
        "-k", type=click.IntRange(1, 1000), default=10, show_default=True, help="Number of results."
    )(command)
    return command


def _batch_options(command: Callable) -> Callable:
    command = click.option(
        "--chunk-size",
        type=click.IntRange(1),
        default=CHUNK_SIZE,
        show_default=True,
        help="Queries ranked at once with --out: memory grows with it.",
    )(command)
    command = click.option(
        "--out",
        "out_file",
        type=click.Path(),
        help="Parquet file for the top k of every query; under torchrun (RANK, WORLD_SIZE) a "
        "directory of part-RANK.parquet files.",
    )(command)
    return command


def _id_list(values: tuple[str, ...]) -> list[str]:
    """The ids of a repeatable id-list option (``--session``, ``--exclude``): one value holds
    ids between commas, spaces around them trimmed; the option repeated takes each value
    whole, so that an id with a comma or surrounding spaces can be named."""
    given = values if len(values) > 1 else [v.strip() for v in "".join(values).split(",")]
    return [v for v in given if v.strip()]


def _with_exclusions(filters: tuple[str, ...], exclude: tuple[str, ...]) -> list:
    """``--filter`` expressions, and an ExcludeFilter of the ``--exclude`` ids; a UsageError
    where ``--exclude`` names none (``--exclude ''``), which would exclude nothing silently."""
    if not exclude:
        return list(filters)
    ids = _id_list(exclude)
    if not ids:
        raise click.UsageError(f"--exclude names no listing id: {' '.join(map(repr, exclude))}")
    return [*filters, ExcludeFilter(frozenset(ids))]


def _check_batch(
    everything: bool, flag: str, ids: tuple, out_file: str | None, **other: Any
) -> tuple[int, int] | None:
    """Usage errors of a batch output, found before the model loads; the torchrun rank."""
    if not everything:
        if out_file:
            raise click.UsageError(f"--out writes the answers of {flag}; give {flag} too")
        return None
    if ids:
        raise click.UsageError(f"{flag} ranks every query; give no ids with it")
    if not out_file:
        raise click.UsageError(f"{flag} needs --out FILE.parquet")
    for option, value in other.items():
        if value:
            raise click.UsageError(f"{option} does not go with {flag}")
    part = torchrun_rank()
    try:
        check_output(out_file, part)
    except ValueError as exc:
        raise click.UsageError(f"--out {exc}") from None
    return part


def _write_batch(
    write: Callable[..., Any], out_file: str, part: tuple[int, int] | None, **options: Any
) -> None:
    written = write(out_file, part=part, **options)
    share = f" (rank {part[0]} of {part[1]})" if part else ""
    click.echo(
        f"wrote {written.rows:,} rows for {written.queries:,} queries{share} to {written.path}"
    )


@main.command()
@click.argument("model_dir", type=click.Path())
@click.argument("listing_ids", nargs=-1)
@click.option("--all", "all_listings", is_flag=True, help="Every catalogue listing; needs --out.")
@_batch_options
@_query_options
@_user_errors
def similar(
    model_dir: str,
    listing_ids: tuple[str, ...],
    all_listings: bool,
    out_file: str | None,
    chunk_size: int,
    k: int,
    listings: str | None,
    as_json: bool,
    filters: tuple[str, ...],
    exclude: tuple[str, ...],
) -> None:
    """Listings most similar to each LISTING_ID (hybrid: those a visitor who viewed it views
    next, as the model predicts; mf, deep: cosine of listing embeddings), or to every listing
    (--all --out FILE.parquet: query_id, rank, listing_id, score)."""
    if not listing_ids and not all_listings:
        raise click.UsageError("give LISTING_ID(s) or --all --out FILE.parquet")
    part = _check_batch(all_listings, "--all", listing_ids, out_file, **{"--json": as_json})
    searched = _with_exclusions(filters, exclude)
    retriever = _retriever(_load(model_dir), listings)
    if all_listings:
        options = {"k": k, "filters": searched, "chunk_size": chunk_size}
        _write_batch(retriever.similar_all, out_file, part, **options)
        return
    queries = [parse_id(v, retriever.catalogue.id_dtype) for v in listing_ids]
    answers = [
        _answer(lambda q=query: retriever.similar([q], k, searched)[0], query) for query in queries
    ]
    _print_results(answers, as_json, reference_key="similar to")
    _exit_if_unknown(answers)


@main.command()
@click.argument("model_dir", type=click.Path())
@click.argument("user_ids", nargs=-1)
@click.option(
    "--session",
    multiple=True,
    help="Listing ids viewed by an anonymous visitor: comma-separated (L1,L2), or the option "
    "repeated, which takes each value whole (--session 'L,1' --session L2).",
)
@click.option("--all-users", is_flag=True, help="Every known user; needs --out.")
@_batch_options
@_query_options
@_user_errors
def recommend(
    model_dir: str,
    user_ids: tuple[str, ...],
    session: tuple[str, ...],
    all_users: bool,
    out_file: str | None,
    chunk_size: int,
    k: int,
    listings: str | None,
    as_json: bool,
    filters: tuple[str, ...],
    exclude: tuple[str, ...],
) -> None:
    """Listings to recommend to each known USER_ID (seen ones excluded), to a --session, or
    to every user (--all-users --out FILE.parquet: user_id, rank, listing_id, score)."""
    if not user_ids and not any(session) and not all_users:
        raise click.UsageError("give USER_ID(s), --session L1,L2,... or --all-users --out FILE")
    part = _check_batch(
        all_users,
        "--all-users",
        user_ids,
        out_file,
        **{"--session": any(session), "--json": as_json},
    )
    searched = _with_exclusions(filters, exclude)
    retriever = _retriever(_load(model_dir), listings)
    if all_users:
        options = {"k": k, "filters": searched, "chunk_size": chunk_size}
        _write_batch(retriever.recommend_all, out_file, part, **options)
        return
    answers = []
    if any(session):
        id_dtype = retriever.catalogue.id_dtype
        viewed = [parse_id(s, id_dtype) for s in _id_list(session)]
        answer = _answer(lambda: retriever.recommend_session(viewed, k, searched), viewed)
        if "unknown" in answer:
            click.echo(f"note: unknown session listing(s): {answer['unknown']}", err=True)
        answers.append(answer)
    for user in user_ids:
        query = parse_id(user, retriever.users.ids.dtype)
        answers.append(_answer(lambda q=query: retriever.recommend([q], k, searched)[0], query))
    _print_results(answers, as_json, reference_key="for")
    _exit_if_unknown(answers)


def _answer(run: Callable[[], Results], query: Any) -> dict:
    """One query's ``--json`` object: its results, or the error an unknown id gives, so
    that the other queries still run."""
    try:
        return run().to_dict()
    except UnknownIdError as exc:
        return {"query": query, "error": str(exc)}


def _exit_if_unknown(answers: list[dict]) -> None:
    """After every answer is printed: say how many queries were unknown, and exit with status
    2 where all were, so that a script can tell that nothing was answered."""
    unknown = sum("error" in answer for answer in answers)
    if not unknown:
        return
    counted = f"{unknown:,} of {len(answers):,} queries unknown"
    if unknown == len(answers):
        click.echo(f"error: {counted}; none answered", err=True)
        sys.exit(2)
    click.echo(f"note: {counted}", err=True)


def _retriever(recommender: Recommender, listings: str | None) -> Retriever:
    retriever = recommender.retriever(listings)
    unknown = retriever.unknown
    if unknown:
        shown = ", ".join(map(str, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
        where = listings or "the training listings"  # None: the model's own catalogue
        click.echo(
            f"note: {len(unknown):,} listing(s) in {where} are unknown to the model "
            f"and not searched: {shown}",
            err=True,
        )
    return retriever


@main.command()
@click.argument("model_dir", type=click.Path())
@click.option(
    "--listings",
    required=True,
    type=click.Path(),
    help="Listings to embed (CSV or Parquet); new ones are embedded from features.",
)
@click.option(
    "--out",
    "out_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="Parquet file to write: listing_id, embedding.",
)
@_user_errors
def embed(model_dir: str, listings: str, out_file: str) -> None:
    """Write the embedding of every listing in --listings, without retraining."""
    from embedrec.data.atomic import write_parquet

    try:  # before the model loads: a name that promises CSV would hold Parquet
        check_output(out_file)
    except ValueError as exc:
        raise click.UsageError(f"--out {exc}") from None
    frame = _load(model_dir).embed(listings)
    write_parquet(frame, out_file)
    click.echo(
        f"wrote {len(frame):,} vectors of {len(frame['embedding'].iloc[0])} dims to {out_file}"
    )


@main.command()
@click.argument("model_dir", type=click.Path())
@click.option(
    "--interactions",
    required=True,
    type=click.Path(),
    help=f"Held-out interactions (later than training): {SOURCES}.",
)
@click.option("--listings", type=click.Path(), help="Catalogue to rank (default: training's).")
@click.option(
    "-k",
    "ks",
    type=CutOffs(),
    default="10,20",
    show_default=True,
    help="Cut-offs, comma-separated.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_window_options
@_user_errors
def evaluate(
    model_dir: str,
    interactions: str,
    listings: str | None,
    ks: tuple[int, ...],
    as_json: bool,
    since: str | None,
    until: str | None,
) -> None:
    """Recall, NDCG, HitRate, MRR and coverage, overall and for warm and cold listings.

    Recall@k is a user's hits in the top k over min(k, their relevant listings); NDCG@k uses
    binary gains and the same ideal. A listing the model cannot embed counts as a miss."""
    report = _load(model_dir).evaluate(
        interactions, listings=listings, ks=ks, since=since, until=until
    )
    for note in (_seen_note(report["counts"]), _learned_pairs_note(report.get("similar", {}))):
        if note:
            click.echo(note, err=True)
    click.echo(json_line(report) if as_json else format_report(report, ks))
    nothing = _nothing_scored(report)
    if nothing:
        click.echo(f"error: {nothing}", err=True)
        sys.exit(2)


def _nothing_scored(report: dict) -> str | None:
    """Why no metric has a value, when no user and no session pair was scored, so that a
    script can tell an empty evaluation from a poor model."""
    similar = report.get("similar", {})
    pairs = sum(similar.get(part, {}).get("pairs", 0) for part in ("warm", "cold"))
    if report["overall"]["users"] or pairs:
        return None
    counts = report["counts"]
    skipped = [
        f"{count:,} {name.removeprefix('events_skipped_').replace('_', ' ')}"
        for name, count in counts.items()
        if name.startswith("events_skipped_") and count
    ]
    why = f" (skipped: {'; '.join(skipped)})" if skipped else ""
    return f"nothing to evaluate: no user or session pair in {counts['events']:,} events{why}"


def format_report(report: dict, ks: tuple[int, ...]) -> str:
    """One row per metric, one column per part (overall, warm, cold); per-user means with
    their standard error, so a reader sees which differences are noise."""
    from embedrec.evaluation.metrics import METRICS

    parts = [part for part in ("overall", "warm", "cold") if part in report]
    rows = [{"metric": "users", **{part: f"{report[part]['users']:,}" for part in parts}}]
    for k in ks:
        for name in METRICS:
            row = {"metric": f"{name}@{k}"}
            for part in parts:
                value, error = report[part][f"{name}@{k}"], report[part].get(f"{name}@{k}_se")
                row[part] = _metric_cell(value, error)
            rows.append(row)
    # similar@k: the next listing viewed in a session is among the first one's k similar
    similar = report.get("similar", {})
    for k in ks:
        row = {"metric": f"similar@{k}"}
        for part in parts:
            hits = similar.get(part, {})
            row[part] = _metric_cell(hits.get(f"hit@{k}"), hits.get(f"hit@{k}_se"))
        rows.append(row)
    counts = {**report["counts"]}
    for part in ("warm", "cold"):
        if part in similar:
            counts[f"similar_pairs_{part}"] = similar[part]["pairs"]
    counts = ", ".join(f"{k}: {v:,}" for k, v in counts.items())
    return format_table(rows, ["metric", *parts]) + "\n" + counts


def _seen_note(counts: dict[str, int]) -> str | None:
    """Why fewer users are scored than have test events, when that is so."""
    if not counts.get("events_skipped_seen_in_training"):
        return None
    return (
        f"note: {counts['events_skipped_seen_in_training']:,} test events were on listings "
        "their user already viewed in training and are not scored (rankings leave those out); "
        f"{counts['users_skipped_all_seen']:,} of {counts['users']:,} users had none left"
    )


def _learned_pairs_note(similar: dict) -> str | None:
    """Why fewer session pairs judge similar listings than were read, when training saw
    them."""
    learned = similar.get("counts", {}).get("pairs_seen_in_training", 0)
    if not learned:
        return None
    return (
        f"note: {learned:,} session pairs were viewed together by their user in training and "
        "are not judged for similar@k (the model learned them)"
    )


def _metric_cell(value: float | None, error: float | None) -> str:
    """0.1384 ± 0.0065; - where there is no value (no user or pair to average over)."""
    shown = f"{value:.4f}" if value is not None and math.isfinite(value) else "-"
    if error is not None and math.isfinite(error):
        shown += f" ± {error:.4f}"
    return shown


def json_line(value: Any) -> str:
    """``value`` as strict JSON (RFC 8259) on one line: NaN and infinities as null, NumPy
    numbers as numbers, anything else unknown as its text."""
    return json.dumps(plain(value), ensure_ascii=False, allow_nan=False, default=str)


def _load(model_dir: str) -> Recommender:
    return Recommender.load(model_dir)


def _print_results(results: list[dict], as_json: bool, reference_key: str) -> None:
    if as_json:
        for result in results:
            click.echo(json_line(result))
        return
    for result in results:
        if "error" in result:
            click.echo(f"error: {result['error']}", err=True)
            continue
        click.echo(f"\n{reference_key} {result['query']}")
        click.echo(format_table(result["results"]))


# columns a result table shows; --json shows every field
TABLE_COLUMNS = 10


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain-text table of result rows. Without ``columns``: the first ten fields, dates
    aside, and a line under the table saying how many were left out."""
    if not rows:
        return "(no results)"
    note = ""
    if columns is None:
        fields = list(rows[0])
        columns = [c for c in fields if not _holds_dates(rows, c)][:TABLE_COLUMNS]
        left_out = len(fields) - len(columns)
        if left_out:
            plural = "s" if left_out > 1 else ""
            note = f"\n({left_out} more column{plural} not shown; --json shows every field)"
    by_column = [_cells([row.get(c) for row in rows], c) for c in columns]
    cells = [list(row) for row in zip(*by_column, strict=True)]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines) + note


# a date or a time as the results write it (2026-12-01, 2026-12-01T00:00:00+00:00)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9:.]+(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?")


def _holds_dates(rows: list[dict], column: str) -> bool:
    """Whether a result column holds dates: named so (``listed_at``) or, whatever its name
    (``posted_on``, ``available_from``), every value it has a date or a time."""
    if column.endswith("_at"):
        return True
    values = [row.get(column) for row in rows if row.get(column) is not None]
    return bool(values) and all(isinstance(v, str) and _DATE.fullmatch(v) for v in values)


# significant digits of a column's largest fraction; prices keep their cents all the same
_SIGNIFICANT = 3
# coordinates to about 10 m: a degree of latitude is 111 km
_COORDINATES = {name for pair in LAT_LON_COLUMNS for name in pair}
_COORDINATE_DECIMALS = 4


def _cells(values: list[Any], column: str) -> list[str]:
    """A column's values as text, numbers alike down the column: whole numbers without
    decimals (3, 23,221), others with the fewest decimals that write every value of the
    column exactly, at most those that give its largest value three significant digits
    (0.873), or two (a price's cents: 149.99, 100.40 beside it, never rounded to 150);
    coordinates with four (about 10 m)."""
    numbers = [
        v
        for v in values
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ]
    exact = _is_exact(column)  # an id pasted back must be the id: 1001, never 1,001
    fractions = [abs(v) for v in numbers if not float(v).is_integer()]
    decimals = 0
    if fractions and not exact:
        largest = max(abs(v) for v in numbers)
        most = max(2, _SIGNIFICANT - 1 - math.floor(math.log10(largest)))
        if column in _COORDINATES:
            most = _COORDINATE_DECIMALS
        # within float32's precision: 96.5 read from a float32 column is 96.5, not 96.50000001
        decimals = next(
            (d for d in range(most) if all(abs(round(v, d) - v) <= 1e-6 * v for v in fractions)),
            most,
        )
    return [_cell(v, decimals, exact) for v in values]


def _cell(value: Any, decimals: int, exact: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if exact:  # years and ids: 2018, not 2,018 (2018.0 where a missing value made floats)
        return str(int(value)) if float(value).is_integer() else str(value)
    return f"{value:,.{decimals}f}"  # 8,500 and 23,221 in one price column


def _is_exact(column: str) -> bool:
    """Columns shown exactly as stored: ids, and years (2018, not 2,018; ``year_built``
    and ``founded_year`` too, as ``embedrec inspect`` reads years)."""
    name = column.lower()
    years = name.endswith("year") or name.startswith("year_")
    return name == "id" or name.endswith("_id") or years


# ---------------------------------------------------------------------------- demo
@main.command()
@click.option(
    "--cache",
    type=click.Path(file_okay=False),
    default=lambda: str(cache_root()),
    show_default="$EMBEDREC_CACHE, else $XDG_CACHE_HOME/embedrec, else ~/.cache/embedrec",
    help="Where the generated data and the model are kept between runs.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Random seed of the generated data and of the training.",
)
@_user_errors
def demo(cache: str, seed: int) -> None:
    """Generate the small car data (cached), train, and show the Qashqai's neighbours."""
    from embedrec.datasets.cars import generate_cars
    from embedrec.datasets.geography import haversine_km
    from embedrec.recommender import Recommender

    data_dir = Path(cache) / f"cars-small-seed{seed}"
    if not (data_dir / "interactions.parquet").exists():
        click.echo(f"generating the small car marketplace in {data_dir}")
        generate_cars(data_dir, size="small", seed=seed, progress=None)
    else:
        click.echo(f"using cached car data in {data_dir}")
    # ten epochs reach the plateau on the small data, and the demo skips the refit on the
    # held-out tenth: the neighbours barely change and the demo stays within minutes
    recommender = Recommender(seed=seed, epochs=10, refit=False).fit(
        data_dir / "interactions.parquet", data_dir / "listings.parquet"
    )
    recommender.save(Path(cache) / f"model-small-seed{seed}")
    query = "qashqai-dresden"
    [result] = recommender.similar([query], k=10)
    result = result.to_dict()
    table = recommender.listing_table_
    origin = table.loc[table["listing_id"] == query].iloc[0]
    rows = result["results"]
    lat = np.array([r["lat"] for r in rows])
    lon = np.array([r["lon"] for r in rows])
    km = haversine_km(origin["lat"], origin["lon"], lat, lon)
    for row, distance in zip(rows, km, strict=True):
        row["km"] = round(float(distance))
    click.echo(
        f"\n{origin['year']} {origin['make']} {origin['model']}, {origin['price']:,} EUR, "
        f"{origin['city']}: the 10 most similar listings"
    )
    click.echo(format_table(rows, ["make", "model", "year", "price", "city", "km", "score"]))
    within = float(np.mean(km <= 100))
    same_segment = float(np.mean([r["segment"] == origin["segment"] for r in rows]))
    rng = np.random.default_rng(seed)
    sample = table.iloc[rng.choice(len(table), size=min(2000, len(table)), replace=False)]
    random_km = haversine_km(
        origin["lat"], origin["lon"], sample["lat"].to_numpy(), sample["lon"].to_numpy()
    )
    click.echo(
        f"\nwithin 100 km of {origin['city']}: {within:.0%} "
        f"(random listings: {np.mean(random_km <= 100):.0%})"
    )
    click.echo(
        f"same segment ({origin['segment']}): {same_segment:.0%} "
        f"(random listings: {np.mean(sample['segment'] == origin['segment']):.0%})"
    )


# ---------------------------------------------------------------------------- maps
@main.command()
@click.argument("model_dir", type=click.Path())
@click.option(
    "--out",
    "out_file",
    required=True,
    type=click.Path(dir_okay=False),
    help=".html (interactive, self-contained) or .png (static).",
)
@click.option(
    "--method",
    type=click.Choice(["pca", "tsne", "umap"]),
    default="pca",
    show_default=True,
    help="Projection method (not with --similar-to).",
)
@click.option(
    "--color",
    help="Listing field to colour by (make, segment, price, region, ...; not date-times, "
    "'|'-separated sets or free text; not with --similar-to).",
)
@click.option(
    "--sample",
    type=click.IntRange(1),
    default=50_000,
    show_default=True,
    help="Most listings to project (not with --similar-to).",
)
@click.option("--listings", type=click.Path(), help="Catalogue to draw (default: training's).")
@click.option(
    "--similar-to",
    "similar_to",
    help="Draw this listing and its neighbours on a map of Germany (of their own area where "
    "they lie far from it or within 50 km of each other, as a city's flats do) instead of a "
    "projection; "
    "--method, --color, --sample and --seed, which only a projection reads, are then an error.",
)
@click.option(
    "-k",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Neighbours for --similar-to.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Projection sample and layout."
)
@_user_errors
def plot(
    model_dir: str,
    out_file: str,
    method: str,
    color: str | None,
    sample: int,
    listings: str | None,
    similar_to: str | None,
    k: int,
    seed: int,
) -> None:
    """Map the listing embeddings in 2D (PCA, t-SNE, UMAP), or a listing's neighbours."""
    from embedrec.viz import colour_problem, plot_neighbours_map, plot_projection, project
    from embedrec.viz.projection import METHOD_NAMES

    _check_figure_output(Path(out_file))  # a typo stops now, not after loading and a t-SNE
    if similar_to is not None:
        if not similar_to.strip():
            raise click.UsageError("--similar-to needs a listing id; it was empty")
        # given with a neighbour map they would be ignored: the user meant something else
        ignored = [
            f"--{name}"
            for name in ("method", "color", "sample", "seed")
            if name in _explicit_flags()
        ]
        if ignored:
            raise click.UsageError(
                f"{', '.join(ignored)} set(s) a projection, which --similar-to does not draw"
            )
    recommender = _load(model_dir)
    retriever = _retriever(recommender, listings)
    catalogue = retriever.catalogue
    if similar_to is not None:
        query_id = parse_id(similar_to, catalogue.id_dtype)
        [result] = retriever.similar([query_id], k)
        rows = catalogue.rows_of([query_id])
        if rows[0] < 0:
            raise DataError(f"listing {query_id!r} is not in the catalogue")
        [query] = catalogue.fields(rows)
        path = plot_neighbours_map(
            query,
            [hit.to_dict() for hit in result.hits],
            out_file,
            # the hits found: a small or filtered catalogue may hold fewer than k others
            title=f"{query_id} and its {_found(len(result.hits), k)} most similar listings",
            text_fields=[
                column
                for spec in getattr(recommender, "feature_specs_", None) or []
                if spec.kind == "text"
                for column in spec.columns
            ],
        )
    else:
        live = np.flatnonzero(catalogue.live)
        # a misspelt column stops now, not after a projection that may take minutes
        problem = None if color is None else colour_problem(catalogue.table.iloc[live], color)
        if problem is not None:
            raise click.UsageError(f"--color {color}: {problem}")
        rows, coords = project(catalogue.vectors[live], method=method, sample=sample, seed=seed)
        table = catalogue.table.iloc[live[rows]].reset_index(drop=True)
        path = plot_projection(
            coords,
            table,
            color,
            out_file,
            title=f"{METHOD_NAMES[method]} of {len(rows):,} listing embeddings",
        )
    click.echo(f"wrote {path}")


def _check_figure_output(out: Path) -> None:
    """Refuse an ``--out`` that the figure could not be written to: another suffix than
    .html or .png, a file where a folder is needed, a folder that is not writable. Missing
    folders are made when the figure is written, as every other ``--out``'s are."""
    if out.suffix.lower() not in (".html", ".png"):
        raise click.UsageError(f"--out must end in .html or .png, got {out.name!r}")
    existing = next(above for above in out.parents if above.exists())
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise click.UsageError(f"--out {out}: the folder {existing} is not writable")


def _found(found: int, k: int) -> str:
    return f"{found}" if found == k else f"{found} (of {k} asked)"


@main.command("inspect")
@click.argument("model_dir", type=click.Path())
@click.option("--listings", type=click.Path(), help="Catalogue to inspect (default: training's).")
@click.option(
    "-k",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Nearest neighbours of each query listing.",
)
@click.option(
    "--sample",
    type=click.IntRange(1),
    default=2000,
    show_default=True,
    help="Query listings sampled.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@_user_errors
def inspect_command(
    model_dir: str, listings: str | None, k: int, sample: int, as_json: bool
) -> None:
    """What the embeddings encode: how often neighbours share each feature, vs random pairs."""
    from embedrec.viz import format_inspection, inspect_embeddings

    recommender = _load(model_dir)
    catalogue = _retriever(recommender, listings).catalogue
    live = np.flatnonzero(catalogue.live)
    table = catalogue.table.iloc[live].reset_index(drop=True)
    kinds = column_kinds(getattr(recommender, "feature_specs_", None))
    result = inspect_embeddings(catalogue.vectors[live], table, k=k, sample=sample, kinds=kinds)
    click.echo(json_line(result) if as_json else format_inspection(result))


def _register_serve() -> None:
    try:
        from embedrec.serving.command import serve_command
    except ImportError:  # the service's extra dependencies are missing
        return
    main.add_command(serve_command, "serve")


_register_serve()


if __name__ == "__main__":
    main()
