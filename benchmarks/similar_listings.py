"""Similar listings judged by behaviour: embedrec against item-kNN on co-views and LightFM.

The truth is the next listing a visitor viewed in the same session (two views of one visitor
at most 30 minutes apart, two different listings). For each such pair in the hold-out week
with both listings in the catalogue, the question is whether the second listing is among the
first one's 10 most similar catalogue listings. Pairs whose first listing had training views
(warm) and those whose first listing had none (cold: new in the hold-out week) are counted
apart. ``benchmarks/evaluation.py --similar`` runs it and writes its part of the page.

Peers, tuned on a validation slice built like the test (train before the last training week,
the pairs of that week, the listings active in it), each on warm and on cold pairs apart:

- item-kNN on co-views: cosine between listings' columns of the binary (visitor or session) x
  listing matrix of training views, with a shrink term (``ItemKNN``); warm listings only;
- LightFM (WARP) with listing features, with an identity feature per trained listing plus
  its features, or with its features alone; cold listings are embedded from their features;
  similar = cosine of ``get_item_representations``. Missing LightFM is reported, not fatal.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from embedrec import Recommender
from embedrec.evaluation import ItemKNN
from embedrec.retrieval.evaluation import (
    SESSION_GAP_SECONDS,
    next_view_pairs,
    similar_by_behaviour,
)

K = 10
GOAL = 1.1  # embedrec's similar@10 against the best peer's, warm and cold
PARTS = ("warm", "cold")
# the listing fields LightFM gets: categories, multi-valued equipment, binned numbers
CATEGORIES = (
    "make",
    "model",
    "segment",
    "body",
    "fuel",
    "transmission",
    "year",
    "city",
    "region",
    "dealer_id",
)
BINNED = ("price", "mileage_km", "power_kw")
N_BINS = 10


def view_events(events: pd.DataFrame) -> pd.DataFrame:
    """The views (every event when the table has no ``event`` column)."""
    if "event" in events.columns:
        events = events[events["event"] == "view"]
    return events[["user_id", "listing_id", "timestamp"]].reset_index(drop=True)


def seconds(stamps: pd.Series) -> np.ndarray:
    """Timestamps as float seconds (datetimes of any resolution or numbers)."""
    if isinstance(stamps.dtype, pd.DatetimeTZDtype) or stamps.dtype.kind == "M":
        stamps = pd.to_datetime(stamps, utc=True)
        return ((stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy()
    return stamps.to_numpy(np.float64)


@dataclass
class PairTask:
    """The next-view pairs of a hold-out period over a catalogue (one row per listing)."""

    table: pd.DataFrame
    warm: np.ndarray  # per catalogue row: the listing has training views
    queries: np.ndarray  # catalogue rows of the first listings, each once
    query_of_pair: np.ndarray  # each pair's position in ``queries``
    then: np.ndarray  # catalogue row of each pair's next listing
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def cold_pair(self) -> np.ndarray:
        return ~self.warm[self.queries[self.query_of_pair]]


def pair_task(catalogue: pd.DataFrame, train_views: pd.DataFrame, views: pd.DataFrame) -> PairTask:
    table = catalogue.reset_index(drop=True)
    index = pd.Index(table["listing_id"])
    warm = np.asarray(index.isin(train_views["listing_id"].unique()))
    first, then = next_view_pairs(views)
    rows, next_rows = index.get_indexer(first), index.get_indexer(then)
    inside = (rows >= 0) & (next_rows >= 0)
    queries, query_of_pair = np.unique(rows[inside], return_inverse=True)
    task = PairTask(table, warm, queries, query_of_pair, next_rows[inside])
    cold = task.cold_pair
    task.counts = {
        "pairs_read": len(first),
        "pairs": int(inside.sum()),
        "warm_pairs": int((~cold).sum()),
        "cold_pairs": int(cold.sum()),
        "catalogue": len(table),
        "cold_listings": int((~warm).sum()),
    }
    return task


def hit_rates(task: PairTask, found: np.ndarray) -> dict[str, dict[str, float]]:
    """similar@K on warm and on cold pairs, with its standard error over pairs. ``found``:
    the K most similar catalogue rows of each of ``task.queries`` (-1: none)."""
    hit = (found[task.query_of_pair, :K] == task.then[:, None]).any(axis=1)
    cold = task.cold_pair
    out = {}
    for part, mask in (("warm", ~cold), ("cold", cold)):
        n = int(mask.sum())
        rate = float(hit[mask].mean()) if n else float("nan")
        error = float(np.sqrt(rate * (1 - rate) / n)) if n > 1 else float("nan")
        out[part] = {"pairs": n, "hit": rate, "se": error}
    return out


def cosine_top_k(
    vectors: np.ndarray, queries: np.ndarray, candidates: np.ndarray | None = None
) -> np.ndarray:
    """The K catalogue rows of highest cosine to each query row (never itself), among
    ``candidates`` (a mask; all rows when None)."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    unit = unit.astype(np.float32)
    found = np.full((len(queries), K), -1, dtype=np.int64)
    for start in range(0, len(queries), 1024):
        batch = queries[start : start + 1024]
        scores = unit[batch] @ unit.T
        if candidates is not None:
            scores[:, ~candidates] = -np.inf
        scores[np.arange(len(batch)), batch] = -np.inf
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        ok = np.isfinite(np.take_along_axis(scores, top, axis=1))
        found[start : start + len(batch)] = np.where(ok, top, -1)
    return found


# ------------------------------------------------------------------ embedrec
def recommender_neighbours(rec: Recommender, task: PairTask) -> np.ndarray:
    """The retriever's similar listings (as ``similar`` answers) for the task's queries, as
    task rows; -1 rows for listings the model cannot embed."""
    retriever = rec.retriever(task.table)
    own = retriever.catalogue
    own_rows = own.rows_of(task.table["listing_id"].tolist())
    to_task = np.full(own.n_rows, -1, dtype=np.int64)
    to_task[own_rows[own_rows >= 0]] = np.flatnonzero(own_rows >= 0)
    rows = own_rows[task.queries]
    ok = rows >= 0
    found = np.full((len(rows), K), -1, dtype=np.int64)
    if ok.any():
        exclude = [rows[i : i + 1] for i in np.flatnonzero(ok)]
        hits, _ = retriever.search_similar(own.unit_vectors[rows[ok]], K, exclude=exclude)
        found[ok] = np.where(hits >= 0, to_task[np.maximum(hits, 0)], -1)
    return found


# ------------------------------------------------------------------ item-kNN on co-views
def co_view_matrix(views: pd.DataFrame, table: pd.DataFrame, unit: str) -> sp.csr_matrix:
    """Binary (visitor or session) x catalogue-listing matrix of ``views``."""
    users = views["user_id"].to_numpy()
    if unit == "session":
        order = np.lexsort((seconds(views["timestamp"]), users))
        gaps = np.diff(seconds(views["timestamp"])[order])
        new = np.concatenate(
            [[True], (users[order][1:] != users[order][:-1]) | (gaps > SESSION_GAP_SECONDS)]
        )
        keys = np.empty(len(views), dtype=np.int64)
        keys[order] = np.cumsum(new) - 1
    else:
        keys = pd.factorize(users)[0]
    columns = pd.Index(table["listing_id"]).get_indexer(views["listing_id"])
    inside = columns >= 0
    matrix = sp.csr_matrix(
        (np.ones(int(inside.sum()), dtype=np.float32), (keys[inside], columns[inside])),
        shape=(int(keys.max()) + 1 if len(keys) else 0, len(table)),
    )
    matrix.data[:] = 1.0
    return matrix


def item_knn_runs(
    train_views: pd.DataFrame, task: PairTask, config: dict[str, Any]
) -> Iterator[tuple[dict, np.ndarray]]:
    matrix = co_view_matrix(train_views, task.table, config["unit"])
    knn = ItemKNN(neighbours=K, shrink=config["shrink"]).fit(matrix)
    yield config, knn.similar(task.queries, K)


# ------------------------------------------------------------------ LightFM
def listing_features(listings: pd.DataFrame, reference: pd.DataFrame) -> sp.csr_matrix:
    """Indicator features of ``listings``: one per category value, per equipment item and per
    decile of price, mileage and power (deciles of ``reference``, the training listings)."""
    blocks = []
    for column in CATEGORIES:
        if column in listings.columns:
            codes, _ = pd.factorize(listings[column].astype(str))
            blocks.append(_one_hot(codes))
    for column in BINNED:
        if column in listings.columns:
            edges = np.quantile(
                reference[column].to_numpy(np.float64), np.linspace(0, 1, N_BINS + 1)
            )
            codes = np.searchsorted(edges[1:-1], listings[column].to_numpy(np.float64))
            blocks.append(_one_hot(codes, N_BINS))
    if "equipment" in listings.columns:
        items = listings["equipment"].fillna("").astype(str).str.split("|")
        exploded = items.explode()
        keep = exploded.to_numpy() != ""
        codes, _ = pd.factorize(exploded[keep])
        owners = np.repeat(np.arange(len(listings)), items.str.len().to_numpy())[keep]
        blocks.append(
            sp.csr_matrix(
                (np.ones(len(codes), dtype=np.float32), (owners, codes)),
                shape=(len(listings), int(codes.max()) + 1 if len(codes) else 0),
            )
        )
    return sp.hstack(blocks, format="csr", dtype=np.float32)


def _one_hot(codes: np.ndarray, width: int | None = None) -> sp.csr_matrix:
    width = width or int(codes.max()) + 1
    return sp.csr_matrix(
        (np.ones(len(codes), dtype=np.float32), (np.arange(len(codes)), codes)),
        shape=(len(codes), width),
    )


def _normalised(matrix: sp.spmatrix) -> sp.csr_matrix:
    """Rows summing to 1, as LightFM's Dataset builds them."""
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(sums, 1e-12)) @ matrix, dtype=np.float32)


def lightfm_runs(
    train_views: pd.DataFrame,
    known: pd.DataFrame,
    task: PairTask,
    config: dict[str, Any],
    identity: bool,
    seed: int,
) -> Iterator[tuple[dict, np.ndarray]]:
    """LightFM WARP on the binary visitor x listing matrix of training views, the item
    features of every listing with training views; after each of ``config['epochs']`` (a
    list, increasing) the catalogue's similar listings by cosine of item representations.
    With ``identity``, a trained listing also has its own feature; a cold listing never does."""
    from lightfm import LightFM

    listings = pd.concat([known, task.table], ignore_index=True).drop_duplicates("listing_id")
    listings = listings.reset_index(drop=True)
    index = pd.Index(listings["listing_id"])
    features = listing_features(listings, known)
    trained = np.unique(index.get_indexer(train_views["listing_id"].unique()))
    trained = trained[trained >= 0]
    users, user_rows = np.unique(train_views["user_id"].to_numpy(), return_inverse=True)
    columns = pd.Index(listings["listing_id"].to_numpy()[trained]).get_indexer(
        train_views["listing_id"]
    )
    inside = columns >= 0
    matrix = sp.coo_matrix(
        (np.ones(int(inside.sum()), dtype=np.float32), (user_rows[inside], columns[inside])),
        shape=(len(users), len(trained)),
    ).tocsr()
    matrix.data[:] = 1.0
    catalogue_rows = index.get_indexer(task.table["listing_id"])
    position = np.full(len(listings), -1, dtype=np.int64)
    position[trained] = np.arange(len(trained))
    item_features, catalogue_features = features[trained], features[catalogue_rows]
    if identity:
        own = position[catalogue_rows]
        has = own >= 0
        own_ids = sp.csr_matrix(
            (np.ones(int(has.sum()), dtype=np.float32), (np.flatnonzero(has), own[has])),
            shape=(len(catalogue_rows), len(trained)),
        )
        item_features = sp.hstack([sp.identity(len(trained), format="csr"), item_features])
        catalogue_features = sp.hstack([own_ids, catalogue_features])
    item_features, catalogue_features = _normalised(item_features), _normalised(catalogue_features)
    params = {k: v for k, v in config.items() if k != "epochs"}
    model = LightFM(loss="warp", random_state=seed, **params)
    done = 0
    for epochs in config["epochs"]:
        model.fit_partial(
            matrix.tocoo(), item_features=item_features, epochs=epochs - done, num_threads=1
        )
        done = epochs
        _, vectors = model.get_item_representations(catalogue_features)
        yield {**params, "epochs": epochs}, cosine_top_k(vectors, task.queries)


# ------------------------------------------------------------------ tuning and the section
@dataclass
class Peer:
    name: str
    runs: Callable[..., Iterator[tuple[dict, np.ndarray]]]  # (views, known, task, config)
    grid: list[dict[str, Any]]
    parts: tuple[str, ...] = PARTS
    missing: str | None = None


# the grids; a first run's grid (32 or 64 dims, lr 0.02 or 0.05, 10 to 40 epochs; shrink 0 to
# 50) chose its largest values, so these go one step further on each axis
KNN_GRID = [{"unit": u, "shrink": s} for u in ("session", "user") for s in (10.0, 50.0, 200.0)]
LIGHTFM_GRID = [
    {"no_components": n, "learning_rate": rate, "epochs": [20, 40, 80]}
    for n, rate in ((64, 0.05), (128, 0.05), (64, 0.1))
]


def peers(smoke: bool, seed: int) -> list[Peer]:
    knn_grid, lightfm_grid = KNN_GRID, LIGHTFM_GRID
    if smoke:
        knn_grid = [{"unit": "session", "shrink": 0.0}, {"unit": "user", "shrink": 10.0}]
        lightfm_grid = [{"no_components": 8, "learning_rate": 0.05, "epochs": [1, 2]}]
    out = [
        Peer(
            "item-kNN on co-views",
            lambda views, known, task, config: item_knn_runs(views, task, config),
            knn_grid,
            parts=("warm",),
        )
    ]
    for name, identity in (
        ("LightFM, identity + features", True),
        ("LightFM, features only", False),
    ):
        out.append(
            Peer(
                name,
                lambda views, known, task, config, identity=identity: lightfm_runs(
                    views, known, task, config, identity, seed
                ),
                lightfm_grid,
            )
        )
    try:
        import lightfm  # noqa: F401
    except ImportError:
        for peer in out[1:]:
            peer.missing = "not installed"
    return out


def _describe(config: dict[str, Any]) -> str:
    names = {"no_components": "{} dims", "learning_rate": "lr {:g}", "epochs": "{} epochs"}
    names |= {"unit": "unit={}", "shrink": "shrink {:g}"}
    return ", ".join(names.get(k, k + " {}").format(v) for k, v in config.items())


def tune_and_test(
    peer: Peer,
    validation: tuple[pd.DataFrame, pd.DataFrame, PairTask],
    test: tuple[pd.DataFrame, pd.DataFrame, PairTask],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Each part's best configuration on the validation pairs, refitted on all the
    training views and measured on the test pairs."""
    views, known, task = validation
    best: dict[str, tuple[float, dict]] = {}
    started = time.perf_counter()
    for config in peer.grid:
        for chosen, found in peer.runs(views, known, task, config):
            rates = hit_rates(task, found)
            log(f"  validation {peer.name} {_describe(chosen)}: " + _rates(rates))
            for part in peer.parts:
                rate = float(np.nan_to_num(rates[part]["hit"], nan=-1.0))  # no pairs: last
                if part not in best or rate > best[part][0]:
                    best[part] = (rate, chosen)
    tuning = time.perf_counter() - started
    views, known, task = test
    result: dict[str, Any] = {"tuning_seconds": tuning, "configs": {}}
    started = time.perf_counter()
    # one run per distinct configuration (LightFM's epochs of one run are checkpoints)
    wanted: dict[str, dict] = {}
    for part in peer.parts:
        config = dict(best[part][1])
        key = _describe({k: v for k, v in config.items() if k != "epochs"})
        if "epochs" in config:
            epochs = sorted({*wanted.get(key, {}).get("epochs", []), config["epochs"]})
            config["epochs"] = epochs
        wanted[key] = config
    for config in wanted.values():
        for chosen, found in peer.runs(views, known, task, config):
            rates = hit_rates(task, found)
            for part in peer.parts:
                if best[part][1] == chosen:
                    result[part] = rates[part]
                    result["configs"][part] = chosen
    result["test_seconds"] = time.perf_counter() - started
    log(f"{peer.name}: " + _rates(result))
    return result


def _grid_text(grid: list[dict[str, Any]]) -> str:
    """The configurations of a grid, a run's epochs given once: "(64 dims, lr 0.05), ...
    after 20, 40 and 80 epochs"."""
    shown = [_describe({k: v for k, v in c.items() if k != "epochs"}) for c in grid]
    text = ", ".join(f"({one})" for one in shown)
    epochs = sorted({e for c in grid for e in c.get("epochs", [])})
    if len(epochs) > 1:
        text += " each after " + ", ".join(map(str, epochs[:-1])) + f" and {epochs[-1]} epochs"
    elif epochs:
        text += f" after {epochs[0]} epochs"
    return text


def _rates(rates: dict) -> str:
    return " ".join(f"{part}:{rates[part]['hit']:.4f}" for part in PARTS if part in rates)


def validation_split(
    train: pd.DataFrame, known: pd.DataFrame, week: pd.Timedelta
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The split of the test, one week earlier: train before the last training week,
    validate in it, over the listings known then and active in it."""
    start = train["timestamp"].max() - week
    before, after = train[train["timestamp"] < start], train[train["timestamp"] >= start]
    listed = known[known["listed_at"] < start]
    active = known[known["sold_at"].isna() | (known["sold_at"] >= start)]
    return before, after, listed, active


def similar_section(
    split: tuple[pd.DataFrame, ...],
    models: list[str],
    epochs: int,
    seed: int,
    smoke: bool,
    week: pd.Timedelta,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> list[str]:
    """The section's lines: every model's and peer's similar@10, warm and cold, and the
    ratios of embedrec's best to the best peer's."""
    train, test, known, active = split
    train_views = view_events(train)
    task = pair_task(active, train_views, view_events(test))
    log(f"test pairs: {task.counts}")
    results: dict[str, dict[str, Any]] = {}
    for name in models:
        started = time.perf_counter()
        rec = Recommender(model=name, epochs=epochs, seed=seed, progress=False).fit(train, known)
        seconds_fit = time.perf_counter() - started
        rates = hit_rates(task, recommender_neighbours(rec, task))
        if not rec.model_.needs_features:
            rates["cold"] = {
                "pairs": task.counts["cold_pairs"],
                "hit": float("nan"),
                "se": float("nan"),
            }
        results[f"embedrec {name}"] = {**rates, "fit_seconds": seconds_fit, "configs": {}}
        log(f"embedrec {name}: {_rates(rates)} ({seconds_fit:.0f} s)")
        # the library's own measure (`embedrec evaluate`) on the same views: the same pairs
        # for a model that embeds every listing, less those whose visitor viewed both
        # listings in training (the model learned them); a model without features counts
        # only the pairs of listings it knows
        own = similar_by_behaviour(rec.retriever(task.table), view_events(test), (K,))
        log(
            f"  similar_by_behaviour: warm {own['warm'].get(f'hit@{K}', float('nan')):.4f}"
            f" cold {own['cold'].get(f'hit@{K}', float('nan')):.4f}"
            f" ({own['overall']['pairs']:,} pairs)"
        )
    v_train, v_test, v_known, v_active = validation_split(train, known, week)
    v_views = view_events(v_train)
    validation = (v_views, v_known, pair_task(v_active, v_views, view_events(v_test)))
    log(f"validation pairs: {validation[2].counts}")
    peer_results = {}
    tried = peers(smoke, seed)
    for peer in tried:
        if peer.missing:
            peer_results[peer.name] = {"missing": peer.missing}
            log(f"{peer.name}: {peer.missing}")
            continue
        peer_results[peer.name] = tune_and_test(peer, validation, (train_views, known, task), log)
    return _similar_lines(task, validation[2], results, peer_results, epochs, tried)


def _similar_lines(
    task: PairTask,
    validation: PairTask,
    ours: dict[str, dict],
    theirs: dict[str, dict],
    epochs: int,
    tried: list[Peer],
) -> list[str]:
    counts = task.counts
    chance = K / max(counts["catalogue"] - 1, 1)

    def cell(result: dict, part: str) -> str:
        rate = result.get(part, {}).get("hit", float("nan"))
        if not np.isfinite(rate):
            return "–"
        return f"{rate:.4f} ± {result[part]['se']:.4f}"

    lines = [
        "## Similar listings judged by behaviour",
        "",
        "The truth: the next listing a visitor viewed in the same session (views at most 30 "
        "minutes apart). For each such pair in the test week with both listings in the "
        f"catalogue ({counts['catalogue']:,} active listings, {counts['cold_listings']:,} of "
        "them without training views), similar@10 is the share of pairs whose second listing "
        "is among the first one's 10 most similar listings (cosine, the listing itself "
        f"excluded); ± one standard error over pairs. {counts['pairs']:,} of "
        f"{counts['pairs_read']:,} pairs have both listings in the catalogue: "
        f"{counts['warm_pairs']:,} with a warm first listing, {counts['cold_pairs']:,} with a "
        f"cold one. Ten listings drawn at random would score {chance:.4f}.",
        "",
        f"embedrec's models: the defaults of `embedrec train`, {epochs} epochs with early "
        "stopping and the refit, untuned; their similar listings are what `similar` answers. "
        "The peers are tuned on a validation slice built as the test is, one week earlier "
        "(trained on the views before the last training week, scored on that week's "
        f"{validation.counts['warm_pairs']:,} warm and {validation.counts['cold_pairs']:,} cold "
        "pairs), each part (warm, cold) on its own: the configuration with the best "
        "validation similar@10 is refitted on all the training views. Item-kNN: cosine on "
        "the co-occurrence of listings in the training views of one visitor (`unit=user`) or "
        "one session (`unit=session`); it knows only listings with training "
        "views. LightFM 1.17, WARP loss, on the binary visitor x listing matrix of training "
        "views; listing features are indicators of make, model, segment, body, fuel, "
        "transmission, year, city, region, dealer, each equipment item and price, mileage and "
        "power deciles (rows summing to 1); `identity + features` adds an indicator of each "
        "listing with training views (cold listings have features only), `features only` has "
        "none; similar = cosine of `get_item_representations`. Configurations tried: "
        + "; ".join(f"{peer.name}: {_grid_text(peer.grid)}" for peer in tried[:2])
        + " (the same for both LightFM variants).",
        "",
        "| method | warm similar@10 | cold similar@10 | configuration | fit s |",
        "|---|---|---|---|---|",
    ]
    for name, result in ours.items():
        lines.append(
            f"| {name} | {cell(result, 'warm')} | {cell(result, 'cold')} | defaults | "
            f"{result['fit_seconds']:.0f} |"
        )
    for name, result in theirs.items():
        if "missing" in result:
            lines.append(f"| {name} | {result['missing']} | {result['missing']} | – | – |")
            continue
        chosen = result["configs"]
        if len(chosen) == 1 or chosen.get("warm") == chosen.get("cold"):
            configs = _describe(next(iter(chosen.values())))
        else:
            configs = "; ".join(f"{p}: {_describe(chosen[p])}" for p in PARTS if p in chosen)
        lines.append(
            f"| {name} | {cell(result, 'warm')} | {cell(result, 'cold')} | {configs} | "
            f"{result['test_seconds']:.0f} (+{result['tuning_seconds']:.0f} tuning) |"
        )
    lines += ["", *_goal_lines(ours, theirs), ""]
    return lines


def _goal_lines(ours: dict[str, dict], theirs: dict[str, dict]) -> list[str]:
    lines = []
    for part in PARTS:
        mine, peer = _best(ours, part), _best(theirs, part)
        if mine is None or peer is None:
            lines.append(f"- {part}: no ratio (no embedrec model or no peer measured).")
            continue
        ratio = mine[1] / peer[1] if peer[1] > 0 else float("inf")
        verdict = "met" if ratio >= GOAL else "not met"
        lines.append(
            f"- {part}: {mine[0]} {mine[1]:.4f} / {peer[0]} {peer[1]:.4f} = **{ratio:.2f}x** "
            f"(goal {GOAL}x: {verdict})"
        )
    return lines


def _best(results: dict[str, dict], part: str) -> tuple[str, float] | None:
    scored = [
        (name, r[part]["hit"])
        for name, r in results.items()
        if part in r and np.isfinite(r[part]["hit"])
    ]
    return max(scored, key=lambda pair: pair[1]) if scored else None
