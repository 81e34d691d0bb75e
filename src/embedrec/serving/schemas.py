"""Request and response models of the HTTP API (they make the OpenAPI schema)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt
from pydantic_core import PydanticCustomError

ListingId = str | int


def _listing_id(value: Any) -> Any:
    """A listing id in a request is a JSON string or integer: lax pydantic would read
    ``true`` as 1, and name a null's error by the union's members (``session.0.str``)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("a listing id is a string or an integer")
    return value


RequestListingId = Annotated[ListingId, BeforeValidator(_listing_id)]


def _whole_number_text(value: Any) -> Any:
    """A count in a query string is written in digits: lax pydantic would take ``2.0`` or
    ``1e1``, which a JSON body's strict integer refuses."""
    if isinstance(value, str) and not re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
        raise PydanticCustomError(
            "int_parsing", "Input should be a valid integer, unable to parse string as an integer"
        )
    return value


QueryCount = Annotated[int, BeforeValidator(_whole_number_text)]
MAX_K = 1000
MAX_BATCH = 1000  # listings in one POST /v1/listings:batch


class ItemError(BaseModel):
    """One bad listing of a batch: its position in ``listings``, the field and why."""

    index: int
    field: str | None = None
    error: str


class ErrorBody(BaseModel):
    """Every error: a message and, when one parameter or field is at fault, its name; a
    batch write names every bad listing in ``errors``."""

    error: str
    field: str | None = Field(
        None,
        description="what is at fault, as the client sends it: a body field by its path in "
        "the JSON body (session, listings.0.price, filters.price_min; body: the body as a "
        "whole), a query or path parameter by its name (k, price_min, listing_id), a header "
        "by its name (Authorization)",
    )
    errors: list[ItemError] | None = None


class ListingFields(BaseModel):
    """A listing: its id and whatever columns the listings file has."""

    model_config = ConfigDict(extra="allow")
    listing_id: ListingId


class ListingResult(ListingFields):
    """One result: the listing's fields, its score and, with a location, its distance."""

    score: float
    distance_km: float | None = None


class SimilarResponse(BaseModel):
    query: ListingId
    results: list[ListingResult]


class RecommendationsResponse(BaseModel):
    query: ListingId
    results: list[ListingResult]


class SessionRequest(BaseModel):
    """An anonymous visitor: the listings they viewed, most relevant last or in any order."""

    model_config = ConfigDict(extra="forbid")
    session: list[RequestListingId] = Field(min_length=1, max_length=MAX_K)
    # strict: JSON true is no number of results (lax pydantic would take it for 1)
    k: StrictInt = Field(10, ge=1, le=MAX_K)
    filters: dict[str, Any] | None = Field(
        None,
        description="Same keys as the query parameters: price_min, make (string or list), "
        "near ([lat, lon] or 'lat,lon') with within_km, exclude (list of ids), ...",
        examples=[{"price_max": 30000, "fuel": ["diesel", "petrol"]}],
    )


class SessionResponse(BaseModel):
    query: list[ListingId]
    results: list[ListingResult]
    unknown: list[ListingId] = []


class RandomListing(BaseModel):
    listing_id: ListingId


class ProjectionPoint(ListingFields):
    x: float
    y: float


class ProjectionResponse(BaseModel):
    method: str
    points: list[ProjectionPoint]


class CatalogueColumn(BaseModel):
    """One column of the served catalogue: what it holds and the query parameters that
    filter it."""

    name: str
    kind: Literal["numeric", "categorical", "multi", "boolean", "text", "datetime"] = Field(
        description="numeric (filtered by a range), categorical, multi (values a|b|c, each "
        "matched by a set filter), boolean, text (titles, descriptions: mostly unique) or "
        "datetime (not filterable)"
    )
    filters: list[str] = Field(
        description="the query parameters that filter it: <name>_min and <name>_max for a "
        "number, <name> for a set of values; none for dates and times"
    )
    distinct: int | None = Field(
        None, description="distinct values in the sample (null for numbers and dates)"
    )
    values: list[str] | None = Field(
        None,
        description="its most frequent values in the sample, most frequent first (at most "
        "100; a multi-valued column's single values; true and false as JSON writes them); "
        "null for numbers, dates and text",
    )


class CatalogueInfo(BaseModel):
    """The served catalogue's columns, as the explorer page builds its filters from them."""

    listings: int = Field(description="live listings")
    id_column: str = Field(description="the listings' id column (filtered by exclude)")
    location: list[str] | None = Field(
        description="the latitude and longitude columns (near and within_km filter them), "
        "or null for a catalogue without coordinates"
    )
    sample: int = Field(description="the live listings the values were counted in")
    columns: list[CatalogueColumn]


class WriteResponse(BaseModel):
    """A write committed to the store (``seq``: its place in the change sequence)."""

    listing_id: ListingId
    seq: int
    created: bool = False
    deleted: bool = False


class BatchRequest(BaseModel):
    """Listings to add or replace together: each an object with ``listing_id`` and the
    columns of the listings file, as the body of a PUT."""

    model_config = ConfigDict(extra="forbid")
    listings: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        examples=[[{"listing_id": "L1", "make": "Nissan", "price": 23221}]],
    )


class BatchResponse(BaseModel):
    """The batch committed in one transaction: ``seqs`` in the order of ``listings``."""

    count: int
    created: int = Field(description="how many listings were new (the others replaced)")
    seqs: list[int]


MODEL_DIR_DESCRIPTION = (
    "the served model directory's path on the server: only for a caller that sends the API "
    "token (Authorization: Bearer), null for others"
)


class ModelInfo(BaseModel):
    model_dir: str | None = Field(None, description=MODEL_DIR_DESCRIPTION)
    model_name: str = Field(description="the served model directory's name")
    model_id: str | None = Field(
        None,
        description="a fingerprint of the model's files (a hash of its manifest): the same "
        "on every worker and replica serving them",
    )
    model: str
    version: str | None = Field(None, description="embedrec version that trained the model")
    trained_at: str | None = None
    generation: int = Field(description="how many reloads the store has seen")
    listings: int = Field(description="live listings in the index")
    loaded_at: float
    report: dict[str, Any] = Field(description="training report, evaluation figures included")


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_dir: str | None = Field(None, description="default: the directory served now")


class Liveness(BaseModel):
    status: str = Field(description="always 'alive': the process answers")


class Readiness(BaseModel):
    status: str = Field(description="'ready': the index is built and the store caught up")
    model_dir: str | None = Field(None, description=MODEL_DIR_DESCRIPTION)
    model_name: str = Field(description="the served model directory's name")
    model_id: str | None = Field(None, description="a fingerprint of the model's files")
    generation: int
    seq: int = Field(description="the last store change applied")
    listings: int
    skipped: int = Field(
        0,
        description="stored listings this model cannot serve (their columns do not fit it, "
        "or the row cannot be read): not served; the log names each",
    )
    reload_error: str | None = Field(
        None,
        description="why the last reload recorded in the store failed here; the model "
        "served is the one before it",
    )
    store_error: str | None = Field(
        None,
        description="why the store cannot be reached now, or why the last write failed "
        "(a full disk, a locked or read-only database) while the store has taken no write "
        "since (a client's, or the check every 5 s that stores nothing): reads are answered "
        "from memory, writes answer 503 until it is back",
    )


class Health(BaseModel):
    status: str
    listings: int
    generation: int
    seq: int
    writable: bool
