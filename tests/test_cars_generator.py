from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedrec.data.schema import infer_schema
from embedrec.datasets.car_catalog import CATALOG, MAKES, SEGMENTS, find_model
from embedrec.datasets.cars import QASHQAI_ID, SIZES, generate_cars
from embedrec.datasets.geography import haversine_km, load_cities

LISTING_COLUMNS = [
    "listing_id", "title", "make", "model", "segment", "body", "fuel", "transmission",
    "power_kw", "year", "mileage_km", "price", "equipment", "description", "city", "region",
    "lat", "lon", "dealer_id", "listed_at", "sold_at",
]  # fmt: skip
USER_COLUMNS = [
    "user_id", "city", "region", "lat", "lon", "radius_km", "budget_eur",
    "preferred_segments", "preferred_makes",
]  # fmt: skip
END = pd.Timestamp("2026-11-01", tz="UTC")


def read(paths: dict[str, Path]) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(path) for name, path in paths.items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, pd.DataFrame]:
    out = tmp_path_factory.mktemp("tiny")
    paths = generate_cars(out, size="tiny", seed=0, progress=False)
    assert set(paths) == {"listings", "interactions", "users"}
    assert all(p.parent == out and p.name == f"{k}.parquet" for k, p in paths.items())
    assert sorted(f.name for f in out.iterdir()) == sorted(p.name for p in paths.values())
    return read(paths)


def test_same_seed_same_data_other_seed_other_data(tiny, tmp_path):
    again = read(generate_cars(tmp_path / "a", size="tiny", seed=0, progress=False))
    for name, frame in tiny.items():
        pd.testing.assert_frame_equal(frame, again[name])
    other = read(generate_cars(tmp_path / "b", size="tiny", seed=1, progress=False))
    assert not other["interactions"].equals(tiny["interactions"])
    assert not other["listings"].drop(index=0).equals(tiny["listings"].drop(index=0))


def test_unknown_size_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown size 'huge'.*tiny, small, large"):
        generate_cars(tmp_path, size="huge")
    assert set(SIZES) == {"tiny", "small", "large"}


def test_column_contracts(tiny):
    listings, users, events = tiny["listings"], tiny["users"], tiny["interactions"]
    assert list(listings.columns) == LISTING_COLUMNS
    assert list(users.columns) == USER_COLUMNS
    assert list(events.columns) == ["user_id", "listing_id", "timestamp", "event"]
    for col in ("power_kw", "year", "mileage_km", "price"):
        assert pd.api.types.is_integer_dtype(listings[col]), col
    for col in ("radius_km", "budget_eur"):
        assert pd.api.types.is_integer_dtype(users[col]), col
    for frame in (listings, users):
        assert pd.api.types.is_float_dtype(frame["lat"]) and pd.api.types.is_float_dtype(
            frame["lon"]
        )
    for frame, col in ((listings, "listed_at"), (listings, "sold_at"), (events, "timestamp")):
        assert str(frame[col].dtype) == "datetime64[ns, UTC]", col
    assert listings["listing_id"].is_unique and users["user_id"].is_unique
    assert listings["listing_id"].str.fullmatch(r"L\d{7}|qashqai-dresden").all()
    assert users["user_id"].str.fullmatch(r"U\d{7}").all()
    assert set(events["event"]) == {"view", "favorite", "contact"}
    assert events["timestamp"].is_monotonic_increasing
    assert listings["year"].between(2005, 2024).all()
    assert (listings["price"] > 0).all() and (listings["mileage_km"] > 0).all()
    assert set(listings["segment"]) <= set(SEGMENTS) and set(listings["make"]) <= set(MAKES)
    assert set(listings["transmission"]) == {"manual", "automatic"}
    assert listings["equipment"].str.contains("|", regex=False).mean() > 0.5
    assert set(listings["region"]) <= set(load_cities().region)
    assert (listings["sold_at"].isna() | (listings["sold_at"] > listings["listed_at"])).all()
    assert users["radius_km"].between(20, 300).all()
    assert not users["preferred_segments"].eq("").any()
    assert users["preferred_makes"].eq("").any()


def test_the_dresden_qashqai(tiny):
    listings, events = tiny["listings"], tiny["interactions"]
    row = listings.set_index("listing_id").loc[QASHQAI_ID]
    expected = {"make": "Nissan", "model": "Qashqai", "segment": "compact_suv", "body": "suv",
                "year": 2018, "price": 23_221, "city": "Dresden", "region": "Sachsen"}  # fmt: skip
    assert row[list(expected)].to_dict() == expected
    assert row["listed_at"] < END - pd.Timedelta(weeks=8)
    assert pd.isna(row["sold_at"]) or row["sold_at"] >= END - pd.Timedelta(weeks=2)
    assert haversine_km(row["lat"], row["lon"], 51.05, 13.74) < 15
    assert CATALOG[find_model("Nissan", "Qashqai")].segment == "compact_suv"
    on_it = events[events["listing_id"] == QASHQAI_ID]
    assert len(on_it) >= 30 and on_it["user_id"].nunique() >= 10


def test_titles_and_descriptions_describe_the_listing(tiny):
    listings = tiny["listings"]
    title, text = listings["title"].str.lower(), listings["description"]
    make = listings["make"].str.lower()
    short = make.replace({"volkswagen": "vw", "mercedes-benz": "mercedes"})
    names = zip(title, make, short, listings["model"].str.lower(), strict=True)
    assert all((m in t or s in t) and model in t for t, m, s, model in names)
    words = text.str.split().str.len()
    assert words.between(2, 60).all() and text.str.count(r"[.!]").between(1, 8).all()
    says_year = [str(y) in d for y, d in zip(listings["year"], text, strict=True)]
    assert np.mean(says_year) > 0.7
    # noise: varied phrasing and German words, typos, not a template filled in
    assert text.str.contains("Baujahr|Ausstattung|Farbe|EZ ").mean() > 0.3
    assert text.str.contains("wiht|accidnet|Sitzheitzung|gelaufn|maintaned|Autmatik|kn").any()
    assert listings["title"].nunique() > 0.9 * len(listings)
    everything = pd.concat([listings["title"], text])
    assert not everything.str.contains(r"L\d{7}|qashqai-dresden").any()  # no listing ids
    kinds = {spec.name: spec.kind for spec in infer_schema(listings)}
    assert kinds["title"] == kinds["description"] == "text"


def test_the_text_says_which_listings_draw_views(tiny):
    """Condition words follow the latent appeal, which the structured columns do not show:
    listings described as well kept are viewed more often per day on sale."""
    listings, events = tiny["listings"], tiny["interactions"]
    views = events[events["event"] == "view"].groupby("listing_id").size()
    views = views.reindex(listings["listing_id"], fill_value=0).to_numpy()
    start, end = END - pd.Timedelta(weeks=10), END
    on_sale = listings["sold_at"].fillna(end).clip(upper=end) - listings["listed_at"].clip(start)
    rate = views / np.maximum(on_sale.dt.total_seconds().to_numpy() / 86_400, 1)
    text = listings["description"]
    good = text.str.contains("Scheckheftgepflegt|Full service|garage kept|well maintained")
    bad = text.str.contains("scratches|unrund|Hagelschaden|abgelaufen|damage|brakes")
    assert good.sum() >= 50 and bad.sum() >= 50
    assert rate[good.to_numpy()].mean() > 1.25 * rate[bad.to_numpy()].mean()


def test_referential_integrity_and_activity(tiny):
    listings, users, events = tiny["listings"], tiny["users"], tiny["interactions"]
    assert events["listing_id"].isin(listings["listing_id"]).all()
    assert events["user_id"].isin(users["user_id"]).all()
    life = events.merge(listings[["listing_id", "listed_at", "sold_at"]], on="listing_id")
    active = (life["timestamp"] >= life["listed_at"]) & (
        life["sold_at"].isna() | (life["timestamp"] < life["sold_at"])
    )
    assert active.all()
    assert events["timestamp"].between(END - pd.Timedelta(weeks=10), END).all()


def test_sizes_and_funnel(tiny):
    events = tiny["interactions"]
    assert len(tiny["listings"]) == 600 and len(tiny["users"]) == 300
    assert 8_000 <= len(events) <= 16_000
    counts = events["event"].value_counts()
    assert 0.04 <= counts["favorite"] / counts["view"] <= 0.14
    assert 0.01 <= counts["contact"] / counts["view"] <= 0.06


def test_most_views_are_within_the_users_radius(tiny):
    views = tiny["interactions"].query("event == 'view'")
    users = tiny["users"].set_index("user_id").loc[views["user_id"]]
    listings = tiny["listings"].set_index("listing_id").loc[views["listing_id"]]
    dist = haversine_km(users["lat"].values, users["lon"].values, listings["lat"], listings["lon"])
    assert np.mean(dist <= users["radius_km"].values + 5) > 0.75


def test_views_follow_segment_preferences(tiny):
    views = tiny["interactions"].query("event == 'view'")
    liked = tiny["users"].set_index("user_id").loc[views["user_id"], "preferred_segments"]
    seen = tiny["listings"].set_index("listing_id").loc[views["listing_id"], "segment"]
    assert np.mean([s in p.split("|") for s, p in zip(seen, liked, strict=True)]) > 0.6


def test_cold_listings_in_the_final_week(tiny):
    events = tiny["interactions"]
    last_week = END - pd.Timedelta(weeks=1)
    first_seen = events.groupby("listing_id")["timestamp"].min()
    cold = first_seen[first_seen >= last_week]
    assert len(cold) >= 20
    assert events.loc[events["timestamp"] >= last_week, "listing_id"].isin(cold.index).mean() > 0.1


def test_haversine_broadcasts():
    berlin, munich = (52.52, 13.405), (48.137, 11.575)
    assert haversine_km(*berlin, *munich) == pytest.approx(504, abs=5)
    lat = np.array([berlin[0], munich[0]])
    lon = np.array([berlin[1], munich[1]])
    d = haversine_km(lat[:, None], lon[:, None], lat[None], lon[None])
    assert d.shape == (2, 2) and d[0, 0] == 0 and d[0, 1] == pytest.approx(d[1, 0])


def test_cities_and_catalog():
    cities = load_cities()
    assert 200 <= len(cities) <= 1000
    assert cities.region[cities.index("Dresden")] == "Sachsen"
    assert cities.name[0] == "Berlin" and "Kreuzberg" not in set(cities.name)
    assert len(CATALOG) >= 60 and len(MAKES) >= 20
    assert len({(c.make, c.model) for c in CATALOG}) == len(CATALOG)
    for car in CATALOG:
        assert car.segment in SEGMENTS and car.power_kw[0] <= car.power_kw[1]
