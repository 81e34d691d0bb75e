"""Car marketplace evaluation: our models against baselines on a global time split.

    python benchmarks/evaluation.py [--size small] [--seed 0] [--out docs/evaluation.md]
    python benchmarks/evaluation.py --movielens-only     # rewrites only the MovieLens part
    python benchmarks/evaluation.py --text-on-off --seeds 0,1,2   # only the text on/off part
    python benchmarks/evaluation.py --similar --epochs 12   # only similar listings by behaviour
    python benchmarks/evaluation.py --similar --smoke --size tiny   # the same in seconds

Trains on everything before the last week and evaluates on the last week, where many
listings are new. The catalogue at test time is every listing active in that week; listings
first seen in it are cold. Also measures the neighbours of warm and cold listings against the
structure users shop by: distance, segment and price. ``--similar`` judges similar listings
by behaviour instead (the next listing viewed in a session) against item-kNN on co-views and
LightFM (``similar_listings.py``).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy
import torch
from movielens import parse_setting
from report_page import write_generated

from embedrec import Recommender, __version__
from embedrec.data.atomic import write_atomic
from embedrec.datasets.cars import generate_cars
from embedrec.datasets.geography import haversine_km
from embedrec.evaluation import EASE, ItemKNN, Popularity
from embedrec.evaluation.metrics import evaluate_scorer
from embedrec.evaluation.report import warm_cold_report
from embedrec.retrieval.evaluation import EvaluationTask
from embedrec.retrieval.evaluation import scorer as model_scorer

KS = (10, 20)
# the page's two generated parts, each rewritten only by the run that measures it
CARS = ("<!-- generated:cars:start -->", "<!-- generated:cars:end -->")
MOVIELENS = ("<!-- generated:movielens:start -->", "<!-- generated:movielens:end -->")
TEXT = ("<!-- generated:text:start -->", "<!-- generated:text:end -->")
SIMILAR = ("<!-- generated:similar:start -->", "<!-- generated:similar:end -->")
TEXT_COLUMNS = ["title", "description"]
WEEK = pd.Timedelta(days=7)


def split_by_week(data_dir: Path) -> tuple[pd.DataFrame, ...]:
    """Train before the last week; test in it; listings known at training time; catalogue."""
    listings = pd.read_parquet(data_dir / "listings.parquet")
    events = pd.read_parquet(data_dir / "interactions.parquet")
    start = events["timestamp"].max() - WEEK
    train, test = events[events["timestamp"] < start], events[events["timestamp"] >= start]
    known = listings[listings["listed_at"] < start]
    active = listings[listings["sold_at"].isna() | (listings["sold_at"] >= start)]
    return train, test, known, active


def feature_matrices(known: pd.DataFrame, catalogue: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """One-hot categories plus standardised numbers and coordinates, L2-normalised rows, for
    both tables in one feature space: the categories of either, the known table's scales."""
    both = pd.concat([known, catalogue], ignore_index=True)
    parts = [
        pd.get_dummies(both[c].astype(str)).to_numpy(np.float32)
        for c in ("make", "model", "segment", "body", "fuel", "transmission")
    ]
    for column in ("price", "year", "mileage_km", "power_kw", "lat", "lon"):
        values = both[column].to_numpy(np.float64)
        values = np.log1p(values) if column in ("price", "mileage_km") else values
        reference = values[: len(known)]
        parts.append(((values - reference.mean()) / (reference.std() + 1e-9))[:, None] * 0.5)
    matrix = np.hstack(parts).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix[: len(known)], matrix[len(known) :]


def baseline_scorer(model, task):  # noqa: ANN001, ANN201
    """Scores of a fitted baseline (over the model's listing rows) on the task's catalogue."""
    rows = task.catalogue.model_rows

    def score(batch: np.ndarray) -> np.ndarray:
        full = model.score(task.users[batch])
        out = np.full((len(batch), len(rows)), -np.inf, dtype=np.float32)
        ok = (rows >= 0) & (rows < full.shape[1])
        out[:, ok] = full[:, rows[ok]]
        return out

    return score


def aligned_scorer(rec: Recommender, task):  # noqa: ANN001, ANN201
    """Scores of any fitted Recommender on ``task``'s catalogue rows (-inf where it cannot
    embed a listing), so that every model is ranked on the same task."""
    retriever = rec.retriever(task.catalogue.table)
    own = retriever.catalogue
    position = own.rows_of(task.catalogue.table["listing_id"].tolist())
    scorable = position >= 0
    users = rec.users_.indices(task.user_ids)
    inner = model_scorer(retriever, EvaluationTask(own, users, None, None, None, {}))

    def score(batch: np.ndarray) -> np.ndarray:
        out = np.full((len(batch), len(position)), -np.inf, dtype=np.float32)
        out[:, scorable] = inner(batch)[:, position[scorable]]
        return out

    return score


def feature_scorer(rec: Recommender, task):  # noqa: ANN001, ANN201
    """Cold baseline: a user's profile is the mean feature vector of what they saw."""
    known_features, catalogue_features = feature_matrices(rec.listing_table_, task.catalogue.table)
    profiles = rec.seen_[task.users] @ known_features[: rec.seen_.shape[1]]

    def score(batch: np.ndarray) -> np.ndarray:
        return np.asarray(profiles[batch]) @ catalogue_features.T

    return score


def airbnb_scorer(mf: Recommender, task):  # noqa: ANN001, ANN201
    """Cold baseline (Grbovic & Cheng 2018): a new listing takes the mean embedding of the 3
    geographically closest trained listings of the same body type and price bucket."""
    table = task.catalogue.table
    warm = mf.listing_table_.iloc[: mf.n_trained_listings_]
    with torch.no_grad():
        warm_vectors = mf.model_.listing_embedding.weight[: len(warm)].numpy()
        users = mf.users_.indices(task.user_ids)
        user_vectors = mf.model_.user_embedding.weight[users].numpy()
    edges = np.quantile(warm["price"], np.linspace(0, 1, 6)[1:-1])
    vectors = np.zeros((len(table), warm_vectors.shape[1]), dtype=np.float32)
    warm_bucket = np.searchsorted(edges, warm["price"].to_numpy())
    bucket = np.searchsorted(edges, table["price"].to_numpy())
    for key, group in table.groupby([table["body"].to_numpy(), bucket]).indices.items():
        pool = np.flatnonzero((warm["body"].to_numpy() == key[0]) & (warm_bucket == key[1]))
        if len(pool) == 0:
            continue
        km = haversine_km(
            table["lat"].to_numpy()[group, None],
            table["lon"].to_numpy()[group, None],
            warm["lat"].to_numpy()[None, pool],
            warm["lon"].to_numpy()[None, pool],
        )
        nearest = pool[np.argsort(km, axis=1)[:, :3]]
        vectors[group] = warm_vectors[nearest].mean(axis=1)

    def score(batch: np.ndarray) -> np.ndarray:
        return user_vectors[batch] @ vectors.T

    return score


def neighbour_quality(retriever, rows: np.ndarray, k: int = 10) -> dict:  # noqa: ANN001
    """Share of each listing's top-k similar listings (as ``similar`` answers) within 100 km,
    same segment, within 25% of the price."""
    catalogue = retriever.catalogue
    found, _ = retriever.search_similar(
        catalogue.unit_vectors[rows], k, exclude=[np.array([r]) for r in rows]
    )
    return _shares(catalogue.table, rows, found)


def _shares(table: pd.DataFrame, rows: np.ndarray, found: np.ndarray) -> dict:
    valid = found >= 0
    neighbours = np.where(valid, found, 0)
    lat, lon = table["lat"].to_numpy(), table["lon"].to_numpy()
    km = haversine_km(lat[rows, None], lon[rows, None], lat[neighbours], lon[neighbours])
    segment = table["segment"].to_numpy()
    price = table["price"].to_numpy(np.float64)
    ratio = np.abs(price[neighbours] - price[rows, None]) / price[rows, None]
    return {
        "within_100km": float(((km <= 100) & valid).sum() / valid.sum()),
        "same_segment": float(
            ((segment[neighbours] == segment[rows, None]) & valid).sum() / valid.sum()
        ),
        "price_within_25pct": float(((ratio <= 0.25) & valid).sum() / valid.sum()),
    }


def car_data(data: Path, size: str, seed: int) -> Path:
    """The generated car data of ``size`` and ``seed`` under ``data``, generated when missing
    or when made by a generator without the text columns."""
    data_dir = data / f"cars-{size}-seed{seed}"
    listings = data_dir / "listings.parquet"
    if not (data_dir / "interactions.parquet").exists() or not set(TEXT_COLUMNS) <= set(
        pq.read_schema(listings).names
    ):
        generate_cars(data_dir, size=size, seed=seed, progress=False)
    return data_dir


def text_section(
    data: Path, size: str, seeds: list[int], models: list[str], epochs: int, publish: Callable
) -> None:
    """Each feature model with and without the listings' title and description, on the same
    split and catalogue, per seed (data and training). ``publish`` gets the table of the
    medians after every seed, so that a run stopped early keeps the seeds it finished."""
    runs: dict[tuple[str, bool], list[dict]] = {(m, t): [] for m in models for t in (True, False)}
    for done, seed in enumerate(seeds, start=1):
        train, test, known, active = split_by_week(car_data(data, size, seed))
        task = None
        for (model, text), reports in runs.items():
            started = time.perf_counter()
            listings = known if text else known.drop(columns=TEXT_COLUMNS)
            # no refit on the held-out tenth (as in `embedrec demo`): half the fit time, and
            # both arms are fitted alike
            rec = Recommender(model=model, epochs=epochs, seed=seed, refit=False, progress=False)
            rec.fit(train, listings)
            seconds = time.perf_counter() - started
            if task is None:  # the same test users and catalogue for every run of this seed
                task = rec.evaluation_task(test, active)
                task.user_ids = rec.users_.external(task.users)
            score = aligned_scorer(rec, task)
            report = warm_cold_report(score, task.seen, task.test, task.cold, KS)
            reports.append({**report, "fit_seconds": seconds})
            print(f"text {seed} {model} {text}", _row(report), f"{seconds:.0f}s", file=sys.stderr)
        publish(_text_table(runs, seeds[:done], size, epochs, task.counts))


def _text_table(runs: dict, seeds: list[int], size: str, epochs: int, counts: dict) -> list[str]:
    lines = [
        "## Text features on and off",
        "",
        f"The same global time split ({size} data), once with the listings' `title` and "
        "`description` (free text, hashed words and character trigrams) and once without them "
        f"(the two columns dropped); {epochs} epochs with early stopping, without the refit on "
        "the held-out tenth (as `embedrec demo`), other settings as above. Median "
        f"over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}: data and training); the "
        f"last seed's test: {counts['users']:,} users, {counts['catalogue']:,} listings, "
        f"{counts['cold_listings']:,} of them cold. `cold` ranks only the listings first seen "
        "in the test week, which the models know by their features alone.",
        "",
        "| model | text | cold Recall@10 | cold NDCG@10 | warm Recall@10 | warm NDCG@10 | "
        "Recall@10 | NDCG@10 | cold Recall@10 per seed | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, text), reports in runs.items():

        def median(part: str, key: str, reports: list[dict] = reports) -> str:
            return f"{np.median([r[part][key] for r in reports]):.4f}"

        per_seed = " / ".join(f"{r['cold']['recall@10']:.4f}" for r in reports)
        lines.append(
            f"| {model} | {'on' if text else 'off'} | {median('cold', 'recall@10')} | "
            f"{median('cold', 'ndcg@10')} | {median('warm', 'recall@10')} | "
            f"{median('warm', 'ndcg@10')} | {median('overall', 'recall@10')} | "
            f"{median('overall', 'ndcg@10')} | {per_seed} | "
            f"{np.median([r['fit_seconds'] for r in reports]):.0f} |"
        )
    return lines + [""]


def movielens_section(models: list[str], seed: int) -> list[str]:
    """Every model with default hyper-parameters and the baselines on MovieLens-100k."""
    from embedrec.datasets.movielens import load_movielens_100k, movielens_protocol_split

    try:
        ratings, items = load_movielens_100k()
    except (OSError, RuntimeError) as exc:
        return ["## MovieLens-100k", "", f"Not run: the data could not be fetched ({exc}).", ""]
    split = movielens_protocol_split(ratings)
    rows = []
    reference = None
    for name in models:
        started = time.perf_counter()
        rec = Recommender(model=name, seed=seed, progress=False).fit(split.train, items)
        seconds = time.perf_counter() - started
        if reference is None:
            reference = rec
            task = rec.evaluation_task(split.test, items)
            task.user_ids = rec.users_.external(task.users)
        metrics = evaluate_scorer(aligned_scorer(rec, task), task.seen, task.test, KS)
        rows.append((name, metrics, seconds))
        print("movielens", name, f"{metrics['recall@10']:.4f}", file=sys.stderr, flush=True)
    train_matrix = reference.seen_[:, : reference.n_trained_listings_]
    for name, model in (
        ("popularity", Popularity()),
        ("item-kNN", ItemKNN(neighbours=100)),
        ("EASE", EASE(l2=500.0)),
    ):
        started = time.perf_counter()
        model.fit(train_matrix)
        metrics = evaluate_scorer(baseline_scorer(model, task), task.seen, task.test, KS)
        rows.append((name, metrics, time.perf_counter() - started))
    lines = [
        "## MovieLens-100k, default hyper-parameters",
        "",
        "Positives are ratings of 4 and above; each user with at least 5 positives puts the "
        "last 20% of them by time (at least one) into the test set. Every model runs with the "
        "defaults of `embedrec train` (no tuning); the baselines with their defaults. Full "
        "catalogue, each user's training films excluded. The tuned comparison with LightFM "
        "and implicit is in [benchmarks-movielens.md](benchmarks-movielens.md).",
        "",
        "| model | Recall@10 | NDCG@10 | HitRate@10 | Coverage@10 | fit s |",
        "|---|---|---|---|---|---|",
    ]
    for name, metrics, seconds in rows:
        lines.append(
            f"| {name} | {metrics['recall@10']:.4f} | {metrics['ndcg@10']:.4f} | "
            f"{metrics['hitrate@10']:.4f} | {metrics['coverage@10']:.4f} | {seconds:.0f} |"
        )
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small", "large"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path.home() / ".cache" / "embedrec")
    parser.add_argument("--out", type=Path, default=Path("docs/evaluation.md"))
    parser.add_argument("--models", default="hybrid,mf,deep")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--movielens-only", action="store_true")
    parser.add_argument("--skip-movielens", action="store_true")
    parser.add_argument(
        "--text-on-off",
        action="store_true",
        help="only the text on/off table: --text-models with and without title and description",
    )
    parser.add_argument("--seeds", default="0", help="seeds of --text-on-off, comma-separated")
    parser.add_argument("--text-models", default="hybrid")
    parser.add_argument(
        "--similar",
        action="store_true",
        help="only similar listings judged by behaviour: --similar-models against item-kNN "
        "on co-views and LightFM, tuned on a validation week",
    )
    parser.add_argument("--similar-models", default="hybrid,mf")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Recommender parameter of the car table's embedrec models, e.g. --set tune=900; "
        "repeatable",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="with --similar: tiny grids, 1 epoch (seconds)"
    )
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.similar:
        from similar_listings import similar_section

        split = split_by_week(car_data(args.data, args.size, args.seed))
        models = args.similar_models.split(",")
        epochs = 1 if args.smoke else args.epochs
        lines = similar_section(split, models, epochs, args.seed, args.smoke, WEEK)
        write_page(args.out, {SIMILAR: lines + _made_by()})
        return
    if args.text_on_off:
        seeds = [int(s) for s in args.seeds.split(",")]
        models = args.text_models.split(",")
        text_section(
            args.data,
            args.size,
            seeds,
            models,
            args.epochs,
            lambda lines: write_page(args.out, {TEXT: lines + _made_by()}),
        )
        return
    if args.movielens_only:
        lines = movielens_section(args.models.split(","), args.seed) + _made_by()
        write_page(args.out, {MOVIELENS: lines})
        return
    train, test, known, active = split_by_week(car_data(args.data, args.size, args.seed))
    lines = [f"# Evaluation on the car marketplace ({args.size}, seed {args.seed})", ""]
    results: dict[str, dict] = {}
    fitted: dict[str, Recommender] = {}
    task = None
    settings = dict(parse_setting(s) for s in args.set)
    for name in args.models.split(","):
        started = time.perf_counter()
        rec = Recommender(
            model=name, epochs=args.epochs, seed=args.seed, progress=False, **settings
        ).fit(train, known)
        if rec.report_["tuning"] is not None:
            print(name, "tuning:", rec.report_["tuning"], file=sys.stderr, flush=True)
        seconds = time.perf_counter() - started
        fitted[name] = rec
        if task is None:  # the first model must embed every listing (a feature model)
            task = rec.evaluation_task(test, active)
            task.user_ids = rec.users_.external(task.users)
            reference = rec
        results[name] = warm_cold_report(
            aligned_scorer(rec, task), task.seen, task.test, task.cold, KS
        )
        results[name]["fit_seconds"] = seconds
        print(name, _row(results[name]), f"{seconds:.0f}s", file=sys.stderr, flush=True)
    train_matrix = reference.seen_
    for name, model in (
        ("popularity", Popularity()),
        ("item-kNN", ItemKNN(neighbours=100)),
        ("EASE", EASE(l2=500.0)),
    ):
        started = time.perf_counter()
        model.fit(train_matrix[:, : reference.n_trained_listings_])
        results[name] = warm_cold_report(
            baseline_scorer(model, task), task.seen, task.test, task.cold, KS
        )
        results[name]["fit_seconds"] = time.perf_counter() - started
        print(name, _row(results[name]), file=sys.stderr, flush=True)
    cold_rows = np.flatnonzero(task.cold)
    for name, scorer in (
        ("feature similarity (cold)", feature_scorer(reference, task)),
        ("Airbnb rule on mf (cold)", airbnb_scorer(fitted["mf"], task) if "mf" in fitted else None),
    ):
        if scorer is not None:
            results[name] = {
                "cold": evaluate_scorer(scorer, task.seen, task.test, KS, candidates=cold_rows)
            }
    lines += _metrics_table(results, task)
    lines += _neighbours_section(fitted, task, reference) + _made_by()
    blocks = {CARS: lines}
    if not args.skip_movielens:
        blocks[MOVIELENS] = movielens_section(args.models.split(","), args.seed) + _made_by()
    write_page(args.out, blocks)


def write_page(path: Path, blocks: dict[tuple[str, str], list[str]]) -> None:
    """Print the measured parts and rewrite them in ``path``; a new page gets both parts'
    markers, so that a later run of either part finds its place."""
    if not path.exists():
        parts = (CARS, SIMILAR, TEXT, MOVIELENS)
        skeleton = "\n\n".join(f"{start}\n{end}" for start, end in parts) + "\n"
        write_atomic(path, lambda temporary: temporary.write_text(skeleton, encoding="utf-8"))
    for (start, end), lines in blocks.items():
        print("\n".join(lines))
        write_generated(path, "\n".join(lines), start, end)


def _row(result: dict) -> str:
    return " ".join(
        f"{part}:{result[part]['recall@10']:.4f}"
        for part in ("overall", "warm", "cold")
        if part in result
    )


def _metrics_table(results: dict, task) -> list[str]:  # noqa: ANN001
    counts = task.counts
    # every model ranks the same task, so the first's users are every model's
    scored = next(iter(results.values()))["overall"]["users"]
    lines = [
        "Global time split: train before the last week, test in it. Catalogue: the "
        f"{counts['catalogue']:,} listings active in the test week, {counts['cold_listings']:,} "
        f"of them cold (first seen in it). {counts['users']:,} test users known from training "
        f"({counts['events_skipped_unknown_user']:,} test events of new users skipped); the "
        f"means are over the {scored:,} of them with a test listing they had not viewed in "
        "training. Each user's training listings are excluded from their ranking. `overall` "
        "ranks the whole catalogue; `warm` and `cold` rank only warm or only cold listings. "
        "Recall@10 is "
        "a user's hits in the top 10 over min(10, their relevant listings); NDCG@10 uses "
        "binary gains and the same ideal; `mf`, which cannot embed cold listings, misses them.",
        "",
        "| model | Recall@10 | NDCG@10 | HitRate@10 | MRR@10 | Cov@10 | warm Recall@10 | "
        "warm NDCG@10 | cold Recall@10 | cold NDCG@10 | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        overall = result.get("overall", {})
        warm = result.get("warm", {})
        cold = result.get("cold", {})

        def f(part: dict, key: str) -> str:
            return f"{part[key]:.4f}" if key in part else "–"

        lines.append(
            f"| {name} | {f(overall, 'recall@10')} | {f(overall, 'ndcg@10')} | "
            f"{f(overall, 'hitrate@10')} | {f(overall, 'mrr@10')} | {f(overall, 'coverage@10')} | "
            f"{f(warm, 'recall@10')} | {f(warm, 'ndcg@10')} | {f(cold, 'recall@10')} | "
            f"{f(cold, 'ndcg@10')} | "
            f"{result['fit_seconds']:.0f} |"
            if "fit_seconds" in result
            else f"| {name} | – | – | – | – | – | – | – | {f(cold, 'recall@10')} | "
            f"{f(cold, 'ndcg@10')} | – |"
        )
    return lines + [""]


def _neighbours_section(fitted: dict, task, reference: Recommender) -> list[str]:  # noqa: ANN001
    catalogue = task.catalogue
    rng = np.random.default_rng(0)
    warm_rows, cold_rows = np.flatnonzero(~task.cold), np.flatnonzero(task.cold)
    warm_rows = rng.choice(warm_rows, min(1000, len(warm_rows)), replace=False)
    cold_rows = rng.choice(cold_rows, min(1000, len(cold_rows)), replace=False)
    lines = [
        "## Similar listings",
        "",
        "Share of the 10 most similar listings (among the active catalogue) within 100 km, in "
        "the same segment, and within 25% of the price: the structure users shop by (home "
        "radius, preferred segments, budget). 1,000 warm and up to 1,000 cold query listings.",
        "",
        "| neighbours from | queries | within 100 km | same segment | price within 25% |",
        "|---|---|---|---|---|",
    ]
    random_found = rng.integers(0, catalogue.n_rows, (len(warm_rows), 10))
    rows_of = {"random listings": (warm_rows, _shares(catalogue.table, warm_rows, random_found))}
    knn = ItemKNN(neighbours=100).fit(reference.seen_[:, : reference.n_trained_listings_])
    model_rows = catalogue.model_rows[warm_rows]
    found = knn.similar(model_rows, 10)
    to_catalogue = np.full(reference.seen_.shape[1], -1)
    to_catalogue[catalogue.model_rows[catalogue.model_rows >= 0]] = np.flatnonzero(
        catalogue.model_rows >= 0
    )
    knn_rows = np.where(found >= 0, to_catalogue[np.maximum(found, 0)], -1)
    rows_of["item-kNN, warm"] = (warm_rows, _shares(catalogue.table, warm_rows, knn_rows))
    for name, rec in fitted.items():
        retriever = rec.retriever(catalogue.table)
        own = retriever.catalogue
        ids = catalogue.table["listing_id"].to_numpy()
        own_warm = own.rows_of(ids[warm_rows].tolist())
        own_warm = own_warm[own_warm >= 0]
        rows_of[f"{name}, warm"] = (own_warm, neighbour_quality(retriever, own_warm))
        if name != "mf":
            own_cold = own.rows_of(ids[cold_rows].tolist())
            rows_of[f"{name}, cold"] = (own_cold, neighbour_quality(retriever, own_cold))
    for name, (rows, shares) in rows_of.items():
        lines.append(
            f"| {name} | {len(rows):,} | {shares['within_100km']:.0%} | "
            f"{shares['same_segment']:.0%} | {shares['price_within_25pct']:.0%} |"
        )
    return lines + [""]


def _made_by() -> list[str]:
    command = " ".join(["python benchmarks/evaluation.py", *sys.argv[1:]])
    return [
        f"Produced by `{command}` on {platform.platform()}, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, numpy {np.__version__}, pandas {pd.__version__}, "
        f"scipy {scipy.__version__}, embedrec {__version__}.",
    ]


if __name__ == "__main__":
    main()
