// The embedrec explorer: one listing (or user) at a time, its results as a table, on a map
// and highlighted in a 2-D projection of the listing embeddings.
//
// Plain JavaScript, no dependencies and no network beyond the service's own JSON endpoints:
//   GET /v1/catalogue                     the catalogue's columns: kinds, filters, values
//   GET /v1/model                         model name and size (header line, projection sample)
//   GET /v1/listings/{id}                 the query listing's fields
//   GET /v1/listings/{id}/similar         its neighbours (k and any filters)
//   GET /v1/users/{id}/recommendations    a user's recommendations (same parameters)
//   GET /v1/random-listing                a random listing id
//   GET /v1/projection                    PCA coordinates of a sample of listings
//   GET /static/cities.json               base map: the largest German cities (GeoNames)
//
// Nothing here knows a marketplace: the filter boxes, the table's columns, the listing's
// label and the projection's colours come from the catalogue's columns (/v1/catalogue), and a
// catalogue without coordinates gets no map.
//
// The page state lives in the URL hash (#listing=ID&k=10&price_max=30000&make=BMW: any filter
// the API takes), so the back button and shared links work. Canvases carry data-* attributes
// describing what they drew (used by the browser test).

const PALETTE = [
  "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#edc948",
  "#76b7b2", "#ff9da7", "#9c755f", "#e15759", "#8cd17d",
];
const OTHER_COLOUR = "#c0c4cc";
const NO_VALUE_COLOUR = "#e2e5ea"; // lighter than "other": the listings without a value
const QUERY_COLOUR = "#d62728";
const RESULT_COLOUR = "#1d4ed8";
const MAX_PROJECTION_SAMPLE = 20000;
const MIN_PROJECTION_SAMPLE = 3; // the fewest listings /v1/projection maps
// Colour-by choices: categorical columns with at most this many values; by default one
// named like a grouping, else the first with no more values than the palette has colours.
const MAX_COLOUR_VALUES = 50;
const GROUPING_NAMES = /segment|category|type|class|kind|group/i;
const PLACE_NAMES = /^(city|town|district|neighbou?rhood|region|area|location|place)$/i;
const TITLE_NAMES = /title|name|headline|heading|subject/i;
const PRICE_NAMES = /(^|_)(price|rent|salary|cost|fee)($|_)/i;
// Units read from the end of a column's name (mileage_km: "Mileage", its values in km).
const UNITS = { km: "km", kw: "kW", m2: "m²", sqm: "m²", pct: "%" };
const PRIMARY_NUMERIC = 1; // filter boxes shown before "more filters"
const PRIMARY_CATEGORICAL = 2;
const TABLE_NUMERIC = 3; // default table columns
const TABLE_CATEGORICAL = 2;
// Germany, with a margin; widened when results lie outside.
const MAP_BOUNDS = { minLat: 47.2, maxLat: 55.1, minLon: 5.8, maxLon: 15.1 };
const MIN_MAP_SPAN = 0.7; // degrees of latitude, about 80 km
const MIN_ZOOM_SPAN = 0.08; // of the projection's range, when zoomed to the results
const CITY_LABELS = 12;
const HIT_RADIUS = 7;
const DEFAULT_K = "10";

const ID_COLUMN = { key: "listing_id", label: "Listing" };
const DISTANCE_COLUMN = {
  key: "distance_km",
  label: "Distance",
  numeric: true,
  format: (v) => `${Math.round(v)} km`,
};
const SCORE_COLUMN = { key: "score", label: "Score", numeric: true, format: (v) => v.toFixed(3) };
const FALLBACK_COLUMNS = 6; // a service without /v1/catalogue: the results' first fields
// The column pairs read as a listing's coordinates, in order of preference: the service's
// own (geo.LAT_LON_COLUMNS), so that a catalogue with either pair gets a map.
const LAT_LON_COLUMNS = [
  ["lat", "lon"],
  ["latitude", "longitude"],
];
// Fields never shown as extra columns or on the query card.
const HIDDEN_FIELDS = new Set(
  ["listing_id", "score", "distance_km", "x", "y"].concat(LAT_LON_COLUMNS.flat()),
);
// Hash parameters that are no filter.
const ROUTE_KEYS = new Set(["listing", "user", "k"]);

const $ = (selector) => document.querySelector(selector);

const state = {
  route: null, // {mode: "listing" | "user", id, k, filters: {parameter: value}, note}
  catalogue: null, // see setCatalogue; null until known (or where the service has no /v1/catalogue)
  colourBy: undefined, // the column chosen to colour the projection (null: none)
  query: null, // the query listing's fields (listing mode)
  results: [],
  hovered: null, // listing id under the pointer (table row, map or projection point)
  cities: [],
  projection: null, // see loadProjection
  projectionError: null,
  projectionNote: null, // why there is no projection, when that is no error
  mapHits: [], // [{id, x, y, record}] in CSS pixels, from the last map drawing
  ticket: 0, // guards against answers arriving out of order
  failed: false, // the last query was answered with an error
};

// ------------------------------------------------------------------ formatting
function thousands(value) {
  return Number(value).toLocaleString("en-GB", { maximumFractionDigits: 0 });
}

function euros(value) {
  return `${thousands(value)} €`;
}

function element(tag, text) {
  const node = document.createElement(tag);
  node.textContent = text;
  return node;
}

function present(value) {
  return value !== null && value !== undefined && value !== "";
}

// {lat, lon} of a record from the first coordinate pair it has both of, else null.
function locationOf(record) {
  if (!record) return null;
  for (const [lat, lon] of LAT_LON_COLUMNS) {
    if (Number.isFinite(record[lat]) && Number.isFinite(record[lon])) {
      return { lat: record[lat], lon: record[lon] };
    }
  }
  return null;
}

function hasLocation(record) {
  return locationOf(record) !== null;
}

function sameId(a, b) {
  return a !== null && b !== null && String(a) === String(b);
}

// A listing in one line: its title-like column (else its id), a couple of its numbers and
// its place, as the table shows them.
function describe(record) {
  const catalogue = state.catalogue;
  if (!catalogue) return String(record.listing_id);
  const parts = [catalogue.label ? record[catalogue.label.key] : null];
  for (const column of catalogue.summary) {
    const value = record[column.key];
    if (present(value)) parts.push(column.format ? column.format(value) : String(value));
  }
  const text = parts.filter(present).join(" · ");
  return catalogue.label && present(record[catalogue.label.key])
    ? text
    : [String(record.listing_id), text].filter(present).join(" · ");
}

// ------------------------------------------------------------------ the catalogue's columns
// A column's name as a label and the unit its name ends in: "mileage_km" -> "Mileage", "km";
// "rooms" -> "Rooms", null.
function labelOf(name) {
  const words = String(name).split(/[_\s]+/).filter(Boolean);
  const unit = words.length > 1 ? UNITS[words.at(-1).toLowerCase()] : undefined;
  if (unit) words.pop();
  const text = words.join(" ") || String(name);
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function unitOf(name) {
  const words = String(name).split(/[_\s]+/).filter(Boolean);
  return (words.length > 1 && UNITS[words.at(-1).toLowerCase()]) || null;
}

// How a number of the column reads: a price in euros (as the explorer always showed one),
// years as written, other numbers with thousands separators and the unit of their name.
function numberFormat(name) {
  if (/(^|_)price($|_)/i.test(name)) return euros;
  if (/year/i.test(name)) return (v) => String(v);
  const unit = unitOf(name);
  return (v) => {
    const digits = Number.isInteger(v) ? 0 : 2;
    const text = Number(v).toLocaleString("en-GB", { maximumFractionDigits: digits });
    return unit ? `${text} ${unit}` : text;
  };
}

function tableColumn(column) {
  if (column.kind === "numeric") {
    const format = numberFormat(column.name);
    return { key: column.name, label: labelOf(column.name), numeric: true, format };
  }
  const format = column.kind === "multi" ? (v) => String(v).replaceAll("|", ", ") : null;
  return { key: column.name, label: labelOf(column.name), format };
}

// As tableColumn, for one line of text: a number with no unit of its own says what it counts
// ("3 rooms", "40 hours").
function summaryColumn(column) {
  const shown = tableColumn(column);
  const plain = !/(^|_)price($|_)|year/i.test(column.name) && !unitOf(column.name);
  if (column.kind !== "numeric" || !plain) return shown;
  return { ...shown, format: (v) => `${shown.format(v)} ${shown.label.toLowerCase()}` };
}

// A few values and not one per listing: a column to colour by, tabulate or offer values of.
function moderate(column) {
  return (
    ["categorical", "boolean"].includes(column.kind) &&
    column.distinct >= 2 &&
    column.distinct <= MAX_COLOUR_VALUES &&
    !/(^|_)id$/i.test(column.name)
  );
}

// What the page derives from GET /v1/catalogue (see the service's CatalogueInfo).
function setCatalogue(info) {
  const location = info.location ?? null;
  const located = new Set(location ?? []);
  const columns = info.columns ?? [];
  const usable = columns.filter((c) => !located.has(c.name));
  const numeric = usable
    .filter((c) => c.kind === "numeric" && c.filters.length && !/(^|_)id$/i.test(c.name))
    .sort((a, b) => PRICE_NAMES.test(b.name) - PRICE_NAMES.test(a.name)); // stable: else as given
  const categorical = usable.filter(moderate);
  const texts = usable.filter((c) => c.kind === "text");
  const label = texts.find((c) => TITLE_NAMES.test(c.name)) ?? null;
  const place = categorical.find((c) => PLACE_NAMES.test(c.name)) ?? null;
  const tabulated = [
    ...numeric.slice(0, TABLE_NUMERIC),
    ...categorical.filter((c) => c !== place).slice(0, TABLE_CATEGORICAL),
    ...(place ? [place] : []),
  ];
  // filter boxes: every filterable column but free text and coordinates, the first few shown
  const filterable = usable.filter(
    (c) => c.filters.length && ["numeric", "categorical", "multi", "boolean"].includes(c.kind),
  );
  const primary = [
    ...numeric.slice(0, PRIMARY_NUMERIC),
    ...categorical.filter((c) => c !== place).slice(0, PRIMARY_CATEGORICAL),
  ];
  const colours = columns.filter(moderate);
  const colourBy =
    colours.find((c) => GROUPING_NAMES.test(c.name) && c.distinct <= PALETTE.length) ??
    colours.find((c) => c.distinct <= PALETTE.length) ??
    colours[0] ??
    null;
  state.catalogue = {
    location,
    columns,
    label: label ? { key: label.name, label: labelOf(label.name) } : null,
    table: tabulated.map(tableColumn),
    summary: [...numeric.slice(0, 2), ...(place ? [place] : [])].map(summaryColumn),
    primary,
    more: filterable.filter((c) => !primary.includes(c)),
    colours: colours.map((c) => c.name),
    colourBy: colourBy?.name ?? null,
  };
  if (state.colourBy === undefined) state.colourBy = state.catalogue.colourBy;
}

function hasMap() {
  return state.catalogue?.location !== null; // unknown catalogue: a map, as ever
}

// ------------------------------------------------------------------ API
class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

async function getJSON(path, params = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (present(value)) url.searchParams.set(key, value);
  }
  let response;
  try {
    response = await fetch(url, { headers: { Accept: "application/json" } });
  } catch (error) {
    throw new ApiError(0, `cannot reach the service (${error.message})`, null);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body?.error ?? `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message, body?.field ?? null);
  }
  if (body === null || typeof body !== "object") {
    // a proxy's or a login page, say: a readable error, not a TypeError on its fields
    const type = response.headers.get("Content-Type") || "no content type";
    const message = `the service's answer to ${url.pathname} is not JSON (${type})`;
    throw new ApiError(response.status, message, null);
  }
  return body;
}

const encode = (id) => encodeURIComponent(String(id));

// ------------------------------------------------------------------ routing
function readRoute() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const mode = params.has("user") ? "user" : "listing";
  const id = params.get(mode);
  if (!present(id)) return null;
  // A k the form cannot hold (a link's k=1.5) would stay in the form and fail every later
  // search: the default instead, said once.
  let k = params.get("k") || $("#k").value;
  let note = null;
  if (!validK(k)) {
    const range = `${$("#k").min} to ${$("#k").max}`;
    if (params.has("k")) note = `k=${k} is no whole number from ${range}; k=${DEFAULT_K} instead.`;
    k = DEFAULT_K;
  }
  // every other parameter is a filter, passed to the service as it is
  const filters = {};
  for (const [key, value] of params) {
    if (!ROUTE_KEYS.has(key) && present(value)) filters[key] = value;
  }
  return { mode, id, k, filters, note };
}

function validK(value) {
  const k = $("#k");
  return /^[0-9]+$/.test(value) && Number(value) >= Number(k.min) && Number(value) <= Number(k.max);
}

function hashFor(mode, id, filters = currentFilters()) {
  const params = new URLSearchParams({ [mode]: String(id) });
  for (const [key, value] of Object.entries(filters)) {
    if (present(value)) params.set(key, value);
  }
  return `#${params}`;
}

function currentFilters() {
  const filters = { k: $("#k").value };
  for (const box of document.querySelectorAll("#search input[data-filter]")) {
    const value = box.value.trim();
    if (value) filters[box.name] = value;
  }
  return filters;
}

function go(mode, id) {
  const hash = hashFor(mode, id);
  if (window.location.hash === hash) {
    show(readRoute()); // same hash: no hashchange event, reload explicitly
  } else {
    window.location.hash = hash;
  }
}

function syncForm(route) {
  document.querySelector(`input[name=mode][value=${route.mode}]`).checked = true;
  $("#query-id").value = route.id;
  $("#k").value = route.k;
  // a filter of the link that no box shows (one the catalogue lacks, near, exclude, ...) gets
  // a box of its own, so that it is seen and can be cleared
  const extra = $("#extra-filters");
  extra.replaceChildren();
  const boxes = new Map(
    [...document.querySelectorAll("#search input[data-filter]")].map((b) => [b.name, b]),
  );
  for (const [name, value] of Object.entries(route.filters)) {
    if (!boxes.has(name)) {
      const box = filterBox(name, name, "text");
      extra.append(box);
      boxes.set(name, box.querySelector("input"));
    }
  }
  for (const [name, box] of boxes) box.value = route.filters[name] ?? "";
  if ([...$("#more-filters").querySelectorAll("input")].some((b) => b.value)) {
    $("#more-filters").open = true;
  }
  updatePlaceholder();
}

// ------------------------------------------------------------------ filter boxes
// <label>name <input name=parameter data-filter></label>
function filterBox(label, name, type, placeholder = "any", list = null) {
  const wrapper = document.createElement("label");
  wrapper.className = "filter";
  wrapper.append(`${label} `, filterInput(name, type, placeholder, list));
  return wrapper;
}

function filterInput(name, type, placeholder, list) {
  const input = document.createElement("input");
  Object.assign(input, { name, type, placeholder, spellcheck: false });
  input.dataset.filter = "";
  if (type === "number") input.step = "any";
  if (list) input.setAttribute("list", list);
  return input;
}

// A numeric column's range (min and max), or a box for a set of values with the values the
// service knows offered as suggestions.
function columnBoxes(column, index) {
  const unit = unitOf(column.name);
  const label = labelOf(column.name).toLowerCase() + (unit ? ` (${unit})` : "");
  if (column.kind === "numeric") {
    const wrapper = document.createElement("span");
    wrapper.className = "filter range";
    const [low, high] = [`${column.name}_min`, `${column.name}_max`];
    wrapper.append(`${label} `);
    if (column.filters.includes(low)) wrapper.append(filterInput(low, "number", "min", null));
    wrapper.append(" – ");
    if (column.filters.includes(high)) wrapper.append(filterInput(high, "number", "max", null));
    wrapper.dataset.column = column.name;
    return [wrapper];
  }
  const list = column.values?.length ? `values-${index}` : null;
  const box = filterBox(label, column.filters[0], "text", "any", list);
  box.dataset.column = column.name;
  if (!list) return [box];
  const datalist = document.createElement("datalist");
  datalist.id = list;
  datalist.append(
    ...column.values.map((value) => Object.assign(document.createElement("option"), { value })),
  );
  return [box, datalist];
}

function buildFilters() {
  const catalogue = state.catalogue;
  if (!catalogue) return;
  let index = 0;
  $("#filters").replaceChildren(...catalogue.primary.flatMap((c) => columnBoxes(c, index++)));
  const more = catalogue.more.flatMap((c) => columnBoxes(c, index++));
  if (catalogue.location) {
    more.push(filterBox("near", "near", "text", "lat,lon"));
    more.push(filterBox("within km", "within_km", "number", "km"));
  }
  $("#more-filters-boxes").replaceChildren(...more);
  $("#more-filters").hidden = !more.length;
}

function updatePlaceholder() {
  const mode = document.querySelector("input[name=mode]:checked").value;
  $("#query-id").placeholder =
    mode === "user" ? "user id, e.g. U0000000" : "listing id, e.g. qashqai-dresden";
}

// ------------------------------------------------------------------ loading a query
async function show(route) {
  if (!route) return;
  const ticket = ++state.ticket;
  syncForm(route);
  if (route.note) history.replaceState(null, "", hashFor(route.mode, route.id)); // the k used
  setStatus(`Loading ${route.mode} ${route.id}…`, "busy");
  document.body.dataset.state = "loading";
  const params = { ...route.filters, k: route.k };
  try {
    let query = null;
    let answer;
    if (route.mode === "listing") {
      const path = `/v1/listings/${encode(route.id)}`;
      [query, answer] = await Promise.all([getJSON(path), getJSON(`${path}/similar`, params)]);
    } else {
      answer = await getJSON(`/v1/users/${encode(route.id)}/recommendations`, params);
    }
    if (ticket !== state.ticket) return;
    const results = answer.results ?? [];
    Object.assign(state, { route, query, results, hovered: null, failed: false });
    const what = route.mode === "listing" ? "similar listings" : "recommendations";
    const note = route.note ? `${route.note} ` : "";
    setStatus(`${note}${state.results.length} ${what} for ${route.mode} ${route.id}.`);
    document.body.dataset.state = "ready";
  } catch (error) {
    if (ticket !== state.ticket) return;
    Object.assign(state, { route, query: null, results: [], hovered: null, failed: true });
    const hint = error.field ? ` (${error.field})` : "";
    setStatus(`${error.message}${hint}`, "error");
    document.body.dataset.state = "error";
  }
  render();
}

async function randomListing() {
  try {
    const { listing_id: id } = await getJSON("/v1/random-listing");
    go("listing", id);
  } catch (error) {
    // Fall back on the projection sample when the service has no random endpoint.
    const points = state.projection?.points;
    if (points?.length) {
      go("listing", points[Math.floor(Math.random() * points.length)].listing_id);
    } else {
      setStatus(`No random listing: ${error.message}`, "error");
    }
  }
}

function setStatus(message, kind = "") {
  const status = $("#status");
  status.textContent = message;
  status.className = kind;
}

// ------------------------------------------------------------------ rendering
function render() {
  renderQueryCard();
  renderTable();
  drawMap();
  drawProjection();
}

function renderQueryCard() {
  const card = $("#query-card");
  card.replaceChildren();
  const route = state.route;
  // a query that failed has no card: the status says why, and a card (the last answer's, or
  // "Recommendations for user X") would pass for its answer
  if (!route || state.failed) return;
  const title = document.createElement("h2");
  if (route.mode === "user") {
    title.textContent = `Recommendations for user ${route.id}`;
    card.append(title);
    return;
  }
  if (!state.query) return;
  title.append(marker("query"), ` ${describe(state.query)}`);
  const id = document.createElement("code");
  id.textContent = String(state.query.listing_id);
  const fields = document.createElement("dl");
  for (const [key, value] of Object.entries(state.query)) {
    if (HIDDEN_FIELDS.has(key) || !present(value)) continue;
    const dt = document.createElement("dt");
    dt.textContent = key;
    const dd = document.createElement("dd");
    dd.textContent = typeof value === "string" ? value.replaceAll("|", ", ") : String(value);
    fields.append(dt, dd);
  }
  card.append(title, id, fields);
}

function marker(kind) {
  const dot = document.createElement("span");
  dot.className = `marker ${kind}`;
  return dot;
}

// The catalogue's columns chosen for the table (see setCatalogue), those that at least one
// result has a value for; without a catalogue description, the results' first fields.
function tableColumns(results) {
  const catalogue = state.catalogue;
  let own;
  if (catalogue) {
    own = [...(catalogue.label ? [catalogue.label] : []), ...catalogue.table];
  } else {
    const keys = Object.keys(results[0] ?? {}).filter(
      (key) => !HIDDEN_FIELDS.has(key) && typeof results[0][key] !== "object",
    );
    own = keys.slice(0, FALLBACK_COLUMNS).map((key) => ({
      key,
      label: labelOf(key),
      numeric: typeof results[0][key] === "number",
    }));
  }
  const columns = [ID_COLUMN, ...own, DISTANCE_COLUMN, SCORE_COLUMN];
  return columns.filter((c) => results.some((r) => present(cellValue(c, r))));
}

function cellValue(column, record) {
  return column.value ? column.value(record) : record[column.key];
}

function renderTable() {
  const table = $("#results");
  const head = table.tHead;
  const body = table.tBodies[0];
  head.replaceChildren();
  body.replaceChildren();
  table.dataset.query = state.route ? String(state.route.id) : "";
  if (!state.results.length) return;
  const columns = tableColumns(state.results);
  const headRow = head.insertRow();
  for (const column of [{ label: "#", numeric: true }, ...columns]) {
    const th = document.createElement("th");
    th.textContent = column.label;
    if (column.numeric) th.className = "numeric";
    headRow.append(th);
  }
  state.results.forEach((record, i) => {
    const row = body.insertRow();
    row.dataset.listingId = String(record.listing_id);
    row.insertCell().append(`${i + 1}`);
    row.cells[0].className = "numeric rank";
    for (const column of columns) {
      const cell = row.insertCell();
      const value = cellValue(column, record);
      if (column.numeric) cell.className = "numeric";
      if (column.key === "listing_id") {
        const link = document.createElement("a");
        link.href = hashFor("listing", record.listing_id);
        link.textContent = String(record.listing_id);
        cell.append(link);
      } else if (present(value)) {
        cell.textContent = column.format ? column.format(value) : String(value);
        if (column === state.catalogue?.label) {
          cell.className = "label";
          cell.title = cell.textContent; // shortened by the style sheet
        }
      }
    }
  });
}

function setHovered(id) {
  if (sameId(id, state.hovered) || (id === null && state.hovered === null)) return;
  state.hovered = id;
  for (const row of $("#results").tBodies[0].rows) {
    row.classList.toggle("hovered", sameId(row.dataset.listingId, id));
  }
  drawMap();
  drawProjection();
}

// ------------------------------------------------------------------ canvases
function prepareCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height };
}

function circle(ctx, x, y, radius, fill, stroke = "#fff", lineWidth = 1.5) {
  ctx.beginPath();
  ctx.arc(x, y, radius, 0, 2 * Math.PI);
  ctx.fillStyle = fill;
  ctx.fill();
  if (stroke) {
    ctx.lineWidth = lineWidth;
    ctx.strokeStyle = stroke;
    ctx.stroke();
  }
}

function numbered(ctx, x, y, rank, hovered) {
  circle(ctx, x, y, hovered ? 9 : 7, RESULT_COLOUR, hovered ? "#111" : "#fff", hovered ? 2 : 1.5);
  ctx.fillStyle = "#fff";
  ctx.font = "bold 9px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.fillText(String(rank), x, y + 0.5);
}

function queryMarker(ctx, x, y, hovered) {
  circle(ctx, x, y, hovered ? 10 : 8, QUERY_COLOUR, hovered ? "#111" : "#fff", 2);
}

function message(ctx, width, height, text) {
  ctx.fillStyle = "#6b7280";
  ctx.font = "13px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.fillText(text, width / 2, height / 2);
}

// ------------------------------------------------------------------ map
// Equirectangular: x scaled by cos(mid latitude) so that distances look right. The view fits
// the query and its results (at least MIN_MAP_SPAN degrees of latitude); an inset shows where
// that view lies in Germany.
function mapView(bounds, width, height, pad) {
  const midLat = (bounds.minLat + bounds.maxLat) / 2;
  const midLon = (bounds.minLon + bounds.maxLon) / 2;
  const kx = Math.cos((midLat * Math.PI) / 180);
  const scale = Math.min(
    (width - 2 * pad) / ((bounds.maxLon - bounds.minLon) * kx || 1e-9),
    (height - 2 * pad) / (bounds.maxLat - bounds.minLat || 1e-9),
  );
  const toScreen = (lat, lon) => [
    width / 2 + (lon - midLon) * kx * scale,
    height / 2 - (lat - midLat) * scale,
  ];
  return { scale, toScreen };
}

function boundsOf(points, minSpan) {
  const bounds = { minLat: Infinity, maxLat: -Infinity, minLon: Infinity, maxLon: -Infinity };
  for (const p of points) {
    bounds.minLat = Math.min(bounds.minLat, p.lat);
    bounds.maxLat = Math.max(bounds.maxLat, p.lat);
    bounds.minLon = Math.min(bounds.minLon, p.lon);
    bounds.maxLon = Math.max(bounds.maxLon, p.lon);
  }
  const widen = (lo, hi, span) => {
    const grow = Math.max(0, span - (bounds[hi] - bounds[lo])) / 2;
    bounds[lo] -= grow;
    bounds[hi] += grow;
  };
  const kx = Math.cos((((bounds.minLat + bounds.maxLat) / 2) * Math.PI) / 180);
  widen("minLat", "maxLat", minSpan);
  widen("minLon", "maxLon", minSpan / kx);
  return bounds;
}

function drawMap() {
  const canvas = $("#map");
  if (!hasMap()) {
    // a catalogue without coordinates: no map, not an empty one
    canvas.dataset.markers = "0";
    return;
  }
  const { ctx, width, height } = prepareCanvas(canvas);
  const query = state.route?.mode === "listing" && hasLocation(state.query) ? state.query : null;
  const located = state.results.filter(hasLocation);
  const shown = (query ? [query, ...located] : located).map(locationOf);
  const bounds = shown.length ? boundsOf(shown, MIN_MAP_SPAN) : MAP_BOUNDS;
  const { scale, toScreen } = mapView(bounds, width, height, 28);

  // Markers in drawing order: results by rank, worst first (best on top), then the query.
  const markers = [];
  for (let i = state.results.length - 1; i >= 0; i--) {
    const record = state.results[i];
    if (hasLocation(record)) markers.push({ id: record.listing_id, rank: i + 1, record });
  }
  if (query) markers.push({ id: query.listing_id, rank: null, record: query });
  for (const m of markers) {
    const { lat, lon } = locationOf(m.record);
    [m.x, m.y] = toScreen(lat, lon);
  }
  const inset = shown.length ? insetBox(width, height, markers) : null;

  // Base map: city dots by population, labels for the largest where there is room.
  ctx.fillStyle = "#f5f7fa";
  ctx.fillRect(0, 0, width, height);
  const dotScale = Math.min(3, Math.max(1, scale / 60));
  const visible = [];
  for (const city of state.cities) {
    const [x, y] = toScreen(city.lat, city.lon);
    if (x < -10 || y < -10 || x > width + 10 || y > height + 10) continue;
    circle(ctx, x, y, 1 + Math.sqrt(city.population / 1e6) * 2 * dotScale, "#aab2bf", null);
    visible.push({ city, x, y });
  }
  const occupied = markers.map((m) => ({ x0: m.x - 8, y0: m.y - 8, x1: m.x + 8, y1: m.y + 8 }));
  if (inset) {
    const { left, top, w, h } = inset;
    occupied.push({ x0: left, y0: top, x1: left + w, y1: top + h });
  }
  cityLabels(ctx, visible, occupied, width, height);
  scaleBar(ctx, height, scale);
  // under the markers: where every corner holds one, the overview covered it (the query too)
  if (inset) overview(ctx, inset, bounds);

  if (query) {
    const { lat, lon } = locationOf(query);
    const [qx, qy] = toScreen(lat, lon);
    ctx.strokeStyle = "rgba(29, 78, 216, 0.35)";
    ctx.lineWidth = 1;
    for (const m of markers) {
      ctx.beginPath();
      ctx.moveTo(qx, qy);
      ctx.lineTo(m.x, m.y);
      ctx.stroke();
    }
  }
  for (const m of markers) {
    const hovered = sameId(m.id, state.hovered);
    if (m.rank === null) queryMarker(ctx, m.x, m.y, hovered);
    else numbered(ctx, m.x, m.y, m.rank, hovered);
  }
  if (!inset) {
    message(ctx, width, height, state.route ? "nothing to show" : "search a listing or a user");
  }

  state.mapHits = markers.reverse(); // topmost first
  canvas.dataset.cities = String(visible.length);
  canvas.dataset.markers = String(markers.length);
  // where each marker was drawn ([id, x, y] in CSS pixels, topmost first), for the tests
  canvas.dataset.positions = JSON.stringify(
    markers.map((m) => [String(m.id), Math.round(m.x), Math.round(m.y)]),
  );
  const missing = state.results.length - located.length;
  const what = query ? "the query (red) and its results (blue, by rank)" : "the results by rank";
  const unlocated = missing ? ` ${missing} results have no location.` : "";
  $("#map-caption").textContent = `Map: ${what}.${unlocated}`;
}

function overlaps(a, b) {
  return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;
}

// City names right of their dot, largest cities first, none over a marker or another name.
function cityLabels(ctx, visible, occupied, width, height) {
  ctx.fillStyle = "#6b7280";
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  const taken = [...occupied];
  let labelled = 0;
  for (const { city, x, y } of visible) {
    if (labelled >= CITY_LABELS) break;
    const box = { x0: x + 4, y0: y - 13, x1: x + 6 + ctx.measureText(city.name).width, y1: y };
    const inside = box.x0 >= 0 && box.y0 >= 0 && box.x1 <= width && box.y1 <= height;
    if (!inside || taken.some((b) => overlaps(box, b))) continue;
    taken.push(box);
    labelled++;
    ctx.fillText(city.name, x + 5, y - 6);
  }
}

// Where the overview goes: the corner with the fewest markers near it, the query's above all
// (the markers are drawn over the overview, but a marker on it is hard to see).
function insetBox(width, height, markers) {
  const [w, h] = [84, 104];
  const corners = [
    [width - w - 8, 8],
    [8, 8],
    [width - w - 8, height - h - 8],
  ];
  const covered = ([left, top]) => {
    const box = { x0: left - 10, y0: top - 10, x1: left + w + 10, y1: top + h + 10 };
    const near = markers.filter((m) => overlaps(box, { x0: m.x, y0: m.y, x1: m.x, y1: m.y }));
    return near.reduce((sum, m) => sum + (m.rank === null ? markers.length : 1), 0);
  };
  const [left, top] = corners.reduce((best, c) => (covered(c) < covered(best) ? c : best));
  return { left, top, w, h };
}

// A small map of Germany with the main view's extent outlined in red.
function overview(ctx, { left, top, w, h }, bounds) {
  ctx.save();
  ctx.translate(left, top);
  ctx.fillStyle = "rgba(255, 255, 255, 0.9)";
  ctx.strokeStyle = "#cbd5e1";
  ctx.lineWidth = 1;
  ctx.fillRect(0, 0, w, h);
  ctx.strokeRect(0.5, 0.5, w - 1, h - 1);
  const extent = {
    minLat: Math.min(MAP_BOUNDS.minLat, bounds.minLat),
    maxLat: Math.max(MAP_BOUNDS.maxLat, bounds.maxLat),
    minLon: Math.min(MAP_BOUNDS.minLon, bounds.minLon),
    maxLon: Math.max(MAP_BOUNDS.maxLon, bounds.maxLon),
  };
  const { toScreen } = mapView(extent, w, h, 5);
  ctx.fillStyle = "#aab2bf";
  for (const city of state.cities.slice(0, 80)) {
    const [x, y] = toScreen(city.lat, city.lon);
    ctx.fillRect(x - 0.75, y - 0.75, 1.5, 1.5);
  }
  const [x0, y0] = toScreen(bounds.maxLat, bounds.minLon);
  const [x1, y1] = toScreen(bounds.minLat, bounds.maxLon);
  ctx.strokeStyle = QUERY_COLOUR;
  ctx.lineWidth = 1.5;
  ctx.strokeRect(x0, y0, Math.max(3, x1 - x0), Math.max(3, y1 - y0));
  ctx.restore();
}

function scaleBar(ctx, height, pixelsPerDegree) {
  const pixelsPerKm = pixelsPerDegree / 111.2;
  const km = [500, 200, 100, 50, 20, 10, 5, 2, 1].find((d) => d * pixelsPerKm <= 120) ?? 1;
  const length = km * pixelsPerKm;
  const x = 14;
  const y = height - 14;
  ctx.strokeStyle = "#6b7280";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(x, y - 4);
  ctx.lineTo(x, y);
  ctx.lineTo(x + length, y);
  ctx.lineTo(x + length, y - 4);
  ctx.stroke();
  ctx.fillStyle = "#6b7280";
  ctx.font = "10px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "bottom";
  ctx.fillText(`${km} km`, x + length / 2, y - 3);
}

// ------------------------------------------------------------------ projection
async function loadProjection(listings) {
  if (listings !== null && listings < MIN_PROJECTION_SAMPLE) {
    // the service would refuse the sample: nothing to ask
    state.projectionNote = `${thousands(listings)} listings: too few for a map`;
    drawProjection();
    return;
  }
  const sample = Math.min(listings || 5000, MAX_PROJECTION_SAMPLE);
  try {
    const answer = await getJSON("/v1/projection", { method: "pca", sample });
    const points = answer.points ?? [];
    state.projection = {
      method: answer.method ?? "pca",
      points,
      index: new Map(points.map((p, i) => [String(p.listing_id), i])),
      total: listings,
      extent: extent(points),
      screen: new Float32Array(points.length * 2),
    };
    colourProjection();
    fillColourChoices();
  } catch (error) {
    state.projectionError = error.message;
  }
  drawProjection();
}

function extent(points) {
  const box = { minX: Infinity, maxX: -Infinity, minY: Infinity, maxY: -Infinity };
  for (const p of points) {
    box.minX = Math.min(box.minX, p.x);
    box.maxX = Math.max(box.maxX, p.x);
    box.minY = Math.min(box.minY, p.y);
    box.maxY = Math.max(box.maxY, p.y);
  }
  return box;
}

// The projection's points grouped by the chosen column's value: the most frequent values get
// a colour of their own, the rest share grey, and the listings without a value are a lighter
// grey group of their own ("no value"), counted in the legend: not passed off as "other".
function colourProjection() {
  const projection = state.projection;
  if (!projection) return;
  const { points } = projection;
  const colourBy = points.some((p) => present(p[state.colourBy])) ? state.colourBy : null;
  const counts = new Map();
  for (const p of points) {
    const value = colourBy ? p[colourBy] : null;
    if (present(value)) counts.set(value, (counts.get(value) ?? 0) + 1);
  }
  const categories = [...counts.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, PALETTE.length)
    .map(([value]) => value);
  const colourOf = new Map(categories.map((value, i) => [value, i]));
  const other = categories.length;
  const groups = Array.from({ length: other + 2 }, () => []);
  points.forEach((p, i) => {
    const value = colourBy ? p[colourBy] : null;
    const group = colourBy && !present(value) ? other + 1 : (colourOf.get(value) ?? other);
    groups[group].push(i);
  });
  // no column: every listing in one colour, the palette's first
  const colours = colourBy
    ? [...PALETTE.slice(0, other), OTHER_COLOUR, NO_VALUE_COLOUR]
    : [PALETTE[0], NO_VALUE_COLOUR];
  Object.assign(projection, { colourBy, categories, groups, colours });
}

function fillColourChoices() {
  const select = $("#colour-by");
  const choices = state.catalogue?.colours ?? [];
  const option = (value, text) => Object.assign(document.createElement("option"), { value, text });
  select.replaceChildren(option("", "none"), ...choices.map((name) => option(name, labelOf(name))));
  select.value = state.colourBy ?? "";
  select.closest("label").hidden = !choices.length;
}

function drawProjection() {
  const canvas = $("#projection");
  const { ctx, width, height } = prepareCanvas(canvas);
  const caption = $("#projection-caption");
  const projection = state.projection;
  canvas.dataset.points = "0";
  canvas.dataset.highlighted = "0";
  if (!projection || !projection.points.length) {
    const text = state.projectionNote
      ? state.projectionNote
      : state.projectionError
        ? `projection unavailable: ${state.projectionError}`
        : projection
          ? "no points to project"
          : "loading the projection…";
    message(ctx, width, height, text);
    caption.textContent = state.projectionNote
      ? `Projection of the listing embeddings: the catalogue has ${state.projectionNote}.`
      : "Projection of the listing embeddings.";
    return;
  }
  const { points, screen } = projection;
  const queryId = state.route?.mode === "listing" ? state.route.id : null;
  const wanted = state.results.map((r) => r.listing_id);
  if (queryId !== null) wanted.push(state.query?.listing_id ?? queryId);
  const inSample = wanted
    .map((id) => projection.index.get(String(id)))
    .filter((i) => i !== undefined);
  const zoom = $("#projection-zoom").checked && inSample.length > 0;
  const box = extent(zoom ? inSample.map((i) => points[i]) : points);
  if (zoom) {
    // Some context around the results: at least MIN_ZOOM_SPAN of the full range, plus a margin.
    const full = projection.extent;
    const grow = (lo, hi, range) => {
      const span = Math.max(box[hi] - box[lo], MIN_ZOOM_SPAN * range) * 1.3;
      const mid = (box[lo] + box[hi]) / 2;
      [box[lo], box[hi]] = [mid - span / 2, mid + span / 2];
    };
    grow("minX", "maxX", full.maxX - full.minX);
    grow("minY", "maxY", full.maxY - full.minY);
  }
  const pad = 14;
  const sx = (width - 2 * pad) / (box.maxX - box.minX || 1);
  const sy = (height - 2 * pad) / (box.maxY - box.minY || 1);
  points.forEach((p, i) => {
    screen[2 * i] = pad + (p.x - box.minX) * sx;
    screen[2 * i + 1] = height - pad - (p.y - box.minY) * sy;
  });

  // Every sampled listing, faint and coloured by category.
  ctx.fillStyle = "#fbfcfd";
  ctx.fillRect(0, 0, width, height);
  ctx.globalAlpha = state.results.length ? 0.45 : 0.7;
  // the greys underneath, so that they bury no listing with a value
  const order = projection.groups.map((_, g) => g).reverse();
  for (const g of order) {
    ctx.fillStyle = projection.colours[g];
    for (const i of projection.groups[g]) {
      ctx.fillRect(screen[2 * i] - 1.2, screen[2 * i + 1] - 1.2, 2.4, 2.4);
    }
  }
  ctx.globalAlpha = 1;
  legend(ctx, projection);

  // The query and its results, where they are in the sample.
  const at = (id) => {
    const i = projection.index.get(String(id));
    return i === undefined ? null : [screen[2 * i], screen[2 * i + 1]];
  };
  const queryAt = queryId === null ? null : at(state.query?.listing_id ?? queryId);
  const found = state.results.map((r) => at(r.listing_id));
  if (queryAt) {
    ctx.strokeStyle = "rgba(17, 24, 39, 0.35)";
    ctx.lineWidth = 1;
    for (const xy of found.filter(Boolean)) {
      ctx.beginPath();
      ctx.moveTo(...queryAt);
      ctx.lineTo(...xy);
      ctx.stroke();
    }
  }
  for (let i = found.length - 1; i >= 0; i--) {
    const hovered = sameId(state.results[i].listing_id, state.hovered);
    if (found[i]) numbered(ctx, ...found[i], i + 1, hovered);
  }
  if (queryAt) queryMarker(ctx, ...queryAt, sameId(queryId, state.hovered));

  canvas.dataset.points = String(points.length);
  canvas.dataset.highlighted = String(inSample.length);
  const of = projection.total > points.length ? ` of ${thousands(projection.total)}` : "";
  let text = `${projection.method.toUpperCase()} of ${thousands(points.length)}${of} listings`;
  if (projection.colourBy) text += `, coloured by ${projection.colourBy}`;
  if (state.results.length) {
    const what = queryId === null ? "results" : "query and results";
    text += `; ${inSample.length} of ${wanted.length} (${what}) are in the sample.`;
  }
  caption.textContent = text;
}

function legend(ctx, projection) {
  const canvas = ctx.canvas;
  canvas.dataset.legend = "[]";
  if (!projection.colourBy) return;
  const { categories, groups } = projection;
  const entries = categories.map((label, i) => [String(label), projection.colours[i]]);
  const [other, none] = [groups.at(-2).length, groups.at(-1).length];
  if (other) entries.push([`other (${thousands(other)})`, OTHER_COLOUR]);
  if (none) entries.push([`no value (${thousands(none)})`, NO_VALUE_COLOUR]);
  canvas.dataset.legend = JSON.stringify(entries);
  const labels = entries.map(([label]) => label);
  ctx.font = "10px system-ui, sans-serif";
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  const lineHeight = 13;
  const boxWidth = Math.max(...labels.map((l) => ctx.measureText(String(l)).width)) + 22;
  ctx.fillStyle = "rgba(255, 255, 255, 0.85)";
  ctx.fillRect(6, 6, boxWidth, labels.length * lineHeight + 6);
  entries.forEach(([label, colour], i) => {
    const y = 12 + i * lineHeight;
    ctx.fillStyle = colour;
    ctx.fillRect(11, y - 4, 8, 8);
    ctx.fillStyle = "#374151";
    ctx.fillText(String(label), 24, y);
  });
}

// ------------------------------------------------------------------ pointer on canvases
function mapHit(event) {
  const { x, y } = pointer(event);
  return state.mapHits.find((h) => Math.hypot(h.x - x, h.y - y) <= HIT_RADIUS + 2) ?? null;
}

function projectionHit(event) {
  const projection = state.projection;
  if (!projection) return null;
  const { x, y } = pointer(event);
  // Results first: they are drawn on top of the sample.
  const { screen, points } = projection;
  const queryId = state.route?.mode === "listing" ? state.route.id : null;
  for (const id of [queryId, ...state.results.map((r) => r.listing_id)]) {
    const i = id === null ? undefined : projection.index.get(String(id));
    if (i === undefined) continue;
    if (Math.hypot(screen[2 * i] - x, screen[2 * i + 1] - y) <= HIT_RADIUS + 2) {
      return { id: points[i].listing_id, record: points[i] };
    }
  }
  let best = null;
  let bestDistance = HIT_RADIUS;
  for (let i = 0; i < points.length; i++) {
    const distance = Math.hypot(screen[2 * i] - x, screen[2 * i + 1] - y);
    if (distance < bestDistance) {
      best = i;
      bestDistance = distance;
    }
  }
  return best === null ? null : { id: points[best].listing_id, record: points[best] };
}

function pointer(event) {
  const rect = event.currentTarget.getBoundingClientRect();
  return { x: event.clientX - rect.left, y: event.clientY - rect.top };
}

function connectCanvas(canvas, hitTest) {
  canvas.addEventListener("mousemove", (event) => {
    const hit = hitTest(event);
    canvas.style.cursor = hit ? "pointer" : "default";
    showTooltip(hit, event);
    setHovered(hit ? hit.id : null);
  });
  canvas.addEventListener("mouseleave", () => {
    showTooltip(null);
    setHovered(null);
  });
  canvas.addEventListener("click", (event) => {
    const hit = hitTest(event);
    if (hit) {
      showTooltip(null);
      go("listing", hit.id);
    }
  });
}

function showTooltip(hit, event) {
  const tooltip = $("#tooltip");
  if (!hit) {
    tooltip.hidden = true;
    return;
  }
  const record = state.results.find((r) => sameId(r.listing_id, hit.id)) ?? hit.record;
  const rank = state.results.findIndex((r) => sameId(r.listing_id, hit.id));
  const head = element("strong", `${rank >= 0 ? `#${rank + 1} ` : ""}${hit.id}`);
  const lines = [describe(record)];
  if (present(record.score)) lines.push(`score ${record.score.toFixed(3)}`);
  if (present(record.distance_km)) lines.push(`${Math.round(record.distance_km)} km away`);
  tooltip.replaceChildren(head, ...lines.map((text) => element("div", text)));
  tooltip.hidden = false;
  tooltip.style.left = `${event.pageX + 12}px`;
  tooltip.style.top = `${event.pageY + 12}px`;
}

// ------------------------------------------------------------------ start-up
async function loadCities() {
  try {
    const answer = await getJSON("/static/cities.json");
    state.cities = answer.cities ?? [];
  } catch {
    state.cities = []; // the map still shows the results, without a base map
  }
  drawMap();
}

// The catalogue's columns: the filter boxes, the table, the colours and whether there is a map.
async function loadCatalogue() {
  try {
    setCatalogue(await getJSON("/v1/catalogue"));
  } catch {
    state.catalogue = null; // an older service: no filter boxes but the link's, a map
  }
  buildFilters();
  const map = hasMap();
  $("#map").closest("figure").hidden = !map;
  $("#views").classList.toggle("no-map", !map);
  $("#city-credit").hidden = !map;
  if (map) loadCities();
}

async function loadModelInfo() {
  try {
    const info = await getJSON("/v1/model");
    const trained = info.trained_at ? ` · trained ${String(info.trained_at).slice(0, 10)}` : "";
    const size = `${thousands(info.listings)} listings`;
    $("#model-info").textContent = `model ${info.model} · ${size}${trained}`;
    return info.listings;
  } catch {
    $("#model-info").textContent = "";
    return null;
  }
}

function connectPage() {
  $("#search").addEventListener("submit", (event) => {
    event.preventDefault();
    const mode = document.querySelector("input[name=mode]:checked").value;
    const id = $("#query-id").value.trim();
    if (id) go(mode, id);
  });
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", updatePlaceholder);
  }
  $("#random").addEventListener("click", randomListing);
  const body = $("#results").tBodies[0];
  body.addEventListener("click", (event) => {
    const row = event.target.closest("tr");
    if (!row || event.target.closest("a")) return; // links navigate by themselves
    go("listing", row.dataset.listingId);
  });
  body.addEventListener("mouseover", (event) => {
    const row = event.target.closest("tr");
    if (row) setHovered(row.dataset.listingId);
  });
  body.addEventListener("mouseleave", () => setHovered(null));
  connectCanvas($("#map"), mapHit);
  connectCanvas($("#projection"), projectionHit);
  $("#projection-zoom").addEventListener("change", drawProjection);
  $("#colour-by").addEventListener("change", (event) => {
    state.colourBy = event.target.value || null;
    colourProjection();
    drawProjection();
  });
  window.addEventListener("hashchange", () => show(readRoute()));
  new ResizeObserver(() => {
    drawMap();
    drawProjection();
  }).observe($("#views"));
}

async function main() {
  connectPage();
  render();
  await loadCatalogue(); // the filter boxes, before the link's filters fill them
  const route = readRoute();
  if (route) show(route);
  else setStatus("Search a listing id, pick a random listing, or switch to a user id.");
  const listings = await loadModelInfo();
  await loadProjection(listings);
}

main();
