"""Warm start: continue a trained model on new interactions (the nightly update).

The new window's :class:`TrainingData` is remapped onto the old model's rows: old users keep
their rows and new users follow; old trained listings keep theirs, then come the listings
trained for the first time, then those known only by their features. So every table of the
old model is a prefix of the new one's, and the new model is a fresh one (new rows drawn from
the seed as usual) with the old rows copied in. The feature encoders are the old ones, grown
by the new categorical values (``FeaturePipeline.extend``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from embedrec.data.errors import DataError, shown
from embedrec.data.ids import IdMap
from embedrec.data.packed import PackedTable
from embedrec.data.prepare import Interactions
from embedrec.data.schema import FeatureSpec, SchemaConfig
from embedrec.features.pipeline import FeaturePipeline
from embedrec.models.base import RecModel
from embedrec.models.registry import model_class
from embedrec.training.preparation import TrainingData, in_order

logger = logging.getLogger(__name__)


class Fitted(Protocol):
    """What a warm start reads of a fitted ``Recommender`` (which lives a layer above)."""

    model_: RecModel
    users_: IdMap
    listings_: IdMap
    listing_table_: pd.DataFrame
    n_trained_listings_: int
    seen_: sp.csr_matrix
    feature_specs_: list[FeatureSpec]
    pipeline_: FeaturePipeline | None


@dataclass
class WarmStart(TrainingData):
    """Training data laid out on the rows of a fitted model that it continues.

    ``previous`` is that model's network, ``previous_rows`` its user rows and trained listing
    rows (``"users"``, ``"listings"``: the first rows here), ``previous_seen`` what its users
    saw, ``previous_listings`` the row here of each of its listings (its untrained ones come
    after the new trained ones); all taken when the warm start is prepared, so a Recommender
    may continue itself.
    ``source`` names the model in the report (its directory, or None for one in memory);
    ``added`` counts the users, listings and feature values it did not know.
    """

    previous: RecModel
    previous_rows: dict[str, int]
    previous_seen: sp.csr_matrix
    previous_listings: np.ndarray
    source: str | None
    added: dict[str, int]

    def seen(self, new: sp.csr_matrix) -> sp.csr_matrix:
        """``new`` (users x listings seen in the new data) joined with what the old model's
        users saw before, so recommendations keep excluding it."""
        # old users are the first rows; an old listing's column moves where the new trained
        # listings come before the old untrained ones (a listing too rare to train on, seen)
        old = self.previous_seen.tocoo()
        columns = self.previous_listings[old.col]
        old = sp.csr_matrix(
            (np.ones(len(columns), dtype=np.float32), (old.row, columns)), shape=new.shape
        )
        joined = (old + new).tocsr()
        joined.data[:] = 1.0
        return joined

    def report(self) -> dict[str, Any]:
        """The report entries of this warm start."""
        return {"init_from": self.source, **self.added}


def check_architecture(previous: dict[str, Any], params: dict[str, Any]) -> None:
    """Raise ValueError naming the first setting that fixes the model (its name, ``dim``,
    its hyperparameters) in which ``params`` differ from ``previous``, the parameters of the
    model to continue."""
    names = ("model", "dim", *model_class(previous["model"]).hyperparameters)
    for name in names:
        # a setting newer than the saved model is absent there: None, its value then, which
        # means what 0 or False does (recent_half_life: one space)
        value = previous.get(name)
        if (params[name] or None) != (value or None):
            raise ValueError(
                f"init_from: {name}={params[name]!r} differs from the model it continues "
                f"({name}={value!r}); a warm start keeps the model's architecture"
            )
    if model_class(previous["model"]).needs_features:
        _check_features(previous.get("schema"), params.get("schema"))


def _check_features(previous: SchemaConfig | None, given: SchemaConfig | None) -> None:
    """Raise ValueError where ``given`` (this run's ``[features]``) types or drops a column
    otherwise than ``previous``, the model's: a warm start keeps the old model's feature
    encoders, so a changed type or drop would be ignored without a word."""
    old, new = previous or SchemaConfig(), given or SchemaConfig()
    differences = [
        f"{column}: {new.types.get(column, 'inferred')} here, "
        f"{old.types.get(column, 'inferred')} there"
        for column in sorted(set(old.types) | set(new.types))
        if old.types.get(column) != new.types.get(column)
    ]
    if set(old.drop) != set(new.drop):
        differences.append(f"drop {sorted(new.drop)} here, {sorted(old.drop)} there")
    if differences:
        raise ValueError(
            f"init_from: [features] differ from the model it continues ({'; '.join(differences)}); "
            "a warm start keeps the model's features: give the [features] of its training"
        )


def warn_of_overlap(previous_report: dict[str, Any], first_event: int, source: str | None) -> None:
    """Log a warning where the new events (``first_event``: the earliest training pair's
    time, epoch seconds) begin at or before the last event the model continued from trained
    on: the same day run twice, or a window reaching back, trains on those events again and
    so weighs them twice, which the run otherwise would not show."""
    last = previous_report.get("last_event")  # absent from a model saved before it was kept
    if last is None or first_event > pd.Timestamp(last).timestamp():
        return
    first = datetime.fromtimestamp(first_event, UTC).isoformat()
    logger.warning(
        "events from %s on are no newer than the last event %s trained on (%s): those it "
        "saw again are trained on twice (the same day run twice?); give --since after it",
        first,
        source or "the model continued from",
        last,
    )


def continue_from(previous: Fitted, prepared: TrainingData, source: str | None) -> WarmStart:
    """``prepared`` (the new window, its ids mapped on its own) remapped onto the rows of
    ``previous``, with the old listings' fields where the new table lacks them and the old
    feature encoders grown by the new values. ``source`` names ``previous`` in the report."""
    new = prepared.data
    n_new_trained = prepared.n_trained_listings
    users = previous.users_.extend(new.users.ids)
    old_ids = previous.listings_.ids
    old_trained = previous.n_trained_listings_
    trained = IdMap(old_ids[:old_trained]).extend(new.listings.ids[:n_new_trained])
    listings = trained.extend(old_ids[old_trained:]).extend(new.listings.ids[n_new_trained:])
    # index arrays through small lookup tables: one gather per pair, no loop over pairs
    user_rows = users.indices(new.users.ids)
    listing_rows = listings.indices(new.listings.ids)
    data = Interactions(
        users,
        listings,
        user_rows[new.user_idx],
        listing_rows[new.listing_idx],
        new.timestamp,
        new.weight,
        dict(new.report),
        new.seen_apart,
    )
    fresh = prepared.listings.frame()
    _check_feature_columns(previous, fresh, prepared.listings.attrs.get("source"))
    _note_new_columns(previous, fresh, prepared.listings.attrs.get("source"))
    _note_missing_columns(previous, fresh, prepared.listings.attrs.get("source"))
    fresh = _in_old_types(fresh, previous.listing_table_, prepared.listings.attrs.get("source"))
    # fields from the new table; a listing it lacks keeps the fields the old model had
    kept = previous.listing_table_
    kept = kept[new.listings.indices(kept["listing_id"]) < 0]
    table = pd.concat([fresh, kept], ignore_index=True)
    table.attrs = dict(prepared.listings.attrs)
    table = in_order(table, listings)
    pipeline = None
    new_values = 0
    if previous.pipeline_ is not None:
        pipeline = FeaturePipeline.from_dict(previous.pipeline_.to_dict())
        new_values = pipeline.extend(table)
    added = {
        "new_users": len(users) - len(previous.users_),
        "new_listings": len(listings) - len(previous.listings_),
        "new_category_values": new_values,
    }
    logger.info(
        "warm start from %s: %s new users, %s new listings, %s new category values",
        source or "a model in memory",
        *(f"{v:,}" for v in added.values()),
    )
    return WarmStart(
        data,
        PackedTable(table),
        len(trained),
        previous.feature_specs_,
        pipeline,
        previous=previous.model_,
        previous_rows={"users": len(previous.users_), "listings": old_trained},
        previous_seen=previous.seen_,
        previous_listings=listings.indices(old_ids),
        source=source,
        added=added,
    )


def _in_old_types(fresh: pd.DataFrame, old: pd.DataFrame, source: str | None) -> pd.DataFrame:
    """``fresh``'s columns in the types the old model's table has them (a CSV tonight types
    its columns on its own: prices read as text, dates as strings), so that the two tables
    join into one of each column's type. A value that is no value of that type is a
    DataError naming the file, the listing and the column, before any training."""
    columns = {}
    for column in fresh.columns.intersection(old.columns).drop("listing_id", errors="ignore"):
        was, now = old[column].dtype, fresh[column]
        if pd.api.types.is_bool_dtype(was) or now.dtype == was:
            continue
        if pd.api.types.is_numeric_dtype(was) and not pd.api.types.is_numeric_dtype(now.dtype):
            converted = pd.to_numeric(now, errors="coerce")
            kind = "a number"
        elif pd.api.types.is_datetime64_any_dtype(was):
            tz = getattr(was, "tz", None)
            converted = pd.to_datetime(now, errors="coerce", utc=tz is not None, format="mixed")
            converted = converted.dt.tz_convert(tz) if tz is not None else converted
            kind = "a date-time"
        elif not pd.api.types.is_numeric_dtype(was) and pd.api.types.is_numeric_dtype(now.dtype):
            converted = now.astype(object).where(now.isna(), now.astype(str))
            converted = converted.str.removesuffix(".0") if now.dtype.kind == "f" else converted
            kind = "text"
        else:
            continue
        bad = (converted.isna() & now.notna()).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"listing_id {shown(fresh['listing_id'].iloc[row])}: {shown(now.iloc[row])} is "
                f"not {kind}, as this column is in the model continued from",
                file=source,
                column=str(column),
            )
        columns[column] = converted
    return fresh.assign(**columns) if columns else fresh


def _check_feature_columns(previous: Fitted, table: pd.DataFrame, source: str | None) -> None:
    """Raise DataError when ``table`` lacks a column the old model's features read: joined
    with the old listings' table, that column would be silently empty for every listing in
    the new one (its values erased, its filters matching nothing)."""
    if previous.pipeline_ is not None:
        previous.pipeline_.check_columns(table, source, " of the model continued from")


def _note_new_columns(previous: Fitted, table: pd.DataFrame, source: str | None) -> None:
    """Log the columns ``table`` has that the old model's listings had not: a warm start keeps
    the old feature encoders, so such a column is kept as a field (shown, filterable) but
    the network never reads it, which a nightly run would otherwise not show."""
    new = [c for c in table.columns if c not in previous.listing_table_.columns]
    if new:
        logger.warning(
            "%s: column(s) %s are new since the model continued from; a warm start keeps its "
            "features, so they are kept as fields (shown, filterable) but not learned from "
            "(train without init_from to learn from them)",
            source or "listings",
            ", ".join(new),
        )


def _note_missing_columns(previous: Fitted, table: pd.DataFrame, source: str | None) -> None:
    """Log the columns of the old model's listings that ``table`` lacks (its features' are
    refused before): joined with the old table, every listing of ``table`` is left without a
    value there, so a filter on such a column drops them, which a nightly run would not show."""
    missing = [c for c in previous.listing_table_.columns if c not in table.columns]
    if missing:
        logger.warning(
            "%s: column(s) %s of the model continued from are missing; the listings of this "
            "table have no value there (a filter on them leaves these listings out), listings "
            "absent from it keep their old values",
            source or "listings",
            ", ".join(missing),
        )


def carry_over(model: RecModel, prepared: WarmStart) -> None:
    """Copy what ``prepared.previous`` learned into ``model``, a fresh model of the same
    class and of ``prepared``'s shape whose inputs are set: the old ids' rows of the id
    tables, the old values' rows of the feature tables (which only grew at the end), every
    other weight as it is, then the inputs the model carries over (``continue_inputs``).
    New rows keep their fresh initial values. A model that holds some rows of a table only
    (``held_rows``, a distributed rank's) gets the old rows of those."""
    old_state = prepared.previous.state_dict()
    state = model.state_dict()
    if set(old_state) != set(state):
        raise ValueError(
            "init_from: the old model's weights differ from this model's: "
            f"{sorted(set(old_state) ^ set(state))}"
        )
    with torch.no_grad():
        for name, target in state.items():
            old = old_state[name]
            if name in model.id_tables:
                rows = prepared.previous_rows[model.id_tables[name]]
                if name in model.held_rows:  # sorted: the old rows come first
                    held = model.held_rows[name][0]
                    old = old[held[held < rows]]
                    rows = len(old)
            elif target.shape == old.shape:
                target.copy_(old)
                continue
            else:
                rows = len(old)  # a feature table whose vocabulary grew at the end
            if target.shape[1:] != old.shape[1:] or len(target) < rows or len(old) < rows:
                raise ValueError(
                    f"init_from: weight {name} has shape {tuple(old.shape)} in the old model "
                    f"and {tuple(target.shape)} here"
                )
            target[:rows] = old[:rows]
    old_users = None
    if model.held_users is not None:
        held = model.held_users[0]
        old_users = held[held < prepared.previous_rows["users"]]
    model.continue_inputs(prepared.previous, old_users)
    model.refresh()
