"""The ``embedrec`` command: parses flags, calls the library, prints."""

from __future__ import annotations

import functools
import json
import os
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from embedrec.bundle import BundleError
from embedrec.data.errors import DataError
from embedrec.data.schema import SchemaConfig

USER_ERRORS = (DataError, BundleError, FileNotFoundError)


def _user_errors(command: Callable) -> Callable:
    """Bad input ends with a one-line message and exit status 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except ValueError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="embedrec")
def main() -> None:
    """Embeddings of marketplace listings: similar listings, recommendations, cold start."""


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

    paths = generate_cars(out_dir, size=size, seed=seed, progress=True)
    for name, path in paths.items():
        click.echo(f"{name:<13} {path}")


# ---------------------------------------------------------------------------- train
@main.command()
@click.option(
    "--interactions",
    required=True,
    type=click.Path(),
    help="CSV or Parquet: user_id, listing_id, timestamp[, event, weight].",
)
@click.option(
    "--listings",
    required=True,
    type=click.Path(),
    help="CSV or Parquet: listing_id plus feature columns.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Model directory to write.",
)
@click.option("--model", default="mf", show_default=True, help="Model: mf.")
@click.option("--dim", type=int, default=32, show_default=True, help="Embedding dimensions.")
@click.option(
    "--epochs",
    type=int,
    default=30,
    show_default=True,
    help="Most epochs; early stopping usually ends sooner.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(),
    help="TOML: [train] parameters, [events] weights, [features] types and drops.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
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
    device: str,
) -> None:
    """Train a model and save it as a directory."""
    from embedrec.recommender import Recommender

    params: dict[str, Any] = {
        "model": model,
        "dim": dim,
        "epochs": epochs,
        "seed": seed,
        "device": device,
    }
    if config_file:
        params.update(_read_config(config_file, explicit=_explicit_flags()))
    recommender = Recommender(**params).fit(interactions, listings)
    path = recommender.save(out_dir)
    click.echo(f"saved {path}")


def _explicit_flags() -> set[str]:
    context = click.get_current_context()
    return {
        name
        for name, value in context.params.items()
        if context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
        and value is not None
    }


def _read_config(path: str, explicit: set[str]) -> dict[str, Any]:
    """Recommender parameters from a TOML file; flags given on the command line win."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("config file not found", file=path) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"not valid TOML: {exc}", file=path) from None
    params = {k: v for k, v in data.get("train", {}).items() if k not in explicit}
    if "events" in data:
        params["event_weights"] = data["events"]
    if "features" in data:
        params["schema"] = SchemaConfig.from_mapping(data["features"], source=path)
    from embedrec.recommender import Recommender

    allowed = set(Recommender().get_params())
    unknown = set(params) - allowed - {"schema"}
    if unknown:
        raise DataError(
            f"unknown [train] setting(s): {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(allowed))}",
            file=path,
        )
    return params


# ---------------------------------------------------------------------------- queries
def _query_options(command: Callable) -> Callable:
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


@main.command()
@click.argument("model_dir", type=click.Path())
@click.argument("listing_ids", nargs=-1, required=True)
@_query_options
@_user_errors
def similar(
    model_dir: str, listing_ids: tuple[str, ...], k: int, listings: str | None, as_json: bool
) -> None:
    """Listings most similar to each LISTING_ID (cosine of listing embeddings)."""
    recommender = _load(model_dir)
    queries = _match_id_types(listing_ids, recommender.listing_table_["listing_id"])
    _warn_unknown_catalogue(recommender, listings)
    results = recommender.similar(queries, k=k, listings=listings)
    _print_results(results, as_json, reference_key="similar to")


@main.command()
@click.argument("model_dir", type=click.Path())
@click.argument("user_ids", nargs=-1, required=True)
@_query_options
@_user_errors
def recommend(
    model_dir: str, user_ids: tuple[str, ...], k: int, listings: str | None, as_json: bool
) -> None:
    """Listings to recommend to each known USER_ID, excluding those they have seen."""
    recommender = _load(model_dir)
    queries = _match_id_types(user_ids, recommender.users_.ids)
    _warn_unknown_catalogue(recommender, listings)
    results = recommender.recommend(queries, k=k, listings=listings)
    _print_results(results, as_json, reference_key="for user")


def _load(model_dir: str):  # noqa: ANN202 - the Recommender, imported lazily for a fast --help
    from embedrec.recommender import Recommender

    return Recommender.load(model_dir)


def _match_id_types(raw: tuple[str, ...], known) -> list:  # noqa: ANN001
    """Command-line ids are text; integer ids in the model are matched as integers."""
    import pandas as pd

    if pd.api.types.is_integer_dtype(pd.Index(known).dtype):
        return [int(v) if v.lstrip("-").isdigit() else v for v in raw]
    return list(raw)


def _warn_unknown_catalogue(recommender, listings: str | None) -> None:  # noqa: ANN001
    if listings is None:
        return
    _, unknown = recommender.catalogue(listings)
    if unknown:
        shown = ", ".join(map(str, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
        click.echo(
            f"note: {len(unknown):,} listing(s) in {listings} are unknown to the model "
            f"and not searched: {shown}",
            err=True,
        )


def _print_results(results: list[dict], as_json: bool, reference_key: str) -> None:
    if as_json:
        for result in results:
            click.echo(json.dumps(result, ensure_ascii=False, default=str))
        return
    for result in results:
        if "error" in result:
            click.echo(f"error: {result['error']}", err=True)
            continue
        click.echo(f"\n{reference_key} {result['query']}")
        click.echo(format_table(result["results"]))


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain-text table of result rows."""
    if not rows:
        return "(no results)"
    columns = columns or [c for c in rows[0] if not c.endswith("_at")][:10]
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return "" if value is None else str(value)


# ---------------------------------------------------------------------------- demo
@main.command()
@click.option(
    "--cache",
    type=click.Path(file_okay=False),
    default=lambda: os.environ.get("EMBEDREC_CACHE", str(Path.home() / ".cache" / "embedrec")),
    show_default="$EMBEDREC_CACHE or ~/.cache/embedrec",
    help="Where the generated data and the model are kept between runs.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@_user_errors
def demo(cache: str, seed: int) -> None:
    """Generate the small car data (cached), train, and show the Qashqai's neighbours."""
    from embedrec.datasets.cars import generate_cars
    from embedrec.datasets.geography import haversine_km
    from embedrec.recommender import Recommender

    data_dir = Path(cache) / f"cars-small-seed{seed}"
    if not (data_dir / "interactions.parquet").exists():
        click.echo(f"generating the small car marketplace in {data_dir}")
        generate_cars(data_dir, size="small", seed=seed, progress=True)
    else:
        click.echo(f"using cached car data in {data_dir}")
    recommender = Recommender(seed=seed).fit(
        data_dir / "interactions.parquet", data_dir / "listings.parquet"
    )
    recommender.save(Path(cache) / f"model-small-seed{seed}")
    query = "qashqai-dresden"
    [result] = recommender.similar([query], k=10)
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
