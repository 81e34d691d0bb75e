"""Filtered similar-listing searches at 1M listings, this tree against an earlier commit, in
one process: the same trained catalogue, the same IVF lists, queries alternated one by one.

On a shared host one absolute time says little, and two runs minutes apart differ by more
than many changes do; alternating the two codes query by query exposes both to the same
host. The earlier commit's package is taken with ``git archive`` into a temporary folder and
renamed (``embedrec_before``), so both import side by side.

    python benchmarks/index_side_by_side.py --before 51c2532 --work /tmp/sb

Prints a markdown table: share of rows kept, p50 / p99 ms before and now (the median of
``--passes`` passes over ``--queries`` new listings), and recall@10 of each against the exact
top 10 of the rows the filters keep.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from common import large_model, new_listings, package_at  # noqa: E402

FILTERS = [
    "make=Volkswagen year>=2018",
    "make=Volkswagen",
    "year<=2012",
    "price>=10000 price<=30000",
    "price<=25000 year>=2018",
    "make=Dacia",
    "within=51.05,13.74,100km",
]
RENAMED = "embedrec_before"


def _package_at(revision: str, folder: Path) -> None:
    """The package at ``revision`` under ``folder``, renamed to ``RENAMED``."""
    package_at(revision, folder)
    (folder / "src" / "embedrec").rename(folder / RENAMED)
    for path in (folder / RENAMED).rglob("*.py"):
        text = re.sub(r"\bembedrec\b(?=[.\s])", RENAMED, path.read_text())
        path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the earlier commit")
    parser.add_argument("--work", type=Path, default=Path("/tmp/embedrec-serving-bench"))
    parser.add_argument("--filters", default=";".join(FILTERS), help="';'-separated rows")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()

    import faiss

    from embedrec import Recommender
    from embedrec.index.filters import allowed_mask, parse_filter

    folder = Path(tempfile.mkdtemp(prefix="embedrec-before-"))
    _package_at(args.before, folder)
    sys.path.insert(0, str(folder))
    before = __import__(f"{RENAMED}.index.catalogue", fromlist=["Catalogue"])
    parse_before = __import__(f"{RENAMED}.index.filters", fromlist=["parse_filter"]).parse_filter

    model, listings, _ = large_model(args.work)
    retriever = Recommender.load(model).retriever(listings)
    retriever.warm_up()
    now = retriever.catalogue
    old = before.Catalogue(now.table, now.vectors, now.model_rows, now.normalized, now._exact_below)
    queries, _, _ = retriever.embed_listings(new_listings(listings, args.queries, 0))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    faiss.omp_set_num_threads(1)
    unit = now.unit_vectors

    print("| filter | kept | before p50 / p99 ms | now p50 / p99 ms | recall@10 before | now |")
    print("|---|---:|---|---|---:|---:|")
    for row in args.filters.split(";"):
        codes = {
            "before": (old, [parse_before(e) for e in row.split()]),
            "now": (now, [parse_filter(e) for e in row.split()]),
        }
        kept = np.flatnonzero(allowed_mask(codes["now"][1], now.table))
        truth = kept[np.argsort(-(unit[kept] @ queries.T), axis=0)[:10].T]
        for catalogue, filters in codes.values():
            catalogue.search(queries[:1], 10, True, filters)  # builds what a first search builds
        times = {name: [] for name in codes}
        hits = dict.fromkeys(codes, 0)
        for rep in range(args.passes):
            took = {name: np.empty(len(queries)) for name in codes}
            for i in range(len(queries)):
                for name, (catalogue, filters) in codes.items():
                    start = time.perf_counter()
                    rows, _ = catalogue.search(queries[i : i + 1], 10, True, filters)
                    took[name][i] = time.perf_counter() - start
                    if rep == 0:
                        hits[name] += len(set(rows[0].tolist()) & set(truth[i].tolist()))
            for name in codes:
                times[name].append(np.percentile(took[name], [50, 99]) * 1e3)
        p = {name: np.median(times[name], axis=0) for name in codes}
        recall = {name: hits[name] / (10 * len(queries)) for name in codes}
        print(
            f"| `{row}` | {len(kept) / len(unit):.2%} "
            f"| {p['before'][0]:.3f} / {p['before'][1]:.3f} "
            f"| {p['now'][0]:.3f} / {p['now'][1]:.3f} "
            f"| {recall['before']:.4f} | {recall['now']:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
