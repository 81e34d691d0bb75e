"""Titles and descriptions of the synthetic car listings, as sellers write them.

A title names make, model, engine, trim line and a few equipment highlights ("Nissan Qashqai
1.3 DIG-T N-Connecta Navi Kamera"); a description has one to three sentences on year,
mileage, fuel, gearbox, colour, equipment and condition, in English with German words, and
with the noise of real listings: typos, parts left out, varied phrasing, shouting.

The text says more than the structured columns: the trim line and the condition phrases
follow the listing's latent appeal (what draws views in the simulation), which no other
column shows (whether a model makes use of it: docs/evaluation.md, "Text features on and off").

Everything is built column-wise: pieces are arrays of phrases taken by index and joined with
Arrow's string kernels, never a Python loop per listing.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedrec.datasets.car_catalog import CATALOG, ENGINES, FUELS, MAKES, TRIMS

# per equipment item (in cars.EQUIPMENT order): short, English and German spellings
EQUIPMENT_WORDS = {
    "navigation": ("Navi", "navigation", "Navigationssystem"),
    "heated_seats": ("SHZ", "heated seats", "Sitzheizung"),
    "parking_sensors": ("PDC", "parking sensors", "Einparkhilfe"),
    "rear_camera": ("Kamera", "rear camera", "Rückfahrkamera"),
    "cruise_control": ("GRA", "cruise control", "Tempomat"),
    "adaptive_cruise": ("ACC", "adaptive cruise control", "Abstandstempomat"),
    "leather": ("Leder", "leather seats", "Vollleder"),
    "sunroof": ("Panorama", "panoramic roof", "Schiebedach"),
    "led_headlights": ("LED", "LED headlights", "LED-Scheinwerfer"),
    "keyless": ("Keyless", "keyless entry", "Keyless-Go"),
    "apple_carplay": ("CarPlay", "Apple CarPlay", "Android Auto"),
    "tow_bar": ("AHK", "tow bar", "Anhängerkupplung"),
}
FUEL_WORDS = {
    "en": ("petrol", "diesel", "hybrid", "electric"),
    "de": ("Benzin", "Diesel", "Hybrid", "Elektro"),
}
GEARBOX_WORDS = {"en": ("manual", "automatic"), "de": ("Schaltgetriebe", "Automatik")}
COLOURS = {
    "en": ("black", "white", "silver", "grey", "blue", "red", "green", "brown"),
    "de": ("schwarz", "weiß", "silber", "grau", "blau", "rot", "grün", "braun"),
}
COLOUR_WEIGHTS = np.array([0.25, 0.2, 0.15, 0.2, 0.1, 0.05, 0.02, 0.03])
# condition sentences: what sellers of well-kept (good) and neglected (bad) cars write
GOOD = (
    "Scheckheftgepflegt, unfallfrei, Nichtraucher.",
    "Full service history, accident free, non-smoker car.",
    "1. Hand, garage kept, like new.",
    "TÜV neu, new tyres, top condition!",
    "Always serviced at the dealer, Garantie possible.",
    "Very well maintained, no scratches.",
)
NEUTRAL = (
    "Price negotiable.",
    "Preis VB.",
    "Viewing by appointment.",
    "Financing possible.",
    "Inzahlungnahme möglich.",
)
BAD = (
    "Some scratches and dents, sold as is.",
    "Motor läuft unrund, for Bastler.",
    "Hagelschaden, priced accordingly.",
    "TÜV abgelaufen, export or trader only.",
    "Accident damage repaired.",
    "Needs new brakes.",
)
TITLE_EXTRAS = {"good": ("Scheckheft", "1.Hand", "TOP"), "bad": ("Export", "Bastler", "defekt")}
TYPOS = (
    ("with", "wiht"),
    ("km", "kn"),
    ("Scheckheft", "Scheckheftt"),
    ("accident", "accidnet"),
    ("Navi", "Nav"),
    ("Baujahr", "Bj."),
    ("gelaufen", "gelaufn"),
    ("service", "servcie"),
    ("Sitzheizung", "Sitzheitzung"),
    ("maintained", "maintaned"),
    ("Automatik", "Autmatik"),
)
SHORT_MAKES = (("Volkswagen", "VW"), ("Mercedes-Benz", "Mercedes"))
QASHQAI_TITLE = "Nissan Qashqai 1.3 DIG-T N-Connecta Navi Kamera"
QASHQAI_DESCRIPTION = (
    "Verkaufe unseren Qashqai, Baujahr 2018, 48.500 km gelaufen. Automatik, Farbe grau "
    "metallic, Navi, Sitzheizung, Einparkhilfe, Rückfahrkamera, Tempomat, Apple CarPlay. "
    "Scheckheftgepflegt, unfallfrei, Nichtraucher."
)


def listing_texts(
    rng: np.random.Generator, ls: dict[str, np.ndarray], equipment: list[str]
) -> tuple[pa.Array, pa.Array]:
    """(title, description) string arrays of the listings in ``ls`` (``cars._make_listings``'s
    arrays; ``equipment`` names the columns of ``ls["equipment"]``). Row 0 is the Qashqai's
    fixed text."""
    n = len(ls["model"])
    z = np.log(ls["appeal"]) / 0.5  # the appeal as a standard normal
    # trim line: richer equipment and higher appeal mean a higher trim, with noise
    kit = ls["equipment"].sum(1)
    trim = np.digitize(
        0.4 * (kit - kit.mean()) / (kit.std() + 1e-9) + 0.9 * z + rng.normal(0, 0.6, n), [-0.5, 0.8]
    )
    condition = np.digitize(z + rng.normal(0, 0.7, n), [-1.0, 0.7])  # bad, neutral, good
    pieces = _pieces(rng, ls, equipment)
    title = _title(rng, ls, trim, condition, pieces, equipment)
    description = _description(rng, ls, condition, pieces)
    return _with_first(title, QASHQAI_TITLE), _with_first(description, QASHQAI_DESCRIPTION)


def _take(words: tuple[str, ...] | list[str], idx: np.ndarray) -> pa.Array:
    return pa.array(list(words), pa.string()).take(pa.array(idx))


def _cat(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _choose(idx: np.ndarray, *variants: pa.Array) -> pa.Array:
    return pc.choose(pa.array(idx), *variants)


def _tidy(text: pa.Array) -> pa.Array:
    """Collapse the spaces and separators that left-out parts leave behind."""
    text = pc.replace_substring_regex(text, r"\s+([,.!])", r"\1")
    text = pc.replace_substring_regex(text, r"([,.]){2,}", r"\1")
    text = pc.replace_substring_regex(text, r"\s{2,}", " ")
    return pc.utf8_trim(text, " ,")


def _pieces(rng: np.random.Generator, ls: dict, equipment: list[str]) -> dict[str, pa.Array]:
    n = len(ls["model"])
    make = _take([c.make for c in CATALOG], ls["model"])
    short = make
    for full, abbreviation in SHORT_MAKES:
        short = pc.if_else(
            pa.array(rng.random(n) < 0.5), pc.replace_substring(short, full, abbreviation), short
        )
    gearbox = ls["automatic"].astype(np.int64)
    mileage = ls["mileage"]
    thousands = pc.cast(pa.array(mileage // 1000), pa.string())
    rest = pc.utf8_lpad(pc.cast(pa.array(mileage % 1000), pa.string()), 3, "0")
    plain = pc.cast(pa.array(mileage), pa.string())
    german, english = _cat(thousands, ".", rest), _cat(thousands, ",", rest)
    style = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    km = _choose(np.where(mileage < 1000, 2, style), german, english, plain)
    colour = rng.choice(len(COLOUR_WEIGHTS), n, p=COLOUR_WEIGHTS)
    metallic = _take(["", " metallic"], (rng.random(n) < 0.4).astype(np.int64))
    # equipment: each fitted item mentioned with probability 0.7, in one of its spellings
    flags = ls["equipment"] & (rng.random(ls["equipment"].shape) < 0.7)
    spelling = rng.choice(3, n)
    columns = []
    for k, item in enumerate(equipment):
        words = _take(EQUIPMENT_WORDS[item], spelling)
        columns.append(pc.if_else(pa.array(flags[:, k]), words, pa.scalar(None, pa.string())))
    listed = _join_present(columns, ", ")
    return {
        "make": short,
        "model": _take([c.model for c in CATALOG], ls["model"]),
        "year": pc.cast(pa.array(ls["year"]), pa.string()),
        "km": km,
        "fuel_en": _take(FUEL_WORDS["en"], ls["fuel"]),
        "fuel_de": _take(FUEL_WORDS["de"], ls["fuel"]),
        "gear_en": _take(GEARBOX_WORDS["en"], gearbox),
        "gear_de": _take(GEARBOX_WORDS["de"], gearbox),
        "colour_en": _cat(_take(COLOURS["en"], colour), metallic),
        "colour_de": _cat(_take(COLOURS["de"], colour), metallic),
        "equipment": listed,
        "has_equipment": pc.greater(pc.utf8_length(listed), 0),
    }


def _join_present(columns: list[pa.Array], separator: str) -> pa.Array:
    """Per row, the non-null values joined by ``separator`` ("" when none)."""
    joined = pc.binary_join_element_wise(*columns, "|", null_handling="replace")
    joined = pc.utf8_trim(pc.replace_substring_regex(joined, r"\|{2,}", "|"), "|")
    return pc.replace_substring(joined, "|", separator)


def _title(
    rng: np.random.Generator,
    ls: dict,
    trim: np.ndarray,
    condition: np.ndarray,
    p: dict,
    equipment: list[str],
) -> pa.Array:
    n = len(ls["model"])
    make_of = np.array([MAKES.index(c.make) for c in CATALOG])[ls["model"]]
    fuel, power = ls["fuel"], ls["power"]
    displacement = np.where(
        fuel == FUELS.index("diesel"),
        np.digitize(power, [80, 110, 150, 200, 260]) + 1,
        np.digitize(power, [66, 85, 100, 120, 150, 200, 260]),
    )
    litres = _take(["1.0", "1.2", "1.4", "1.5", "1.6", "2.0", "2.0", "3.0", "4.0"], displacement)
    badge = _take([w for m in MAKES for w in ENGINES[m]], 2 * make_of + np.minimum(fuel, 1))
    combustion = _cat(litres, " ", badge)
    engine = _choose(
        np.minimum(fuel, 3),
        combustion,
        combustion,
        _cat(litres, " Hybrid"),
        _cat(pc.cast(pa.array(power), pa.string()), " kW Elektro"),
    )
    engine = pc.if_else(pa.array(rng.random(n) < 0.25), "", engine)
    trim_words = _take([w for m in MAKES for w in TRIMS[m]], 3 * make_of + trim)
    trim_words = pc.if_else(pa.array(rng.random(n) < 0.15), "", trim_words)
    # up to three highlights, the equipment words in their short spelling
    shown = ls["equipment"] & (rng.random(ls["equipment"].shape) < 0.5)
    shown &= np.cumsum(shown, axis=1) <= 3
    none = pa.scalar(None, pa.string())
    highlights = _join_present(
        [
            pc.if_else(pa.array(shown[:, k]), EQUIPMENT_WORDS[item][0], none)
            for k, item in enumerate(equipment)
        ],
        " ",
    )
    extra_idx = rng.choice(3, n)
    extra = pc.if_else(
        pa.array((condition == 2) & (rng.random(n) < 0.4)),
        _take(TITLE_EXTRAS["good"], extra_idx),
        pc.if_else(
            pa.array((condition == 0) & (rng.random(n) < 0.4)),
            _take(TITLE_EXTRAS["bad"], extra_idx),
            "",
        ),
    )
    title = _tidy(
        _cat(p["make"], " ", p["model"], " ", engine, " ", trim_words, " ", highlights, " ", extra)
    )
    case = rng.choice(3, n, p=[0.92, 0.05, 0.03])
    return _choose(case, title, pc.utf8_lower(title), pc.utf8_upper(title))


INTROS = (
    "{make} {model} from {year}, {km} km.",
    "Verkaufe meinen {model}, Baujahr {year}, {km} km gelaufen.",
    "EZ {year}, {km} km, {fuel_de}, {gear_de}.",
    "Selling our {year} {model} ({fuel_en}, {gear_en}) with {km} km on the clock.",
    "{year} {model}, {km} km, {gear_en} gearbox, {fuel_en}.",
)
KITS = (
    "Extras: {equipment}.",
    "Ausstattung: {equipment}.",
    "Colour {colour_en}, with {equipment}.",
    "Farbe {colour_de}. {equipment}.",
)


def _fill(template: str, p: dict[str, pa.Array]) -> pa.Array:
    """``template`` with each ``{name}`` replaced by the row's ``p[name]``."""
    parts = re.split(r"\{(\w+)\}", template)
    return _cat(*(p[part] if i % 2 else part for i, part in enumerate(parts) if part))


def _description(rng: np.random.Generator, ls: dict, condition: np.ndarray, p: dict) -> pa.Array:
    n = len(ls["model"])
    intro = _choose(rng.choice(len(INTROS), n), *(_fill(t, p) for t in INTROS))
    kit = _choose(rng.choice(len(KITS), n), *(_fill(t, p) for t in KITS))
    kit = pc.if_else(p["has_equipment"], kit, _fill("Farbe {colour_de}.", p))
    first = rng.choice(len(GOOD), n)
    second = (first + 1 + rng.choice(len(GOOD) - 1, n)) % len(GOOD)
    good = _cat(_take(GOOD, first), " ", _take(["", *GOOD], (rng.random(n) < 0.4) * (second + 1)))
    neutral = _take(["", *NEUTRAL], (rng.random(n) < 0.6) * (1 + rng.choice(len(NEUTRAL), n)))
    state = _choose(condition, _take(BAD, rng.choice(len(BAD), n)), neutral, good)
    # parts left out: sellers of appealing cars write more
    z = np.log(ls["appeal"]) / 0.5
    drop_kit = rng.random(n) < np.clip(0.35 - 0.1 * z, 0.05, 0.6)
    drop_state = (condition == 1) & (rng.random(n) < 0.3)
    # never nothing at all: the intro goes only where the equipment sentence stays
    drop_intro = (rng.random(n) < 0.15) & ~drop_kit
    text = _cat(
        pc.if_else(pa.array(drop_intro), "", intro),
        " ",
        pc.if_else(pa.array(drop_kit), "", kit),
        " ",
        pc.if_else(pa.array(drop_state), "", state),
    )
    text = _tidy(text)
    typo = rng.choice(len(TYPOS) + 1, n, p=[0.8] + [0.2 / len(TYPOS)] * len(TYPOS))
    # only the mistyped fifth goes through the replacements
    some = pa.array(typo > 0)
    mistyped, which = text.filter(some), pa.array(typo[typo > 0])
    for k, (right, wrong) in enumerate(TYPOS, start=1):
        replaced = pc.replace_substring(mistyped, right, wrong, max_replacements=1)
        mistyped = pc.if_else(pc.equal(which, k), replaced, mistyped)
    return pc.replace_with_mask(text, some, mistyped)


def _with_first(values: pa.Array, first: str) -> pa.Array:
    return pa.concat_arrays([pa.array([first], pa.string()), values.slice(1)])
