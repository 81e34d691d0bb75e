"""The data preparation that ``Recommender.fit`` runs, public so that benchmarks and other
training drivers start from exactly what fit trains on."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from embedrec.data.errors import DataError, located_in
from embedrec.data.ids import IdMap
from embedrec.data.io import load_interactions, load_listings, no_events, read_message
from embedrec.data.packed import PackedTable
from embedrec.data.prepare import Interactions, prepare
from embedrec.data.schema import FeatureSpec, SchemaConfig, infer_schema
from embedrec.data.sources import Window
from embedrec.features.pipeline import FeaturePipeline
from embedrec.models.base import ModelShape
from embedrec.training.distributed import Group

logger = logging.getLogger(__name__)
Source = str | pd.DataFrame | object  # a path (str or Path) or a DataFrame


@dataclass
class TrainingData:
    """Interactions and listings as a model trains on them.

    ``data`` holds every kept (user, listing) pair; its listing rows are the trained
    listings first (``n_trained_listings``), then listings known only by their features.
    ``listings`` is the listings table in that row order, packed: a fit holds it through
    training but reads it only to derive the model's inputs and to keep it in the model.
    ``pipeline`` holds the feature encoders fitted on it (None for a model without features).
    """

    data: Interactions
    listings: PackedTable
    n_trained_listings: int
    feature_specs: list[FeatureSpec]
    pipeline: FeaturePipeline | None

    def shape(self) -> ModelShape:
        """Table sizes and encoders for a model of this data."""
        return ModelShape(
            n_users=len(self.data.users),
            n_listings=len(self.data.listings),
            n_trained_listings=self.n_trained_listings,
            pipeline=self.pipeline.to_dict() if self.pipeline is not None else None,
        )


def prepare_training_data(
    interactions: Source,
    listings: Source,
    event_weights: Mapping[str, float] | None = None,
    schema: SchemaConfig | None = None,
    min_user_interactions: int = 1,
    min_listing_interactions: int = 1,
    features_for: str | None = None,
    progress: bool | None = None,
    since: object = None,
    until: object = None,
    group: Group | None = None,
    fit_features: bool = True,
    model_ids: Mapping[str, pd.Index] | None = None,
) -> TrainingData:
    """Load and validate both tables, map ids, skip (and count) what cannot be trained on,
    and fit the feature encoders for the model named ``features_for`` (None: a model without
    features). ``since``/``until`` keep the interactions in that time window.
    ``fit_features=False`` checks that the model's features are there but fits no encoders
    (``pipeline`` stays None): a warm start keeps those of the model it continues, and
    passes its ids by column (``model_ids``) so that the new ids are read in their types
    (a DataError names a string id that writes no integer where those are integers). Raises
    DataError naming the file, row and column of bad input, or when that model needs
    features and the listings have none.

    In a distributed run (``group``) each rank keeps the events of its own users, and the id
    maps span every rank; an error on any rank is raised on every rank, naming that rank."""
    steps = tqdm(
        total=4,
        desc="loading",
        unit="step",
        leave=False,
        disable=None if progress is None else not progress,
    )
    failure: Exception | None = None
    try:
        listing_table = load_listings(listings, model_ids)
        steps.update()
        shard = None if group is None else (group.rank, group.world)
        events = load_interactions(interactions, event_weights, since, until, shard, model_ids)
        steps.update()
        specs = infer_schema(listing_table, schema, listing_table.attrs.get("source"))
    except (DataError, OSError) as exc:
        if group is None:
            raise
        failure = exc
    if group is not None:
        # every rank learns of a failed one here, before the collectives of ``prepare``
        message = group.first_error(None if failure is None else str(failure))
        if message is not None:
            raise DataError(message) from None
        window = Window.parse(since, until)
        kept = group.total(len(events))
        # every rank reads every row and keeps its own users' events: the rows are one read's
        rows, files = (int(events.attrs.get(k, 0)) for k in ("rows_read", "files_read"))
        if kept == 0:  # a rank alone may hold none; all of them, not
            raise DataError(no_events(window, rows, files), file=events.attrs.get("source"))
        if window:
            logger.info(read_message(window, kept, rows, files))
    data = prepare(events, listing_table, min_user_interactions, min_listing_interactions, group)
    # read no more: freed before the features are fitted and the table is packed (a rank's
    # 10M events of the large car data, about 400 MB)
    del events
    if group is not None:
        message = group.first_error(
            None
            if len(data)
            else "no training pairs on this rank: no user of its share (users are shared out "
            "by a hash of user_id) has an event here; train with fewer ranks"
        )
        if message is not None:
            raise DataError(message)
        data.report = summed_report(data.report, group)
    steps.update()
    n_trained = len(data.listings)
    # listings without interactions get rows too: feature models can still embed them
    data.listings = data.listings.extend(listing_table["listing_id"])
    pipeline = None
    if features_for is not None:
        if not specs:
            raise DataError(
                f"model {features_for!r} needs listing features, but the listings table has "
                "none besides listing_id",
                file=listing_table.attrs.get("source"),
            )
        if fit_features:
            # inferred, not declared: one line shows what each column was taken for
            logger.info("listing features: %s", ", ".join(_described(spec) for spec in specs))
            with located_in(listing_table.attrs.get("source")):  # a forced type's values
                pipeline = FeaturePipeline(specs).fit(listing_table)
    steps.update()
    steps.close()
    skipped = {k: v for k, v in data.report.items() if k.startswith("events_skipped") and v}
    if skipped:
        logger.info(
            "skipped: %s",
            ", ".join(f"{v:,} {k.removeprefix('events_skipped_')}" for k, v in skipped.items()),
        )
    ordered = PackedTable(in_order(listing_table, data.listings))
    return TrainingData(data, ordered, n_trained, specs, pipeline)


# counts of a rank's own events; the rest (users and listings: the maps of every rank, rows
# and files read) are the same on every rank
SUMMED = ("events_read", "events_used", "pairs")


def summed_report(report: dict[str, int], group: Group) -> dict[str, int]:
    """A rank's report with its event and user counts summed over every rank."""
    summed = {
        key: group.total(value) if key in SUMMED or key.startswith("events_skipped") else value
        for key, value in report.items()
    }
    # a rank without events of its own (an error below) offers none to the window
    first = report["first_event"] if report["events_used"] else np.iinfo(np.int64).max
    last = report["last_event"] if report["events_used"] else np.iinfo(np.int64).min
    summed["first_event"], summed["last_event"] = -group.max(-first), group.max(last)
    return summed


def in_order(table: pd.DataFrame, ids: IdMap) -> pd.DataFrame:
    """The rows of ``table`` in the order of ``ids`` (every id must be in the table)."""
    positions = pd.Index(table["listing_id"]).get_indexer(ids.ids)
    ordered = table.iloc[positions].reset_index(drop=True)
    ordered.attrs = dict(table.attrs)
    return ordered


def _described(spec: FeatureSpec) -> str:
    columns = "" if spec.columns == (spec.name,) else f" ({', '.join(spec.columns)})"
    return f"{spec.name}{columns} {spec.kind}"
