"""One copy of a served catalogue for all workers: its table and vectors in files they map.

At 1M listings each worker read the listings file into a table of its own (~0.7 GB) and
embedded every listing again (minutes on two busy cores). Here the first worker to need a
(listings file, model) pair writes the validated table as an uncompressed Arrow file and the
vectors as .npy files into a cache directory; every worker, the first included, then maps them
read-only, so their pages are shared through the page cache, and a replacement worker starts
without embedding. Writes through the API never touch these files: the catalogue copies its
vectors into memory of its own on its first add, and added rows' fields live apart from the
base table (``index/catalogue.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from embedrec.data.atomic import write_atomic
from embedrec.data.io import load_listings
from embedrec.index.catalogue import Catalogue
from embedrec.recommender import Recommender
from embedrec.retrieval.retriever import Retriever, embed_table
from embedrec.version import __version__

log = logging.getLogger("embedrec.serving")


def shared_retriever(
    recommender: Recommender, listings: str | Path, cache_dir: str | Path, model_tag: str
) -> Retriever:
    """A retriever over ``listings`` whose table and vectors are mapped from ``cache_dir``,
    written there first when no worker has yet (one worker at a time: the others wait)."""
    source = Path(listings).resolve()
    stat = source.stat()
    # a changed file (size or modification time), another model or another embedrec: new files
    key = f"{source}\0{stat.st_size}\0{stat.st_mtime_ns}\0{model_tag}\0{__version__}"
    stem = Path(cache_dir) / f"catalogue-{hashlib.sha256(key.encode()).hexdigest()[:32]}"
    with _locked(stem.with_suffix(".lock")):
        if not stem.with_suffix(".json").exists():
            _write(recommender, source, stem)
    table = pa.ipc.open_file(pa.memory_map(str(stem.with_suffix(".arrow")))).read_all()
    meta = json.loads(stem.with_suffix(".json").read_text())
    catalogue = Catalogue(
        table.to_pandas(),  # the string columns keep the mapped Arrow buffers
        np.load(f"{stem}.vectors.npy", mmap_mode="r"),
        np.load(f"{stem}.rows.npy", mmap_mode="r"),
        normalized=bool(recommender.model_.normalized),
    )
    return Retriever(
        recommender.model_,
        catalogue,
        recommender.users_,
        recommender.listings_,
        recommender.seen_,
        recommender.listing_table_,
        name=recommender.model,
        unknown=meta["unknown"],
    )


def _write(recommender: Recommender, source: Path, stem: Path) -> None:
    """Validate and embed the listings, write the files; the JSON file last, as the mark that
    the others are complete (each is renamed into place once written)."""
    table = load_listings(source)
    vectors, rows, known = embed_table(recommender.model_, recommender.listings_, table)
    unknown = table.loc[~known, "listing_id"].tolist()
    kept = pa.Table.from_pandas(table[known] if not known.all() else table, preserve_index=False)

    def arrow(path: Path) -> None:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, kept.schema) as writer:
            writer.write_table(kept)

    write_atomic(stem.with_suffix(".arrow"), arrow)
    vectors, rows = vectors.astype(np.float32, copy=False), rows.astype(np.int64, copy=False)
    write_atomic(Path(f"{stem}.vectors.npy"), lambda path: np.save(path, vectors))
    write_atomic(Path(f"{stem}.rows.npy"), lambda path: np.save(path, rows))
    meta = {"listings": str(source), "rows": len(kept), "unknown": unknown}
    write_atomic(stem.with_suffix(".json"), lambda path: path.write_text(json.dumps(meta)))
    log.info("wrote the catalogue of %s (%d listings) to %s.*", source, len(kept), stem)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created), released when the block ends or the process
    dies: a worker killed while writing leaves no stale lock, only no JSON file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
