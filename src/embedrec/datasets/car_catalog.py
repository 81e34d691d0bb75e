"""Real makes and models common on the German used-car market, with rough facts.

Prices are approximate list prices of a mid trim (EUR), power ranges cover the usual engines,
popularity is a relative weight for the used-car market (not registration statistics).
"""

from __future__ import annotations

from dataclasses import dataclass

SEGMENTS = (
    "small",
    "compact",
    "midsize",
    "executive",
    "compact_suv",
    "midsize_suv",
    "large_suv",
    "van",
    "sports",
)
BODIES = ("hatchback", "sedan", "estate", "suv", "van", "coupe", "convertible")
FUELS = ("petrol", "diesel", "hybrid", "electric")
# Market share of each fuel among the engines a model offers.
FUEL_WEIGHTS = {"petrol": 0.55, "diesel": 0.3, "hybrid": 0.1, "electric": 0.05}


@dataclass(frozen=True)
class CarModel:
    make: str
    model: str
    segment: str
    body: str
    fuels: tuple[str, ...]
    power_kw: tuple[int, int]
    new_price: int
    popularity: float
    since: int = 2005  # first model year sold in Germany


P, D, H, E = "petrol", "diesel", "hybrid", "electric"
PD, PDH, PH, PHE = (P, D), (P, D, H), (P, H), (P, H, E)

# fmt: off
CATALOG: tuple[CarModel, ...] = (
    CarModel("Volkswagen", "Golf", "compact", "hatchback", PDH, (81, 180), 33_000, 10.0),
    CarModel("Volkswagen", "Polo", "small", "hatchback", PD, (59, 110), 23_000, 6.0),
    CarModel("Volkswagen", "Passat", "midsize", "estate", PDH, (90, 200), 45_000, 6.0),
    CarModel("Volkswagen", "Tiguan", "compact_suv", "suv", PDH, (96, 180), 42_000, 6.0, 2008),
    CarModel("Volkswagen", "T-Roc", "compact_suv", "suv", PD, (81, 140), 33_000, 4.0, 2018),
    CarModel("Volkswagen", "ID.3", "compact", "hatchback", (E,), (107, 150), 39_000, 2.0, 2020),
    CarModel("Volkswagen", "Touran", "van", "van", PD, (85, 140), 38_000, 3.0),
    CarModel("Volkswagen", "Multivan", "van", "van", PDH, (110, 180), 60_000, 2.0),
    CarModel("BMW", "1er", "compact", "hatchback", PD, (85, 170), 36_000, 3.5),
    CarModel("BMW", "3er", "midsize", "sedan", PDH, (110, 250), 50_000, 6.0),
    CarModel("BMW", "5er", "executive", "sedan", PDH, (140, 300), 65_000, 3.5),
    CarModel("BMW", "X1", "compact_suv", "suv", PDH, (100, 170), 45_000, 3.0, 2009),
    CarModel("BMW", "X3", "midsize_suv", "suv", PDH, (135, 250), 60_000, 3.0),
    CarModel("BMW", "X5", "large_suv", "suv", PDH, (180, 340), 85_000, 1.5),
    CarModel("BMW", "Z4", "sports", "convertible", (P,), (145, 250), 55_000, 0.6),
    CarModel("Mercedes-Benz", "A-Klasse", "compact", "hatchback", PDH, (80, 165), 38_000, 4.5),
    CarModel("Mercedes-Benz", "C-Klasse", "midsize", "sedan", PDH, (120, 250), 52_000, 6.0),
    CarModel("Mercedes-Benz", "E-Klasse", "executive", "sedan", PDH, (145, 300), 65_000, 4.0),
    CarModel("Mercedes-Benz", "GLA", "compact_suv", "suv", PDH, (100, 165), 45_000, 2.0, 2014),
    CarModel("Mercedes-Benz", "GLC", "midsize_suv", "suv", PDH, (145, 280), 62_000, 3.0, 2015),
    CarModel("Mercedes-Benz", "V-Klasse", "van", "van", (D,), (120, 200), 65_000, 1.0, 2014),
    CarModel("Audi", "A1", "small", "hatchback", PD, (70, 110), 26_000, 2.0, 2010),
    CarModel("Audi", "A3", "compact", "hatchback", PDH, (85, 180), 36_000, 5.0),
    CarModel("Audi", "A4", "midsize", "estate", PDH, (110, 250), 48_000, 5.5),
    CarModel("Audi", "A6", "executive", "estate", PDH, (150, 300), 62_000, 3.5),
    CarModel("Audi", "Q3", "compact_suv", "suv", PDH, (110, 180), 43_000, 3.0, 2011),
    CarModel("Audi", "Q5", "midsize_suv", "suv", PDH, (140, 270), 58_000, 3.0, 2008),
    CarModel("Audi", "Q7", "large_suv", "suv", PDH, (170, 320), 80_000, 1.0),
    CarModel("Audi", "TT", "sports", "coupe", (P,), (135, 230), 50_000, 0.6),
    CarModel("Opel", "Corsa", "small", "hatchback", (P, D, E), (55, 100), 22_000, 6.0),
    CarModel("Opel", "Astra", "compact", "hatchback", PD, (81, 145), 30_000, 5.5),
    CarModel("Opel", "Insignia", "midsize", "estate", PD, (100, 190), 38_000, 2.5, 2008),
    CarModel("Opel", "Mokka", "compact_suv", "suv", (P, D, E), (74, 115), 28_000, 2.0, 2012),
    CarModel("Opel", "Zafira", "van", "van", PD, (85, 125), 35_000, 2.0),
    CarModel("Skoda", "Fabia", "small", "hatchback", PD, (55, 110), 21_000, 4.0),
    CarModel("Skoda", "Octavia", "compact", "estate", PDH, (85, 180), 32_000, 7.0),
    CarModel("Skoda", "Superb", "midsize", "estate", PDH, (110, 200), 42_000, 3.0),
    CarModel("Skoda", "Karoq", "compact_suv", "suv", PD, (85, 140), 34_000, 2.5, 2017),
    CarModel("Skoda", "Kodiaq", "midsize_suv", "suv", PD, (110, 180), 42_000, 2.5, 2017),
    CarModel("Skoda", "Enyaq", "midsize_suv", "suv", (E,), (132, 220), 46_000, 1.5, 2021),
    CarModel("Ford", "Fiesta", "small", "hatchback", PD, (55, 100), 21_000, 5.0),
    CarModel("Ford", "Focus", "compact", "hatchback", PDH, (74, 150), 30_000, 5.0),
    CarModel("Ford", "Kuga", "compact_suv", "suv", PDH, (110, 165), 38_000, 3.0, 2008),
    CarModel("Ford", "Puma", "compact_suv", "suv", PH, (92, 114), 28_000, 2.0, 2020),
    CarModel("Ford", "S-Max", "van", "van", PDH, (110, 177), 42_000, 1.5, 2006),
    CarModel("Ford", "Mustang", "sports", "coupe", (P,), (213, 330), 55_000, 0.7, 2015),
    CarModel("Toyota", "Yaris", "small", "hatchback", PH, (51, 92), 23_000, 3.5),
    CarModel("Toyota", "Corolla", "compact", "hatchback", PH, (90, 145), 32_000, 3.0, 2019),
    CarModel("Toyota", "C-HR", "compact_suv", "suv", PH, (90, 145), 34_000, 2.0, 2016),
    CarModel("Toyota", "RAV4", "midsize_suv", "suv", PDH, (110, 225), 42_000, 2.0),
    CarModel("Renault", "Clio", "small", "hatchback", PDH, (55, 105), 20_000, 4.0),
    CarModel("Renault", "Megane", "compact", "hatchback", PD, (85, 150), 28_000, 2.5),
    CarModel("Renault", "Captur", "compact_suv", "suv", PDH, (67, 116), 26_000, 2.5, 2013),
    CarModel("Seat", "Ibiza", "small", "hatchback", PD, (59, 110), 20_000, 3.5),
    CarModel("Seat", "Leon", "compact", "hatchback", PDH, (81, 180), 29_000, 4.0),
    CarModel("Seat", "Ateca", "compact_suv", "suv", PD, (85, 140), 33_000, 2.0, 2016),
    CarModel("Hyundai", "i20", "small", "hatchback", PD, (55, 88), 21_000, 2.5),
    CarModel("Hyundai", "i30", "compact", "hatchback", PD, (81, 150), 27_000, 3.0, 2007),
    CarModel("Hyundai", "Kona", "compact_suv", "suv", PHE, (88, 150), 30_000, 2.5, 2017),
    CarModel("Hyundai", "Tucson", "compact_suv", "suv", PDH, (100, 195), 38_000, 3.0),
    CarModel("Kia", "Picanto", "small", "hatchback", (P,), (49, 74), 15_000, 2.5),
    CarModel("Kia", "Ceed", "compact", "hatchback", PD, (74, 150), 26_000, 3.0, 2007),
    CarModel("Kia", "Niro", "compact_suv", "suv", (H, E), (104, 150), 33_000, 2.0, 2016),
    CarModel("Kia", "Sportage", "compact_suv", "suv", PDH, (100, 195), 36_000, 3.5),
    CarModel("Fiat", "500", "small", "hatchback", (P, H, E), (51, 87), 18_000, 4.0, 2007),
    CarModel("Fiat", "Panda", "small", "hatchback", PH, (44, 63), 15_000, 3.0),
    CarModel("Nissan", "Micra", "small", "hatchback", (P,), (52, 85), 18_000, 2.5),
    CarModel("Nissan", "Juke", "compact_suv", "suv", PH, (84, 105), 25_000, 2.0, 2010),
    CarModel("Nissan", "Qashqai", "compact_suv", "suv", PDH, (85, 140), 32_000, 4.0, 2007),
    CarModel("Nissan", "X-Trail", "midsize_suv", "suv", PDH, (110, 160), 42_000, 1.2),
    CarModel("Tesla", "Model 3", "midsize", "sedan", (E,), (208, 366), 45_000, 2.5, 2019),
    CarModel("Tesla", "Model Y", "midsize_suv", "suv", (E,), (220, 378), 48_000, 2.5, 2021),
    CarModel("Porsche", "911", "sports", "coupe", (P,), (283, 478), 130_000, 1.0),
    CarModel("Porsche", "Macan", "midsize_suv", "suv", (P, D, E), (195, 300), 80_000, 0.8, 2014),
    CarModel("Porsche", "Cayenne", "large_suv", "suv", (P, D, H), (250, 400), 100_000, 0.8),
    CarModel("Mazda", "2", "small", "hatchback", PH, (55, 85), 19_000, 1.5),
    CarModel("Mazda", "3", "compact", "hatchback", PD, (90, 137), 28_000, 2.0),
    CarModel("Mazda", "CX-5", "compact_suv", "suv", PD, (110, 143), 36_000, 2.0, 2012),
    CarModel("Mazda", "MX-5", "sports", "convertible", (P,), (96, 135), 32_000, 1.0),
    CarModel("Volvo", "XC40", "compact_suv", "suv", PHE, (120, 200), 42_000, 1.5, 2018),
    CarModel("Volvo", "V60", "midsize", "estate", PDH, (110, 230), 50_000, 1.5, 2010),
    CarModel("Volvo", "XC60", "midsize_suv", "suv", PDH, (145, 250), 57_000, 2.0, 2008),
    CarModel("Volvo", "XC90", "large_suv", "suv", PDH, (173, 300), 80_000, 1.0),
    CarModel("Dacia", "Sandero", "small", "hatchback", (P,), (54, 74), 13_000, 3.0, 2008),
    CarModel("Dacia", "Duster", "compact_suv", "suv", PD, (74, 110), 20_000, 3.0, 2010),
    CarModel("Peugeot", "208", "small", "hatchback", (P, D, E), (55, 100), 22_000, 3.0, 2012),
    CarModel("Peugeot", "308", "compact", "hatchback", PDH, (81, 132), 30_000, 2.5),
    CarModel("Peugeot", "3008", "compact_suv", "suv", PDH, (96, 165), 38_000, 2.5, 2009),
    CarModel("Mini", "Cooper", "small", "hatchback", (P, D, E), (75, 141), 28_000, 3.0),
    CarModel("Citroën", "C3", "small", "hatchback", PD, (60, 81), 19_000, 2.5),
)
# fmt: on

MAKES: tuple[str, ...] = tuple(dict.fromkeys(m.make for m in CATALOG))

# Words of listing titles: each make's petrol and diesel engine badges, and its trim lines
# from base to top (hybrids and EVs carry a fuel word instead of a badge).
# fmt: off
ENGINES: dict[str, tuple[str, str]] = {
    "Volkswagen": ("TSI", "TDI"), "BMW": ("i", "d"), "Mercedes-Benz": ("CGI", "CDI"),
    "Audi": ("TFSI", "TDI"), "Opel": ("Turbo", "CDTI"), "Skoda": ("TSI", "TDI"),
    "Ford": ("EcoBoost", "TDCi"), "Toyota": ("VVT-i", "D-4D"), "Renault": ("TCe", "dCi"),
    "Seat": ("TSI", "TDI"), "Hyundai": ("T-GDI", "CRDi"), "Kia": ("T-GDI", "CRDi"),
    "Fiat": ("FireFly", "MultiJet"), "Nissan": ("DIG-T", "dCi"), "Tesla": ("", ""),
    "Porsche": ("", "Diesel"), "Mazda": ("Skyactiv-G", "Skyactiv-D"), "Volvo": ("T4", "D4"),
    "Dacia": ("TCe", "dCi"), "Peugeot": ("PureTech", "BlueHDi"), "Mini": ("", "D"),
    "Citroën": ("PureTech", "BlueHDi"),
}
TRIMS: dict[str, tuple[str, str, str]] = {
    "Volkswagen": ("Trendline", "Comfortline", "Highline R-Line"),
    "BMW": ("Advantage", "Sport Line", "M Sport"),
    "Mercedes-Benz": ("Style", "Avantgarde", "AMG Line"),
    "Audi": ("Basis", "Advanced", "S line"),
    "Opel": ("Edition", "Elegance", "GS Line"),
    "Skoda": ("Active", "Ambition", "Style L&K"),
    "Ford": ("Trend", "Titanium", "ST-Line X"),
    "Toyota": ("Comfort", "Team D", "Lounge"),
    "Renault": ("Life", "Zen", "Intens"),
    "Seat": ("Reference", "Style", "FR"),
    "Hyundai": ("Pure", "Trend", "Prime"),
    "Kia": ("Edition 7", "Vision", "GT-Line"),
    "Fiat": ("Pop", "Lounge", "Sport"),
    "Nissan": ("Visia", "N-Connecta", "Tekna+"),
    "Tesla": ("Standard Range", "Long Range", "Performance"),
    "Porsche": ("Basis", "S", "GTS"),
    "Mazda": ("Prime-Line", "Exclusive-Line", "Homura"),
    "Volvo": ("Core", "Plus", "Ultimate"),
    "Dacia": ("Essential", "Comfort", "Prestige"),
    "Peugeot": ("Active", "Allure", "GT"),
    "Mini": ("Classic", "Yours", "John Cooper Works"),
    "Citroën": ("Feel", "Shine", "C-Series"),
}
# fmt: on


def find_model(make: str, model: str) -> int:
    """Index of ``make model`` in CATALOG; KeyError if the catalog lacks it."""
    for i, car in enumerate(CATALOG):
        if car.make == make and car.model == model:
            return i
    raise KeyError(f"{make} {model}")
