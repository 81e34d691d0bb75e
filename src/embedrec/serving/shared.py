"""One copy of a served catalogue for all workers: its table and vectors in files they map.

At 1M listings each worker read the listings file into a table of its own (~0.7 GB) and
embedded every listing again (minutes on two busy cores). Here the first worker to need a
catalogue (a listings file, or the model's own listings, with a model) writes the validated
table as an uncompressed Arrow file and the
vectors as .npy files into a cache directory; every worker, the first included, then maps them
read-only, so their pages are shared through the page cache, and a replacement worker starts
without embedding. The catalogue's vector index is saved beside them by the first worker that
builds it and loaded by the others. Writes through the API never touch these files: the
catalogue and its index copy their vectors into memory of their own on their first add, and
added rows' fields live apart from the base table (``index/catalogue.py``).

The model itself is shared the same way: its weights and the feature tensors of its training
listings (computed once, by the first worker) in a safetensors file, its listings table in an
Arrow file. Both are mapped copy-on-write, so a worker that writes to a tensor gets a page of
its own and the file stays as it was. Entries not used for a week are removed when another is
written, so daily models do not fill the disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from embedrec.data.atomic import write_atomic
from embedrec.data.errors import located_in
from embedrec.data.io import MODEL_LISTINGS, listings_arrow, listings_from_arrow, load_listings
from embedrec.index.catalogue import Catalogue, IndexSource
from embedrec.index.vector_index import VectorIndex
from embedrec.recommender import Recommender
from embedrec.retrieval.retriever import Retriever, embed_table, query_samples_of
from embedrec.version import __version__

log = logging.getLogger("embedrec.serving")
# cache entries (a catalogue or a model) unused for this long are removed
STALE_AFTER_S = 7 * 24 * 3600


def model_tag(recommender: Recommender) -> str | None:
    """What a stored vector is tagged with: a hash of the model's manifest, which holds the
    checksums of its files (None for a model not loaded from a directory: never shared)."""
    manifest = getattr(recommender, "manifest_", None)
    if not manifest:
        return None
    text = json.dumps(manifest, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def shared_recommender(model_dir: str | Path, cache_dir: str | Path) -> Recommender:
    """The model of ``model_dir`` with its weights, input tensors and listings table mapped
    from ``cache_dir``, written there first when no worker has yet."""
    recommender = Recommender.load(model_dir, inputs=False)
    stem = _stem(cache_dir, "model", f"{model_tag(recommender)}\0{__version__}")
    with _locked(stem.with_suffix(".lock")):
        if not stem.with_suffix(".json").exists():
            _remove_leftovers(stem)
            _write_model(recommender, stem)
    try:
        tensors = load_file(f"{stem}.safetensors")  # mapped, not read (safetensors' mmap)
        model = recommender.model_
        # assign: the parameters become the mapped tensors instead of copies of them
        model.load_state_dict(_part(tensors, "state."), assign=True)
        model.load_input_tensors(_part(tensors, "inputs."))
        recommender.listing_table_ = _mapped_table(stem.with_suffix(".arrow"), MODEL_LISTINGS)
    except (OSError, ValueError, RuntimeError, SafetensorError):
        _remove_entry(stem)  # damaged or incomplete: the next worker to load it writes it again
        raise
    return recommender


def _write_model(recommender: Recommender, stem: Path) -> None:
    model = recommender.model_
    model.set_inputs(recommender.listing_table_, None)
    tensors = {f"state.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors |= {f"inputs.{k}": v.contiguous() for k, v in model.input_tensors().items()}
    write_atomic(Path(f"{stem}.safetensors"), lambda path: save_file(tensors, str(path)))
    _write_table(listings_arrow(recommender.listing_table_, MODEL_LISTINGS), stem)
    meta = {"model": recommender.model, "listings": len(recommender.listing_table_)}
    write_atomic(stem.with_suffix(".json"), lambda path: path.write_text(json.dumps(meta)))
    log.info("wrote the model's tensors and listings to %s.*", stem)
    _remove_stale(stem.parent)


def _part(tensors: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def shared_retriever(
    recommender: Recommender, listings: str | Path | None, cache_dir: str | Path, model_tag: str
) -> Retriever:
    """A retriever over ``listings`` (None: the model's own listings) whose table and vectors
    are mapped from ``cache_dir``, written there first when no worker has yet (one worker at a
    time: the others wait)."""
    if listings is None:
        key, source = f"the model's listings\0{model_tag}\0{__version__}", None
    else:
        source = Path(listings).resolve()
        stat = source.stat()
        # a changed file (size or modification time), another model or another embedrec
        key = f"{source}\0{stat.st_size}\0{stat.st_mtime_ns}\0{model_tag}\0{__version__}"
    stem = _stem(cache_dir, "catalogue", key)
    with _locked(stem.with_suffix(".lock")):
        if not stem.with_suffix(".json").exists():
            _remove_leftovers(stem)
            _write(recommender, source, stem)
    meta = json.loads(stem.with_suffix(".json").read_text())
    catalogue = Catalogue(
        _mapped_table(stem.with_suffix(".arrow")),
        np.load(f"{stem}.vectors.npy", mmap_mode="r"),
        np.load(f"{stem}.rows.npy", mmap_mode="r"),
        normalized=bool(recommender.model_.normalized),
        query_samples=query_samples_of(recommender.model_, len(recommender.users_)),
        index_source=_shared_index(stem),
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


def _write(recommender: Recommender, source: Path | None, stem: Path) -> None:
    """Validate and embed the listings of ``source`` (None: the model's own), write the files;
    the JSON file last, as the mark that the others are complete (each is renamed into place
    once written)."""
    table = recommender.listing_table_ if source is None else load_listings(source)
    with located_in(table.attrs.get("source")):  # its features are checked as they are embedded
        vectors, rows, known = embed_table(recommender.model_, recommender.listings_, table)
    unknown = table.loc[~known, "listing_id"].tolist()
    kept = listings_arrow(table[known] if not known.all() else table)
    _write_table(kept, stem)
    vectors, rows = vectors.astype(np.float32, copy=False), rows.astype(np.int64, copy=False)
    write_atomic(Path(f"{stem}.vectors.npy"), lambda path: np.save(path, vectors))
    write_atomic(Path(f"{stem}.rows.npy"), lambda path: np.save(path, rows))
    name = "the model's listings" if source is None else str(source)
    meta = {"listings": name, "rows": len(kept), "unknown": unknown}
    write_atomic(stem.with_suffix(".json"), lambda path: path.write_text(json.dumps(meta)))
    log.info("wrote the catalogue of %s (%d listings) to %s.*", name, len(kept), stem)
    _remove_stale(stem.parent)


def _shared_index(stem: Path) -> IndexSource:
    """The catalogue's vector index as the first worker to need it built and saved beside the
    catalogue's files; the others load it (one at a time: the others wait). Building it was
    most of a worker's start at 1M listings (27 s of 32 on one core), so a replacement worker
    or a second one now starts in seconds. A damaged saved index is built and saved again."""

    def source(cosine: bool, build: Callable[[], VectorIndex]) -> VectorIndex:
        folder = Path(f"{stem}.index-{'cosine' if cosine else 'dot'}")
        with _locked(stem.with_suffix(".lock")):
            if (folder / "index.json").exists():
                try:
                    return VectorIndex.load(folder)
                except (OSError, ValueError, KeyError, RuntimeError) as exc:
                    log.warning("cannot load the shared index %s (%s): building it", folder, exc)
            index = build()
            _remove_leftovers(stem)
            try:
                index.save(folder)
            except OSError as exc:  # e.g. a full disk: this worker serves all the same
                log.warning("cannot save the shared index %s (%s)", folder, exc)
            return index

    return source


def _stem(cache_dir: str | Path, kind: str, key: str) -> Path:
    return Path(cache_dir) / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def _write_table(table: pa.Table, stem: Path) -> None:
    def arrow(path: Path) -> None:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)

    write_atomic(stem.with_suffix(".arrow"), arrow)


def _mapped_table(path: Path, source: str | None = None) -> pd.DataFrame:
    """The Arrow file as a frame whose string columns keep the mapped buffers (its rows'
    errors naming ``source``, else the file it was written from); marks the entry as used."""
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    with contextlib.suppress(OSError):
        os.utime(path.with_suffix(".json"))
    return listings_from_arrow(table, source)


def _remove_stale(cache_dir: Path) -> None:
    """Remove the entries (every file of one stem) last used more than STALE_AFTER_S ago, and
    temporaries that old (of a writer killed mid-write, whose entry was never needed again). A
    worker still mapping one keeps its pages: a removed file lives on while it is mapped."""
    cutoff = time.time() - STALE_AFTER_S
    for marker in cache_dir.glob("*.json"):
        with contextlib.suppress(OSError):
            if marker.stat().st_mtime < cutoff:
                _remove_entry(marker.with_suffix(""))
    for temporary in cache_dir.glob(".*"):
        with contextlib.suppress(OSError):
            if temporary.stat().st_mtime < cutoff:
                _remove_path(temporary)


def _remove_leftovers(stem: Path) -> None:
    """Remove what a writer of ``stem``'s files left when it was killed mid-write (SIGKILL, the
    OOM killer): its atomic writes' temporaries (``.STEM.*``, files and index folders). Only
    the holder of the stem's lock writes them, so none is in use; nothing removed them before,
    and at 1M listings a model entry's weights alone are over a gigabyte."""
    for temporary in stem.parent.glob(f".{stem.name}.*"):
        with contextlib.suppress(OSError):
            _remove_path(temporary)


def _remove_path(path: Path) -> None:
    if path.is_dir():  # a saved vector index
        shutil.rmtree(path)
    else:
        path.unlink()


def _remove_entry(stem: Path) -> None:
    with contextlib.suppress(OSError):
        stem.with_suffix(".json").unlink()  # first: the entry is incomplete from now on
    for path in stem.parent.glob(f"{stem.name}.*"):
        with contextlib.suppress(OSError):
            _remove_path(path)


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
