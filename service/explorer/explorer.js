// The latent explorer: one page over ganserve's HTTP/JSON API, plain JavaScript, no build step.
//
// The page keeps one current point (a latent, plus how to generate from it) and three views that
// follow it: the image, the layer heat maps and the class map of the plane through it. Each view
// asks through a Live channel: one call in flight, only the newest wish waiting, every wish in
// between dropped, so dragging a slider never queues stale requests. Every failure is shown in
// the error box under the header, by the view it belongs to, until that view succeeds again.

const $ = (id) => document.getElementById(id);
// google.rpc.Code numbers, as the API's error bodies carry them.
const CODE_NAMES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
  "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
  "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
  "UNAUTHENTICATED"];
const FEW = 4; // up to this many coordinates: one slider each; more: a seed and FEW chosen ones
const SECTION_STEP = 0.05; // section sliders move in steps, so a revisited section is cached
const MAP_CACHE_ENTRIES = 256;
// service/imaging.py's heat-map colours (HEAT_ANCHORS), for the dense layers drawn here.
const HEAT = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

const stats = { roundTripsMs: [], sent: {}, dropped: {}, mapRequests: 0, mapKeys: [], mapCacheHits: 0,
  mapsDrawn: 0, layerUpdates: 0, flowFrames: [], flowDone: 0 };
const state = {
  models: [], // ModelInfo of every served generator
  model: null, // the chosen one
  label: 0, // conditional models: the class
  blendClass: 0, // ... blended with this one
  blendWeight: 0, // ... at this weight (0: the class alone)
  psi: 1, // truncation
  off: {}, // layer -> Set of channels switched off
  latent: [], // the current point
  seed: null, // large latents: the seed the point came from
  seedLatent: "", // ... and that seed's coordinates, to tell whether a slider moved since
  chosen: [], // large latents: the coordinates the sliders move
  axes: [0, 1], // the class map's plane
  range: [-1, 1],
  resolution: 64,
  mapCache: new Map(), // request key -> {png, resolution, classNames, ms}
  map: null, // {key, resolution} on screen
  picking: 0, // clicks left to pick flow keys on the map (2: A next, 1: B next)
  flowRun: 0,
};
// User actions still awaiting the server before they move the point (a seed's latent, a model's
// description): counted by guard(), so that idle() is not true in the gap before the views ask.
let actionsPending = 0;
// For people at the console and for the browser tests.
window.explorer = { stats, state,
  idle: () => actionsPending === 0 && [imageLive, layersLive, mapLive].every((l) => !l.busy) };

// -- talking to the API ---------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, message, httpStatus = 0) {
    super(message);
    this.status = status;
    this.httpStatus = httpStatus;
  }
}

function authHeaders() {
  const token = sessionStorage.getItem("ganserve-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function send(path, body) {
  const init = body === undefined
    ? { headers: authHeaders() }
    : { method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() },
        body: JSON.stringify(body) };
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError("UNAVAILABLE", `cannot reach the server at ${location.host} (${error.message})`);
  }
  if (!response.ok) {
    let status = null;
    try {
      status = await response.json();
    } catch {
      // not a google.rpc.Status body (a proxy's page, say): the HTTP status says it all
    }
    if (response.status === 401) $("token-box").hidden = false;
    const name = (status && CODE_NAMES[status.code]) || `HTTP ${response.status}`;
    throw new ApiError(name, status?.message ?? response.statusText, response.status);
  }
  return response;
}

async function api(path, body) {
  return (await send(path, body)).json();
}

// -- errors on the page ---------------------------------------------------------------------------
const errors = new Map();

function showError(where, error) {
  const text = error instanceof ApiError ? `${error.status}: ${error.message}` : String(error.message ?? error);
  errors.set(where, `${where}: ${text}`);
  renderErrors();
}

function clearError(where) {
  if (errors.delete(where)) renderErrors();
}

function renderErrors() {
  const box = $("errors");
  box.textContent = [...errors.values()].join("\n");
  box.hidden = errors.size === 0;
}

// -- one call in flight per view, the newest wish waiting -----------------------------------------
class Live {
  constructor(name, run) {
    this.name = name;
    this.run = run;
    this.busy = false;
    this.waiting = undefined;
    stats.sent[name] = 0;
    stats.dropped[name] = 0;
  }

  ask(wish) {
    if (this.busy) {
      if (this.waiting !== undefined) stats.dropped[this.name] += 1;
      this.waiting = wish;
    } else {
      this.start(wish);
    }
  }

  async start(wish) {
    this.busy = true;
    stats.sent[this.name] += 1;
    try {
      await this.run(wish);
      clearError(this.name);
    } catch (error) {
      showError(this.name, error);
    }
    this.busy = false;
    if (this.waiting !== undefined) {
      const next = this.waiting;
      this.waiting = undefined;
      this.start(next);
    }
  }
}

// -- what every call says about the current point ------------------------------------------------
// The class (or a blend of two), truncation and switched-off channels, as each RPC takes them:
// "generate" and "layers" take all three, "flow" (Interpolate) the class and psi, "map"
// (ClassMap) the class only, "seed" the class only (the seed's own latent, untruncated).
function steering(kind) {
  const fields = {};
  if (state.model.kind === "CONDITIONAL_GENERATOR") {
    const w = state.blendWeight;
    const blend = w > 0 && state.blendClass !== state.label
      ? { weights: { [state.label]: Number((1 - w).toFixed(4)), [state.blendClass]: w } } : null;
    if (kind === "map") Object.assign(fields, blend ? { blend } : { label: state.label });
    else if (kind === "flow") Object.assign(fields, blend ? { blends: [blend] } : { label: state.label });
    else Object.assign(fields, blend ? { blends: [blend] } : { labels: [state.label] });
  }
  if (state.psi < 1 && (kind === "generate" || kind === "layers" || kind === "flow")) fields.psi = state.psi;
  const edits = Object.entries(state.off).filter(([, channels]) => channels.size > 0)
    .map(([layer, channels]) => ({ layer, channels: [...channels].sort((a, b) => a - b), scale: 0 }));
  if (edits.length && (kind === "generate" || kind === "layers")) fields.edits = edits;
  return fields;
}

const dim = () => state.model.latentDim;
const range = (n) => Array.from({ length: n }, (_, i) => i);
const onPlane = (coord) => state.axes.includes(coord);
const pngUrl = (base64) => `data:image/png;base64,${base64}`;
const bytesOf = (base64) => Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// -- models ---------------------------------------------------------------------------------------
async function loadModels() {
  const { models } = await api("/v1/models");
  state.models = models.filter((m) => m.kind === "GENERATOR" || m.kind === "CONDITIONAL_GENERATOR");
  const picker = $("model");
  picker.replaceChildren(...state.models.map((m) => new Option(`${m.name} (${m.latentDim}-D)`, m.name)));
  clearError("models");
  const query = new URLSearchParams(location.search);
  const cells = Number(query.get("cells")); // ?cells=N: the class map's default resolution
  if (Number.isInteger(cells) && cells >= 2) {
    if (![...$("resolution").options].some((o) => Number(o.value) === cells)) $("resolution").add(new Option(cells));
    $("resolution").value = String(cells);
    state.resolution = cells;
  }
  const wanted = query.get("model") ?? state.models[0]?.name;
  if (wanted === undefined) throw new ApiError("FAILED_PRECONDITION", "no generator is served");
  await chooseModel(wanted);
}

async function chooseModel(name) {
  const info = await api(`/v1/models/${encodeURIComponent(name)}`);
  state.model = info;
  if ([...$("model").options].some((o) => o.value === name)) $("model").value = name;
  state.range = info.prior === "normal" ? [-3, 3] : [-1, 1];
  state.axes = [0, Math.min(1, info.latentDim - 1)];
  state.map = null;
  $("map").getContext("2d").clearRect(0, 0, $("map").width, $("map").height);
  state.label = 0;
  state.blendClass = 0;
  state.blendWeight = 0;
  state.off = {};
  const conditional = info.kind === "CONDITIONAL_GENERATOR";
  $("class-box").hidden = !conditional;
  $("label").replaceChildren(...info.classNames.map((n, i) => new Option(`${i}: ${n}`, i)));
  $("blend-box").hidden = !info.classBlending;
  $("blend-class").replaceChildren(...info.classNames.map((n, i) => new Option(`${i}: ${n}`, i)));
  $("blend").value = 0;
  $("blend-out").textContent = "0.00";
  $("model-info").textContent = `${info.family} · ${info.latentDim}-D ${info.prior} latent · `
    + `${Number(info.parameters).toLocaleString()} parameters · epoch ${info.epoch}`;
  $("seed-box").hidden = info.latentDim <= FEW;
  if (info.latentDim <= FEW) {
    state.latent = new Array(info.latentDim).fill(0);
    state.seed = null;
    state.chosen = range(info.latentDim);
  } else {
    state.chosen = range(FEW);
    await pointFromSeed($("seed").value);
  }
  const query = new URLSearchParams(location.search);
  query.set("model", name);
  history.replaceState(null, "", `?${query}`);
  buildAxisPickers();
  buildSliders();
  buildLayerPanels();
  clearError("model");
  pointMoved(true);
}

async function pointFromSeed(text) {
  // The server checks the seed (a uint32) and answers with the latent it names.
  const response = await api("/v1/generate", { model: state.model.name, seeds: [text.trim()], ...steering("seed") });
  const image = response.images[0];
  state.latent = image.latent.values;
  state.seed = image.seed;
  state.seedLatent = JSON.stringify(state.latent);
  $("seed").value = image.seed;
}

// -- sliders --------------------------------------------------------------------------------------
function buildSliders() {
  const box = $("sliders");
  box.replaceChildren();
  const [low, high] = state.range;
  state.chosen.forEach((coord, i) => {
    const row = document.createElement("div");
    row.className = "slider";
    row.dataset.coord = coord;
    const label = document.createElement("label");
    if (dim() <= FEW) {
      label.textContent = `z${coord + 1}`;
    } else {
      const which = document.createElement("select");
      which.setAttribute("aria-label", `coordinate of slider ${i + 1}`);
      which.replaceChildren(...range(dim()).map((c) => new Option(`z${c + 1}`, c)));
      which.value = coord;
      which.addEventListener("change", () => {
        state.chosen[i] = Number(which.value);
        buildSliders();
      });
      label.append(which);
    }
    const input = document.createElement("input");
    Object.assign(input, { type: "range", min: low, max: high });
    // Coordinates off the plane pick the map's section: in steps, so maps come back from cache.
    input.step = dim() <= FEW && !onPlane(coord) ? SECTION_STEP : "any";
    input.value = state.latent[coord];
    input.setAttribute("aria-label", `z${coord + 1}`);
    const output = document.createElement("output");
    row.classList.toggle("section", !onPlane(coord));
    input.addEventListener("input", () => {
      state.latent[coord] = Number(input.value);
      output.textContent = state.latent[coord].toFixed(2);
      pointMoved(!onPlane(coord));
    });
    output.textContent = state.latent[coord].toFixed(2);
    row.append(label, input, output);
    box.append(row);
  });
}

function syncSliders() {
  for (const row of $("sliders").children) {
    const coord = Number(row.dataset.coord);
    row.querySelector("input").value = state.latent[coord];
    row.querySelector("output").textContent = state.latent[coord].toFixed(2);
  }
}

function buildAxisPickers() {
  for (const [i, id] of [[0, "axis-x"], [1, "axis-y"]]) {
    const picker = $(id);
    picker.replaceChildren(...range(dim()).map((c) => new Option(`z${c + 1}`, c)));
    picker.value = state.axes[i];
  }
  $("map-panel").hidden = dim() < 2;
}

// -- the point moved: every view follows ----------------------------------------------------------
function pointMoved(sectionChanged) {
  const point = { model: state.model.name, values: [...state.latent] };
  imageLive.ask({ ...point, body: { model: point.model, latents: [{ values: point.values }], ...steering("generate") } });
  layersLive.ask({ ...point, body: { model: point.model, latents: [{ latent: { values: point.values } }],
    heatmapPng: true, ...steering("layers") } });
  placeMarker($("marker"), state.latent);
  if (sectionChanged) refreshMap();
}

const imageLive = new Live("image", async (wish) => {
  const started = performance.now();
  const response = await api("/v1/generate", wish.body);
  if (wish.model !== state.model.name) return; // the model changed meanwhile
  const image = $("image");
  image.src = pngUrl(response.images[0].png);
  image.dataset.latent = JSON.stringify(wish.values);
  await image.decode();
  const ms = performance.now() - started;
  stats.roundTripsMs.push(ms);
  const recent = stats.roundTripsMs.slice(-20).sort((a, b) => a - b);
  $("rtt").textContent = `round trip ${ms.toFixed(1)} ms (median of last ${recent.length}: `
    + `${recent[recent.length >> 1].toFixed(1)} ms)`;
});

// -- layers ---------------------------------------------------------------------------------------
function buildLayerPanels() {
  $("layers").replaceChildren(...state.model.layerNames.map((name) => {
    const panel = document.createElement("figure");
    panel.className = "layer";
    panel.dataset.layer = name;
    panel.style.margin = "0";
    const picture = document.createElement("img");
    picture.alt = `${name}: mean activation over channels`;
    const strip = document.createElement("canvas");
    strip.hidden = true;
    const caption = document.createElement("figcaption");
    caption.innerHTML = `${name} <span class="shape"></span>`;
    panel.append(picture, strip, caption);
    const editable = (state.model.editableLayers ?? []).find((e) => e.layer === name);
    if (editable) panel.append(channelSwitches(name, editable.channels));
    return panel;
  }));
}

function channelSwitches(layer, count) {
  // One switch per channel: unticked, the channel is multiplied by 0 inside the generator (a
  // ChannelEdit), so the image and every later layer change.
  const box = document.createElement("div");
  box.className = "channels";
  box.dataset.layer = layer;
  for (const channel of range(count)) {
    const input = document.createElement("input");
    Object.assign(input, { type: "checkbox", checked: true, title: `${layer} channel ${channel}` });
    input.dataset.channel = channel;
    input.setAttribute("aria-label", `${layer} channel ${channel}`);
    input.addEventListener("change", () => {
      const off = (state.off[layer] ??= new Set());
      if (input.checked) off.delete(channel);
      else off.add(channel);
      pointMoved(false); // the latent stays: the map too
    });
    box.append(input);
  }
  return box;
}

function drawValues(canvas, values) {
  // A dense layer has no spatial map: its units, row by row, coloured like the heat maps.
  const columns = Math.ceil(Math.sqrt(values.length));
  const rows = Math.ceil(values.length / columns);
  canvas.width = columns;
  canvas.height = rows;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(columns, rows);
  let low = Infinity;
  let high = -Infinity;
  for (const v of values) {
    low = Math.min(low, v);
    high = Math.max(high, v);
  }
  values.forEach((v, i) => {
    const position = (high > low ? (v - low) / (high - low) : 0) * (HEAT.length - 1);
    const index = Math.min(Math.floor(position), HEAT.length - 2);
    const fraction = position - index;
    for (let c = 0; c < 3; c += 1) {
      pixels.data[4 * i + c] = HEAT[index][c] * (1 - fraction) + HEAT[index + 1][c] * fraction;
    }
    pixels.data[4 * i + 3] = 255;
  });
  context.putImageData(pixels, 0, 0);
}

const layersLive = new Live("layers", async (wish) => {
  const response = await api("/v1/layer-activations", wish.body);
  if (wish.model !== state.model.name) return;
  for (const layer of response.layers) {
    const panel = $("layers").querySelector(`[data-layer="${CSS.escape(layer.layer)}"]`);
    if (panel === null) continue;
    const [picture, strip] = panel.querySelectorAll("img, canvas");
    panel.querySelector(".shape").textContent = `[${layer.shape.slice(1).join("×")}]`;
    if (layer.heatmaps.length) {
      picture.src = pngUrl(layer.heatmaps[0]);
      picture.hidden = false;
      strip.hidden = true;
    } else {
      drawValues(strip, new Float32Array(bytesOf(layer.channelMeans.data).buffer));
      strip.hidden = false;
      picture.hidden = true;
    }
    panel.dataset.latent = JSON.stringify(wish.values);
  }
  stats.layerUpdates += 1;
});

// -- the class map --------------------------------------------------------------------------------
// A cell's centre in the map is the grid latent ClassMap classified (linspace over the range).
function valueAt(fraction) {
  const cells = state.map?.resolution ?? state.resolution;
  const cell = Math.min(Math.max(fraction * cells - 0.5, 0), cells - 1);
  const [low, high] = state.range;
  return low + (cell / (cells - 1)) * (high - low);
}

function fractionOf(value) {
  const cells = state.map?.resolution ?? state.resolution;
  const [low, high] = state.range;
  return (((value - low) / (high - low)) * (cells - 1) + 0.5) / cells;
}

function placeMarker(marker, latent) {
  const size = $("map").clientWidth;
  const [x, y] = state.axes.map((axis) => fractionOf(latent[axis]));
  marker.style.left = `${Math.min(Math.max(x, 0), 1) * size}px`;
  marker.style.top = `${(1 - Math.min(Math.max(y, 0), 1)) * size}px`;
}

function mapWish() {
  const [axisX, axisY] = state.axes;
  const fixed = range(dim()).filter((c) => !onPlane(c)).map((c) => state.latent[c]);
  const [rangeMin, rangeMax] = state.range;
  const body = { model: state.model.name, resolution: state.resolution, axisX, axisY, fixed,
    rangeMin, rangeMax, renderPng: true, ...steering("map") };
  return { model: state.model.name, key: JSON.stringify(body), body, fixed };
}

function refreshMap() {
  if (dim() < 2) return;
  const wish = mapWish();
  const others = range(dim()).filter((c) => !onPlane(c));
  $("section-note").textContent = others.length === 0
    ? "The whole latent plane."
    : others.length <= 2
      ? `Section at ${others.map((c) => `z${c + 1} = ${state.latent[c].toFixed(2)}`).join(", ")}.`
      : `Section through the current point (${others.length} other coordinates held).`;
  if (state.map?.key === wish.key) return;
  mapLive.ask(wish);
}

async function drawMap(entry) {
  const picture = new Image();
  picture.src = pngUrl(entry.png);
  await picture.decode();
  // service/imaging.py's render_class_map: the map square (cells x scale) at the top left, its
  // legend to the right.
  const side = entry.resolution * Math.max(1, Math.floor(512 / entry.resolution));
  const canvas = $("map");
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.drawImage(picture, 0, 0, side, side, 0, 0, canvas.width, canvas.height);
  const legend = $("legend");
  legend.width = picture.width - side;
  legend.height = Math.min(picture.height, 18 * entry.classNames.length + 16);
  legend.getContext("2d").drawImage(picture, side, 0, legend.width, legend.height, 0, 0, legend.width, legend.height);
}

const mapLive = new Live("map", async (wish) => {
  let entry = state.mapCache.get(wish.key);
  const cached = entry !== undefined;
  if (cached) {
    stats.mapCacheHits += 1;
  } else {
    $("map-status").textContent = "computing…";
    stats.mapRequests += 1;
    stats.mapKeys.push(wish.key);
    const started = performance.now();
    try {
      const response = await api("/v1/classmap", wish.body);
      entry = { png: response.png, resolution: response.resolution, classNames: response.classNames,
        ms: performance.now() - started };
    } finally {
      $("map-status").textContent = "";
    }
    state.mapCache.set(wish.key, entry);
    if (state.mapCache.size > MAP_CACHE_ENTRIES) state.mapCache.delete(state.mapCache.keys().next().value);
  }
  if (wish.model !== state.model.name) return;
  await drawMap(entry);
  state.map = { key: wish.key, resolution: entry.resolution };
  $("map").dataset.key = wish.key;
  stats.mapsDrawn += 1;
  $("map-status").textContent = `${entry.resolution}×${entry.resolution} cells, `
    + (cached ? "from the page's cache" : `${entry.ms.toFixed(0)} ms`);
  placeMarker($("marker"), state.latent);
  placeKeys();
});

function pointAt(event) {
  const box = $("map").getBoundingClientRect();
  const point = [...state.latent];
  point[state.axes[0]] = valueAt((event.clientX - box.left) / box.width);
  point[state.axes[1]] = valueAt(1 - (event.clientY - box.top) / box.height);
  return point;
}

// -- smooth flow ----------------------------------------------------------------------------------
function describe(latent) {
  if (state.seed !== null && JSON.stringify(latent) === state.seedLatent) return String(state.seed);
  return latent.map((v) => Number(v.toFixed(4))).join(", ");
}

function parseKey(id) {
  const text = $(id).value.trim();
  if (/^\d+$/.test(text)) return { seed: text }; // its range is the server's to check
  const values = text.split(/[\s,]+/).filter(Boolean).map(Number);
  if (values.length !== dim() || values.some((v) => !Number.isFinite(v))) {
    throw new ApiError("INVALID_ARGUMENT", `${id}: give a seed or ${dim()} comma-separated numbers, got "${text}"`);
  }
  return { latent: { values } };
}

function placeKeys() {
  for (const [id, key] of [["flow-a", "key-a"], ["flow-b", "key-b"]]) {
    let parsed = null;
    try {
      parsed = parseKey(id);
    } catch {
      // shown when the flow plays
    }
    const marker = $(key);
    marker.hidden = !parsed?.latent || dim() < 2;
    if (!marker.hidden) placeMarker(marker, parsed.latent.values);
  }
}

async function playFlow() {
  state.flowRun += 1;
  const run = state.flowRun;
  const steps = Number($("flow-steps").value);
  const frameMs = Number($("flow-ms").value);
  const link = $("flow-gif");
  link.hidden = true;
  if (link.href) URL.revokeObjectURL(link.href);
  const stream = { frames: [], done: false };
  stats.flowFrames = [];
  $("flow-count").textContent = "";
  const body = { model: state.model.name, keys: [parseKey("flow-a"), parseKey("flow-b")], steps,
    gif: true, gifFrameMs: frameMs, ...steering("flow") };
  const showing = animate(stream, steps, frameMs, run);
  try {
    const response = await send("/v1/interpolate", body);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const message = JSON.parse(buffer.slice(0, end));
        buffer = buffer.slice(end + 1);
        if (message.error) throw new ApiError(CODE_NAMES[message.error.code], message.error.message);
        const frame = message.result;
        if (frame.gif) {
          link.href = URL.createObjectURL(new Blob([bytesOf(frame.gif)], { type: "image/gif" }));
          link.hidden = false;
        } else {
          stream.frames.push(frame);
        }
      }
    }
  } finally {
    stream.done = true;
  }
  await showing;
  if (run === state.flowRun) stats.flowDone += 1;
}

async function animate(stream, steps, frameMs, run) {
  // Frames play as they arrive, one every frameMs; the stream usually runs ahead of the clock.
  const marker = $("flow-marker");
  let shown = 0;
  while (run === state.flowRun) {
    if (shown < stream.frames.length) {
      const frame = stream.frames[shown];
      $("flow-frame").src = pngUrl(frame.image.png);
      $("flow-frame").hidden = false;
      shown += 1;
      stats.flowFrames.push(frame.index ?? 0);
      $("flow-count").textContent = `${shown} / ${steps} frames`;
      if (dim() >= 2) {
        marker.hidden = false;
        placeMarker(marker, frame.image.latent.values);
      }
      await sleep(frameMs);
    } else if (stream.done) {
      break;
    } else {
      await sleep(5);
    }
  }
  marker.hidden = true;
}

// -- wiring ---------------------------------------------------------------------------------------
function guard(where, action) {
  return async (...args) => {
    actionsPending += 1;
    try {
      await action(...args);
      clearError(where);
    } catch (error) {
      showError(where, error);
    } finally {
      actionsPending -= 1;
    }
  };
}

$("model").addEventListener("change", guard("model", () => chooseModel($("model").value)));
$("label").addEventListener("change", () => {
  state.label = Number($("label").value);
  pointMoved(true);
});
$("blend-class").addEventListener("change", () => {
  state.blendClass = Number($("blend-class").value);
  pointMoved(state.blendWeight > 0);
});
$("blend").addEventListener("input", () => {
  state.blendWeight = Number($("blend").value);
  $("blend-out").textContent = state.blendWeight.toFixed(2);
  pointMoved(true); // the map of the blend
});
$("psi").addEventListener("input", () => {
  state.psi = Number($("psi").value);
  $("psi-out").textContent = state.psi.toFixed(2);
  pointMoved(false); // ClassMap draws the plane itself: no psi there
});
$("seed").addEventListener("change", guard("seed", async () => {
  await pointFromSeed($("seed").value);
  syncSliders();
  pointMoved(true);
}));
$("new-seed").addEventListener("click", guard("seed", async () => {
  $("seed").value = crypto.getRandomValues(new Uint32Array(1))[0];
  await pointFromSeed($("seed").value);
  syncSliders();
  pointMoved(true);
}));
for (const [i, id] of [[0, "axis-x"], [1, "axis-y"]]) {
  $(id).addEventListener("change", () => {
    const axis = Number($(id).value);
    if (state.axes[1 - i] === axis) state.axes[1 - i] = state.axes[i]; // swap rather than repeat
    state.axes[i] = axis;
    buildAxisPickers();
    buildSliders();
    placeMarker($("marker"), state.latent);
    refreshMap();
  });
}
$("resolution").addEventListener("change", () => {
  state.resolution = Number($("resolution").value);
  refreshMap();
});
$("plane").addEventListener("click", (event) => {
  const point = pointAt(event);
  if (state.picking > 0) {
    $(state.picking === 2 ? "flow-a" : "flow-b").value = describe(point);
    state.picking -= 1;
    $("pick-ab").textContent = state.picking ? "now click B" : "pick A, B on the map";
    placeKeys();
    return;
  }
  state.latent = point;
  syncSliders();
  pointMoved(false); // only the plane's two coordinates moved: the same section
});
$("pick-ab").addEventListener("click", () => {
  state.picking = 2;
  $("pick-ab").textContent = "now click A";
});
$("set-a").addEventListener("click", () => {
  $("flow-a").value = describe(state.latent);
  placeKeys();
});
$("set-b").addEventListener("click", () => {
  $("flow-b").value = describe(state.latent);
  placeKeys();
});
for (const id of ["flow-a", "flow-b"]) $(id).addEventListener("change", placeKeys);
$("flow-play").addEventListener("click", guard("flow", playFlow));
$("token").addEventListener("change", guard("models", async () => {
  sessionStorage.setItem("ganserve-token", $("token").value);
  await loadModels();
}));

guard("models", loadModels)();
