"""Synthetic German used-car marketplace: listings, users and their browsing events.

``generate_cars`` promises:

* the same ``(size, seed)`` gives byte-identical tables; another seed gives other data;
* listings of real makes and models (``car_catalog``) at dealers in real German cities
  (``geography``), priced by age and mileage, each with ``listed_at`` and ``sold_at``, and a
  ``title`` and ``description`` as sellers write them (``car_text``), whose trim and condition
  words follow the listing's latent appeal;
* users living in cities in proportion to population, each with a search radius, a budget,
  preferred segments and makes, browsing in sessions over 10 weeks ending 2026-11-01 UTC;
  the listings they see are active at the time, mostly within their radius, and weighted by
  affinity; events follow a view -> favorite -> contact funnel;
* ``interactions.parquet`` is sorted by timestamp and names only listings in ``listings``;
* the listing ``qashqai-dresden`` (2018 Nissan Qashqai, 23,221 EUR, Dresden) is always there,
  listed in the first week and still for sale at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from embedrec.data.atomic import replacing
from embedrec.datasets.car_catalog import (
    CATALOG,
    FUEL_WEIGHTS,
    FUELS,
    MAKES,
    SEGMENTS,
    find_model,
)
from embedrec.datasets.car_text import listing_texts
from embedrec.datasets.geography import Cities, load_cities


@dataclass(frozen=True)
class Size:
    listings: int
    users: int
    events: int  # target; the result lands within about 10% of it
    chunk_sessions: int  # sessions sampled at a time; bounds memory


SIZES: dict[str, Size] = {
    "tiny": Size(listings=600, users=300, events=12_000, chunk_sessions=20_000),
    "small": Size(listings=20_000, users=10_000, events=500_000, chunk_sessions=20_000),
    "large": Size(listings=1_000_000, users=2_000_000, events=20_000_000, chunk_sessions=20_000),
}

END = np.datetime64("2026-11-01T00:00:00", "s")
WEEKS = 10
DAY = 86_400
DAYS = WEEKS * 7
SPAN = DAYS * DAY  # times are int seconds since START internally
START = END - np.timedelta64(SPAN, "s")
NEVER = np.int64(2**62)  # sold_at of a listing still for sale

EVENTS = ("view", "favorite", "contact")
EQUIPMENT = (  # (item, base log-odds)
    ("navigation", 0.3), ("heated_seats", 0.0), ("parking_sensors", 0.5),
    ("rear_camera", -0.8), ("cruise_control", 0.8), ("adaptive_cruise", -1.5),
    ("leather", -1.5), ("sunroof", -2.0), ("led_headlights", -0.8),
    ("keyless", -1.2), ("apple_carplay", -0.5), ("tow_bar", -1.5),
)  # fmt: skip
QASHQAI_ID = "qashqai-dresden"
QASHQAI_EQUIPMENT = ("navigation", "heated_seats", "parking_sensors", "rear_camera",
                     "cruise_control", "apple_carplay")  # fmt: skip
N_CANDIDATES = 8  # listings drawn per view, one chosen by appeal and the user's affinity
S = len(SEGMENTS)  # segment index S means "any segment"


def generate_cars(
    out_dir: str | Path, size: str = "small", seed: int = 0, progress: bool | None = None
) -> dict[str, Path]:
    """Write listings.parquet, interactions.parquet and users.parquet into ``out_dir``.

    Returns their paths under the keys "listings", "interactions", "users". The files are
    written to temporary files in ``out_dir`` and renamed into place only once all three are
    complete. Raises ValueError for an unknown ``size`` (one of SIZES).
    """
    if size not in SIZES:
        raise ValueError(f"unknown size '{size}'; expected one of {', '.join(SIZES)}")
    spec = SIZES[size]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cities = load_cities()
    # the text has a stream of its own, so the other columns are those of data made without it
    rng_listings, rng_users, rng_text = (np.random.default_rng([seed, k]) for k in (1, 2, 4))
    # None: bars only on a terminal (a log file would fill with carriage-return updates)
    disable = None if progress is None else not progress
    steps = tqdm(total=4, desc=f"cars {size}: listings", disable=disable, leave=False)
    listings = _make_listings(rng_listings, spec.listings, cities)
    steps.update()
    steps.set_description(f"cars {size}: users")
    users = _make_users(rng_users, spec.users, cities)
    steps.update()
    steps.set_description(f"cars {size}: index")
    sessions = _make_sessions(rng_users, users, spec)
    cells = _Cells(listings, len(cities))
    steps.update()
    steps.set_description(f"cars {size}: write")
    paths = {name: out / f"{name}.parquet" for name in ("listings", "interactions", "users")}
    with replacing(*paths.values()) as temporaries:
        tmp = dict(zip(paths, temporaries, strict=True))
        texts = listing_texts(rng_text, listings, [item for item, _ in EQUIPMENT])
        pq.write_table(_listings_table(listings, cities, texts), tmp["listings"])
        del texts  # hand the text's memory back before the interactions, the peak
        pa.default_memory_pool().release_unused()
        pq.write_table(_users_table(users, cities), tmp["users"])
        steps.update()
        steps.close()
        dist = cities.distances_km().astype(np.float32)
        _write_interactions(
            tmp["interactions"], seed, spec, sessions, users, listings, cells, dist, progress
        )
    return paths


# -- listings ---------------------------------------------------------------------------------


def _catalog_arrays() -> dict[str, np.ndarray]:
    fuel_p = np.array([[FUEL_WEIGHTS[f] * (f in c.fuels) for f in FUELS] for c in CATALOG])
    return {
        "make": np.array([MAKES.index(c.make) for c in CATALOG]),
        "segment": np.array([SEGMENTS.index(c.segment) for c in CATALOG]),
        "power": np.array([c.power_kw for c in CATALOG], dtype=np.float64),
        "new_price": np.array([c.new_price for c in CATALOG], dtype=np.float64),
        "popularity": np.array([c.popularity for c in CATALOG]),
        "since": np.array([c.since for c in CATALOG]),
        "fuel_cdf": np.cumsum(fuel_p / fuel_p.sum(1, keepdims=True), axis=1),
    }


def _make_listings(rng: np.random.Generator, n: int, cities: Cities) -> dict[str, np.ndarray]:
    cat = _catalog_arrays()
    dresden = cities.index("Dresden")
    # Dealers: located by population, some are brand dealers selling mostly one make.
    n_dealers = max(n // 25, 20)
    d_city = rng.choice(len(cities), n_dealers, p=cities.population / cities.population.sum())
    d_city[0] = dresden  # the Qashqai's dealer
    d_lat = cities.lat[d_city] + rng.normal(0, 0.02, n_dealers)  # ~2 km
    d_lon = cities.lon[d_city] + rng.normal(0, 0.03, n_dealers)
    d_size = rng.lognormal(0, 0.8, n_dealers)
    make_pop = np.bincount(cat["make"], weights=cat["popularity"])
    d_brand = rng.choice(len(MAKES), n_dealers, p=make_pop / make_pop.sum())
    d_brand[rng.random(n_dealers) < 0.6] = -1

    dealer = rng.choice(n_dealers, n, p=d_size / d_size.sum())
    model = rng.choice(len(CATALOG), n, p=cat["popularity"] / cat["popularity"].sum())
    branded = (d_brand[dealer] >= 0) & (rng.random(n) < 0.7)
    for make in range(len(MAKES)):
        rows = np.flatnonzero(branded & (d_brand[dealer] == make))
        options = np.flatnonzero(cat["make"] == make)
        pop = cat["popularity"][options]
        model[rows] = rng.choice(options, len(rows), p=pop / pop.sum())

    year = np.clip(2024 - rng.gamma(2.2, 2.6, n).astype(np.int64), 2005, 2024)
    year = np.maximum(year, cat["since"][model])
    fuel = (rng.random(n)[:, None] > cat["fuel_cdf"][model]).sum(1)
    fuel = np.minimum(fuel, len(FUELS) - 1)
    lo, hi = cat["power"][model, 0], cat["power"][model, 1]
    power_frac = rng.beta(2, 3, n)
    power = np.round(lo + (hi - lo) * power_frac).astype(np.int64)
    age = 2026.8 - (year + 0.5)
    annual_km = rng.lognormal(np.log(13_000), 0.35, n) * np.where(fuel == 1, 1.5, 1.0)
    mileage = age * np.minimum(annual_km, 45_000) + rng.uniform(0, 3000, n)
    mileage = np.round(np.minimum(mileage, 420_000)).astype(np.int64)
    electric = fuel == FUELS.index("electric")
    # Depreciation: exponential in age (steeper for EVs) and in mileage, plus dealer noise.
    depreciation = 0.88 * np.exp(-(0.07 + 0.04 * electric) * age) * np.exp(-0.0025 * mileage / 1000)
    new_price = cat["new_price"][model] * (1 + 0.5 * power_frac)
    price = np.round(new_price * depreciation * rng.lognormal(0, 0.1, n)).astype(np.int64)
    price = np.maximum(price, 500)
    p_auto = np.clip(0.1 + (new_price - 20_000) / 80_000 + (year - 2012) * 0.025, 0.05, 0.95)
    automatic = (rng.random(n) < p_auto) | electric | (fuel == FUELS.index("hybrid"))
    # Richer equipment on dearer and newer cars.
    lux = np.log(new_price / 30_000) + 0.15 * (year - 2015)
    equipment = np.stack(
        [rng.random(n) < 1 / (1 + np.exp(-(base + lux))) for _, base in EQUIPMENT], axis=1
    )
    listed = rng.integers(-3 * 7 * DAY, SPAN, n)
    lifetime = np.clip(rng.lognormal(np.log(18 * DAY), 0.7, n), 2 * DAY, 120 * DAY)
    sold = listed + lifetime.astype(np.int64)
    sold[sold >= SPAN] = NEVER
    appeal = rng.lognormal(0, 0.5, n)  # photos, description: why some listings get more views

    q = 0  # the Qashqai takes row 0
    model[q] = find_model("Nissan", "Qashqai")
    dealer[q], year[q], fuel[q], automatic[q] = 0, 2018, FUELS.index("petrol"), True
    power[q], mileage[q], price[q] = 117, 48_500, 23_221
    equipment[q] = [item in QASHQAI_EQUIPMENT for item, _ in EQUIPMENT]
    listed[q], sold[q], appeal[q] = 2 * DAY + 10 * 3600, NEVER, 4.0
    return {
        "model": model, "make": cat["make"][model], "segment": cat["segment"][model],
        "fuel": fuel, "automatic": automatic, "power": power, "year": year,
        "mileage": mileage, "price": price, "equipment": equipment, "dealer": dealer,
        "city": d_city[dealer], "lat": d_lat[dealer], "lon": d_lon[dealer],
        "listed": listed, "sold": sold, "appeal": appeal,
    }  # fmt: skip


def _listings_table(
    ls: dict[str, np.ndarray], cities: Cities, texts: tuple[pa.Array, pa.Array]
) -> pa.Table:
    n = len(ls["model"])
    ids = [f"L{i:07d}" for i in range(n)]
    ids[0] = QASHQAI_ID
    cat = {f: pa.array([getattr(c, f) for c in CATALOG]) for f in ("make", "model", "segment")}
    body = pa.array([c.body for c in CATALOG])
    model = pa.array(ls["model"])
    return pa.table({
        "listing_id": pa.array(ids),
        "title": texts[0],
        "make": cat["make"].take(model),
        "model": cat["model"].take(model),
        "segment": cat["segment"].take(model),
        "body": body.take(model),
        "fuel": pa.array(FUELS).take(pa.array(ls["fuel"])),
        "transmission": pa.array(np.where(ls["automatic"], "automatic", "manual")),
        "power_kw": pa.array(ls["power"], pa.int64()),
        "year": pa.array(ls["year"], pa.int64()),
        "mileage_km": pa.array(ls["mileage"], pa.int64()),
        "price": pa.array(ls["price"], pa.int64()),
        "equipment": _join_flags(ls["equipment"], [item for item, _ in EQUIPMENT]),
        "description": texts[1],
        "city": pa.array(cities.name[ls["city"]].tolist()),
        "region": pa.array(cities.region[ls["city"]].tolist()),
        "lat": pa.array(np.round(ls["lat"], 5)),
        "lon": pa.array(np.round(ls["lon"], 5)),
        "dealer_id": pa.array([f"D{i:06d}" for i in ls["dealer"]]),
        "listed_at": _timestamps(ls["listed"]),
        "sold_at": _timestamps(ls["sold"], missing=ls["sold"] == NEVER),
    })  # fmt: skip


# -- users and sessions -----------------------------------------------------------------------


def _make_users(rng: np.random.Generator, n: int, cities: Cities) -> dict[str, np.ndarray]:
    cat = _catalog_arrays()
    city = rng.choice(len(cities), n, p=cities.population / cities.population.sum())
    radius = np.round(np.clip(rng.lognormal(np.log(90), 0.45, n), 20, 300)).astype(np.int64)
    budget = np.clip(rng.lognormal(np.log(17_000), 0.65, n), 2_500, 150_000)
    budget = (np.round(budget / 500) * 500).astype(np.int64)
    # Segments the budget can afford are likelier: typical used price about 45% of new.
    seg_pop = np.bincount(cat["segment"], weights=cat["popularity"], minlength=S)
    seg_price = 0.45 * np.bincount(cat["segment"], weights=cat["new_price"], minlength=S)
    seg_price /= np.bincount(cat["segment"], minlength=S)
    fit = -0.5 * (np.log(budget[:, None] / seg_price[None]) / 0.7) ** 2
    seg_rank = _gumbel_top(rng, np.log(seg_pop)[None] + fit, 2)
    n_seg = 1 + (rng.random(n) < 0.5)
    segments = np.where(np.arange(2)[None] < n_seg[:, None], seg_rank, -1)
    segmask = np.zeros(n, dtype=np.int64)
    for k in range(2):
        segmask |= np.where(segments[:, k] >= 0, 1 << segments[:, k], 0)
    # Makes: popular ones within the preferred segments.
    make_seg = np.zeros((S, len(MAKES)))
    np.add.at(make_seg, (cat["segment"], cat["make"]), cat["popularity"])
    in_seg = ((segmask[:, None] >> np.arange(S)[None]) & 1).astype(np.float32)
    make_w = in_seg @ make_seg.astype(np.float32) + 0.05 * make_seg.sum(0, dtype=np.float32)
    make_rank = _gumbel_top(rng, np.log(make_w), 3)
    n_makes = rng.choice(4, n, p=[0.3, 0.35, 0.25, 0.1])
    makes = np.where(np.arange(3)[None] < n_makes[:, None], make_rank, -1)
    return {"city": city, "radius": radius, "budget": budget, "segments": segments,
            "segmask": segmask, "makes": makes}  # fmt: skip


def _gumbel_top(rng: np.random.Generator, logits: np.ndarray, k: int) -> np.ndarray:
    """Per row, k indices drawn without replacement with probabilities softmax(logits)."""
    noisy = logits + rng.gumbel(size=logits.shape).astype(logits.dtype)
    return np.argsort(-noisy, axis=1, kind="stable")[:, :k]


def _make_sessions(rng: np.random.Generator, users: dict, spec: Size) -> dict[str, np.ndarray]:
    """Browsing sessions of all users, sorted by start time."""
    n = len(users["city"])
    views_per_session = 5.0
    sessions_per_user = spec.events / 1.12 / views_per_session / n  # 1.12: favorites, contacts
    activity = rng.lognormal(-0.32, 0.8, n)
    count = 1 + rng.poisson(max(sessions_per_user - 1, 0) * activity)
    user = np.repeat(np.arange(n), count)
    # Each user is in the market for a few weeks; sessions mostly in the evening.
    w_start = rng.integers(0, SPAN - DAY, n)
    w_len = np.clip(rng.lognormal(np.log(21 * DAY), 0.6, n), DAY, SPAN).astype(np.int64)
    w_end = np.minimum(w_start + w_len, SPAN)
    m = len(user)
    t = w_start[user] + (rng.random(m) * (w_end - w_start)[user]).astype(np.int64)
    day = t // DAY
    t = day * DAY + (np.clip(rng.normal(19, 3.5, m), 6, 23.9) * 3600).astype(np.int64)
    choice = users["segments"][user, rng.integers(0, 2, m)]
    choice = np.where(choice >= 0, choice, users["segments"][user, 0])
    segment = np.where(rng.random(m) < 0.75, choice, S)
    order = np.argsort(t, kind="stable")
    return {
        "user": user[order], "t": t[order], "day": day[order], "segment": segment[order],
        "national": (rng.random(m) < 0.03)[order],
        "views": (1 + rng.poisson(views_per_session - 1, m))[order],
    }  # fmt: skip


# -- interactions ------------------------------------------------------------------------------


class _Cells:
    """Active listings grouped by (day, segment or "any", city), and each group's appeal."""

    def __init__(self, ls: dict[str, np.ndarray], n_cities: int) -> None:
        first = np.maximum(ls["listed"] // DAY, 0)
        last = np.minimum(-(-ls["sold"] // DAY) - 1, DAYS - 1)
        n_days = np.maximum(last - first + 1, 0)
        listing = np.repeat(np.arange(len(n_days)), n_days)
        day = (
            first[listing] + np.arange(len(listing)) - np.repeat(np.cumsum(n_days) - n_days, n_days)
        )
        base = day * (S + 1)
        keys = np.concatenate([base + ls["segment"][listing], base + S]) * n_cities
        keys += np.tile(ls["city"][listing], 2)
        order = np.argsort(keys, kind="stable")
        self.n_cities = n_cities
        self.listing = np.tile(listing, 2)[order].astype(np.int32)
        n_keys = DAYS * (S + 1) * n_cities
        counts = np.bincount(keys, minlength=n_keys)
        self.start = np.concatenate([[0], np.cumsum(counts)])
        weight = np.bincount(keys, weights=np.tile(ls["appeal"][listing], 2), minlength=n_keys)
        self.weight = weight.reshape(DAYS * (S + 1), n_cities).astype(np.float32)


def _write_interactions(
    path: Path, seed: int, spec: Size, sessions: dict, users: dict, ls: dict, cells: _Cells,
    dist: np.ndarray, progress: bool | None,
) -> None:  # fmt: skip
    n_listings = len(ls["model"])
    listing_ids = pa.array([QASHQAI_ID] + [f"L{i:07d}" for i in range(1, n_listings)])
    user_ids = pa.array([f"U{i:07d}" for i in range(len(users["city"]))])
    schema = pa.schema(
        [
            ("user_id", pa.string()),
            ("listing_id", pa.string()),
            ("timestamp", pa.timestamp("ns", tz="UTC")),
            ("event", pa.string()),
        ]
    )
    n = len(sessions["t"])
    held = [np.empty(0, np.int64)] * 4  # events not yet written: later than the next session
    bar = tqdm(
        total=spec.events,
        desc="interactions",
        unit="ev",
        disable=None if progress is None else not progress,
    )
    with pq.ParquetWriter(path, schema) as writer:
        for i, lo in enumerate(range(0, n, spec.chunk_sessions)):
            chunk = {k: v[lo : lo + spec.chunk_sessions] for k, v in sessions.items()}
            new = _sample_events(np.random.default_rng([seed, 3, i]), chunk, users, ls, cells, dist)
            ev = [np.concatenate([h, x]) for h, x in zip(held, new, strict=True)]
            order = np.argsort(ev[2], kind="stable")
            ev = [x[order] for x in ev]
            nxt = sessions["t"][lo + spec.chunk_sessions] if lo + spec.chunk_sessions < n else NEVER
            cut = np.searchsorted(ev[2], nxt)
            held = [x[cut:] for x in ev]
            user, listing, ts, event = (x[:cut] for x in ev)
            writer.write_table(pa.table({
                "user_id": user_ids.take(pa.array(user)),
                "listing_id": listing_ids.take(pa.array(listing)),
                "timestamp": _timestamps(ts),
                "event": pa.array(EVENTS).take(pa.array(event)),
            }, schema=schema))  # fmt: skip
            bar.update(cut)
    bar.close()


def _sample_events(
    rng: np.random.Generator, ss: dict, users: dict, ls: dict, cells: _Cells, dist: np.ndarray
) -> list[np.ndarray]:
    """Events of a chunk of sessions: arrays user, listing, timestamp (s), event code."""
    n, C = len(ss["t"]), cells.n_cities
    u = ss["user"]
    # City weights: active stock (by appeal) in cities within the radius, nearer ones favoured.
    near = dist[users["city"][u]]  # in place from here on: these (sessions x cities) arrays
    near *= (0.5 / users["radius"][u])[:, None].astype(np.float32)  # dominate the run time
    inside = near <= 0.5
    np.subtract(1, near, out=near)
    near *= inside
    near[ss["national"]] = 1
    rows = ss["day"] * (S + 1) + ss["segment"]
    w = cells.weight[rows]
    w *= near
    empty = w.sum(1) == 0  # nothing of that segment around: browse any segment
    rows[empty] = ss["day"][empty] * (S + 1) + S
    w[empty] = cells.weight[rows[empty]] * near[empty]
    empty = w.sum(1) == 0  # nothing at all around: browse nationwide
    w[empty] = cells.weight[rows[empty]]
    w[w.sum(1) == 0] = 1  # nothing active at all (tiny data): its views are dropped below
    cum = np.cumsum(w, axis=1, dtype=np.float64)
    cum = cum / cum[:, -1:] + np.arange(n)[:, None]

    sess = np.repeat(np.arange(n), ss["views"])
    m = len(sess)
    elapsed = np.cumsum(rng.exponential(45, m))  # seconds between views
    first = np.cumsum(ss["views"]) - ss["views"]
    elapsed -= np.repeat(elapsed[first], ss["views"])
    ts = ss["t"][sess] + elapsed.astype(np.int64)
    target = sess + rng.random(m) * (1 - 1e-9)
    city = np.minimum(np.searchsorted(cum.ravel(), target, side="right") - sess * C, C - 1)

    key = rows[sess] * C + city
    lo, hi = cells.start[key], cells.start[key + 1]
    pos = lo[:, None] + (rng.random((m, N_CANDIDATES)) * (hi - lo)[:, None]).astype(np.int64)
    cand = cells.listing[np.minimum(pos, len(cells.listing) - 1)]

    uu = u[sess]
    seg_match = (users["segmask"][uu][:, None] >> ls["segment"][cand]) & 1
    make_match = (users["makes"][uu][:, :, None] == ls["make"][cand][:, None, :]).any(1)
    ratio = np.log(ls["price"][cand] / users["budget"][uu][:, None])
    fit = np.exp(-0.5 * (ratio / np.where(ratio > 0, 0.25, 0.6)) ** 2)
    active = (ls["listed"][cand] <= ts[:, None]) & (ts[:, None] < ls["sold"][cand])
    affinity = (1 + 3 * seg_match) * (1 + 2 * make_match) * (0.03 + fit) * active
    affinity *= ls["appeal"][cand]
    with np.errstate(divide="ignore"):
        score = np.log(affinity) + rng.gumbel(size=affinity.shape)
    best = np.argmax(score, axis=1)
    ok = (affinity.max(1) > 0) & (ts < SPAN) & (hi > lo)
    rows_m = np.arange(m)
    listing = cand[rows_m, best][ok]
    ts, uu = ts[ok], uu[ok]
    interest = (fit * (0.5 + 0.5 * seg_match) * (0.6 + 0.4 * make_match))[rows_m, best][ok]

    # Funnel: favorites and contacts follow views of listings that fit the user.
    fav = rng.random(len(ts)) < 0.01 + 0.2 * interest
    contact = rng.random(len(ts)) < np.where(fav, 0.2, 0.01 + 0.02 * interest)
    fav_ts = ts + rng.integers(5, 120, len(ts))
    contact_ts = ts + rng.integers(30, 900, len(ts))
    fav &= (fav_ts < ls["sold"][listing]) & (fav_ts < SPAN)
    contact &= (contact_ts < ls["sold"][listing]) & (contact_ts < SPAN)
    return [
        np.concatenate([uu, uu[fav], uu[contact]]),
        np.concatenate([listing, listing[fav], listing[contact]]),
        np.concatenate([ts, fav_ts[fav], contact_ts[contact]]),
        np.repeat(np.arange(3), [len(ts), fav.sum(), contact.sum()]),
    ]


# -- helpers -----------------------------------------------------------------------------------


def _users_table(us: dict[str, np.ndarray], cities: Cities) -> pa.Table:
    n = len(us["city"])
    seg_names, make_names = pa.array(SEGMENTS), pa.array(MAKES)
    return pa.table({
        "user_id": pa.array([f"U{i:07d}" for i in range(n)]),
        "city": pa.array(cities.name[us["city"]].tolist()),
        "region": pa.array(cities.region[us["city"]].tolist()),
        "lat": pa.array(cities.lat[us["city"]]),
        "lon": pa.array(cities.lon[us["city"]]),
        "radius_km": pa.array(us["radius"], pa.int64()),
        "budget_eur": pa.array(us["budget"], pa.int64()),
        "preferred_segments": _join_indices(us["segments"], seg_names),
        "preferred_makes": _join_indices(us["makes"], make_names),
    })  # fmt: skip


def _join_indices(idx: np.ndarray, names: pa.Array) -> pa.Array:
    """Per row, the names of the non-negative indices joined by "|" ("" when none)."""
    return _join([names.take(pa.array(col, mask=col < 0)) for col in idx.T])


def _join_flags(flags: np.ndarray, names: list[str]) -> pa.Array:
    """Per row, the names whose flag is set, joined by "|" ("" when none)."""
    return _join([pa.array(np.full(len(flags), n), mask=~flags[:, k]) for k, n in enumerate(names)])


def _join(columns: list[pa.Array]) -> pa.Array:
    # null_handling="skip" drops rows that are all null (pyarrow 26), so nulls become "" and
    # the doubled separators they leave are removed.
    joined = pc.binary_join_element_wise(*columns, "|", null_handling="replace")
    return pc.utf8_trim(pc.replace_substring_regex(joined, r"\|{2,}", "|"), "|")


def _timestamps(seconds: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    seconds = np.asarray(seconds, dtype=np.int64)
    if missing is not None:
        seconds = np.where(missing, 0, seconds)
    ns = (START.astype(np.int64) + seconds) * 1_000_000_000
    return pa.array(ns, pa.int64(), mask=missing).cast(pa.timestamp("ns", tz="UTC"))
