// owl serve --review page: image by image, accept, delete, relabel, move or draw boxes, then save
// the data set back in its own format (POST /review/v1/save). Unsaved edits live in localStorage
// (they survive a reload); each edited image remembers the version it started from, so a save
// over someone else's newer save is refused (409) and the page asks what to do. No libraries.
// window.reviewState is the page's whole state (the browser test reads it).
"use strict";

const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];
const MAX_W = 640, MAX_H = 480; // the canvas fits in this, in CSS pixels
const HANDLE = 7; // corner grab distance, CSS pixels

const state = (window.reviewState = {
  data: null,      // GET /review/v1/dataset: {id, name, format, classes, scored, images: [...]}
  index: 0,        // position in data.images (review order)
  edits: {},       // key -> {version, boxes}: unsaved images
  selected: null,  // id of the selected box
  drawClass: 0,    // class index new boxes get
  undo: [],        // [{key, edit}] snapshots before each change
  conflicts: [],   // images a save was refused for (409), as the server holds them
  restored: 0,     // unsaved images found in localStorage on load
  saves: 0,
  pending: 0,
  message: "",
  error: null,
  scale: 1,
});

const $ = (id) => document.getElementById(id);
const storeKey = () => "owl-review:" + state.data.id;
const image = () => state.data.images[state.index];
const byKey = (key) => state.data.images.find((im) => im.key === key);
const clone = (boxes) => boxes.map((b) => ({ ...b, box: [...b.box] }));

function boxesOf(im) {
  return state.edits[im.key] ? state.edits[im.key].boxes : im.boxes;
}

function setMessage(text, isError = false) {
  state.message = text;
  state.error = isError ? text : null;
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

// Unsaved edits are kept per image ("owl-review:<data set id>:<key>"), so two tabs editing
// different images never overwrite each other's stored edits.
function persist(key) {
  if (key !== undefined) {
    const name = `${storeKey()}:${key}`;
    if (state.edits[key]) localStorage.setItem(name, JSON.stringify(state.edits[key]));
    else localStorage.removeItem(name);
  }
  const n = Object.keys(state.edits).length;
  $("unsaved").textContent = n ? `${n} unsaved image${n > 1 ? "s" : ""}` : "all saved";
}

function restore() {
  const prefix = storeKey() + ":";
  for (let i = 0; i < localStorage.length; i++) {
    const name = localStorage.key(i);
    if (!name.startsWith(prefix)) continue;
    const key = Number(name.slice(prefix.length));
    if (byKey(key)) state.edits[key] = JSON.parse(localStorage.getItem(name));
  }
}

// One change to the current image's boxes: snapshot for undo, apply, store, redraw.
function edit(change) {
  const im = image();
  state.undo.push({ key: im.key, edit: state.edits[im.key] ? { ...state.edits[im.key], boxes: clone(state.edits[im.key].boxes) } : null });
  const boxes = clone(boxesOf(im));
  change(boxes);
  state.edits[im.key] = { version: state.edits[im.key] ? state.edits[im.key].version : im.version, boxes };
  persist(im.key);
  render();
}

function undo() {
  const last = state.undo.pop();
  if (!last) return;
  if (last.edit) state.edits[last.key] = last.edit;
  else delete state.edits[last.key];
  const at = state.data.images.findIndex((im) => im.key === last.key);
  if (at >= 0) state.index = at;
  persist(last.key);
  loadImage();
  render();
}

function human(b) {
  // a box a person touched is a person's label: score 1 in a data set with scores
  if (state.data.scored) b.score = 1;
  return b;
}

function ordered(boxes) {
  return boxes.map((b, i) => [b, i])
    .sort((x, y) => (x[0].score ?? 2) - (y[0].score ?? 2) || x[1] - y[1]).map((x) => x[0]);
}

function selectedBox(boxes) {
  return boxes.find((b) => b.id === state.selected);
}

// --- actions -------------------------------------------------------------------------------------

function go(step) {
  const n = state.data.images.length;
  state.index = Math.min(n - 1, Math.max(0, state.index + step));
  state.selected = null;
  loadImage();
}

function selectNext(step = 1) {
  const list = ordered(boxesOf(image()));
  if (!list.length) return;
  const at = list.findIndex((b) => b.id === state.selected);
  state.selected = list[(at + step + list.length) % list.length].id;
  render();
}

function acceptSelected() {
  if (!state.selected) return;
  edit((boxes) => { const b = selectedBox(boxes); if (b) human(b); });
}

function acceptAll() {
  if (state.data.scored && boxesOf(image()).some((b) => b.score !== 1)) edit((boxes) => boxes.forEach(human));
  go(1);
}

function deleteSelected() {
  if (!state.selected) return;
  const id = state.selected;
  edit((boxes) => { const i = boxes.findIndex((b) => b.id === id); if (i >= 0) boxes.splice(i, 1); });
  state.selected = null;
  selectNext();
}

function relabel(classIndex) {
  const name = state.data.classes[classIndex];
  if (name === undefined) return;
  state.drawClass = classIndex;
  if (!state.selected) { render(); return; }
  edit((boxes) => { const b = selectedBox(boxes); if (b) { b.label = name; human(b); } });
}

function clampBox(box) {
  const im = image();
  let [x0, y0, x1, y1] = box;
  [x0, x1] = [Math.min(x0, x1), Math.max(x0, x1)];
  [y0, y1] = [Math.min(y0, y1), Math.max(y0, y1)];
  x0 = Math.max(0, x0); y0 = Math.max(0, y0);
  x1 = Math.min(im.width, x1); y1 = Math.min(im.height, y1);
  return [x0, y0, x1, y1].map((v) => Math.round(v * 100) / 100);
}

function nudge(dx, dy) {
  if (!state.selected) return;
  const im = image();
  edit((boxes) => {
    const b = selectedBox(boxes);
    if (!b) return;
    const w = b.box[2] - b.box[0], h = b.box[3] - b.box[1];
    const x0 = Math.min(Math.max(0, b.box[0] + dx), im.width - w);
    const y0 = Math.min(Math.max(0, b.box[1] + dy), im.height - h);
    b.box = clampBox([x0, y0, x0 + w, y0 + h]);
    human(b);
  });
}

function newId() {
  return "n" + Date.now().toString(36) + Math.random().toString(36).slice(2, 7);
}

async function save() {
  const images = Object.entries(state.edits).map(([key, e]) => ({ key: Number(key), version: e.version, boxes: e.boxes }));
  if (!images.length) { setMessage("nothing to save"); return; }
  const who = $("who").value.trim();
  state.pending++;
  try {
    const response = await fetch("/review/v1/save", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ who, images }),
    });
    const body = await response.json();
    if (response.status === 409) {
      state.conflicts = body.conflicts || [];
      showConflicts(body.error);
      return;
    }
    if (!response.ok) { setMessage(`${body.error} (HTTP ${response.status})`, true); return; }
    for (const saved of body.images) {
      const at = state.data.images.findIndex((im) => im.key === saved.key);
      if (at >= 0) state.data.images[at] = saved;
      delete state.edits[saved.key];
      persist(saved.key);
    }
    state.saves++;
    state.undo = [];
    hideConflicts();
    render();
    setMessage(`saved ${body.saved} image${body.saved === 1 ? "" : "s"} in ${state.data.format} (save ${body.saves}; log ${body.log})`);
  } catch (e) {
    setMessage(`not saved: ${e.message}`, true);
  } finally {
    state.pending--;
  }
}

function showConflicts(text) {
  setMessage(text, true);
  $("conflict-text").textContent = text;
  $("conflict").hidden = state.conflicts.length === 0;
}

function hideConflicts() {
  state.conflicts = [];
  $("conflict").hidden = true;
}

// Keep mine: my edits now start from their version (so the next save overwrites it, knowingly).
function keepMine() {
  for (const theirs of state.conflicts) {
    if (state.edits[theirs.key]) state.edits[theirs.key].version = theirs.version;
    replaceImage(theirs);
    persist(theirs.key);
  }
  hideConflicts();
  save();
}

// Take theirs: drop my edits of those images and show what the server holds.
function takeTheirs() {
  for (const theirs of state.conflicts) {
    delete state.edits[theirs.key];
    replaceImage(theirs);
    persist(theirs.key);
  }
  hideConflicts();
  render();
  setMessage("took the saved version of those images");
}

function replaceImage(fresh) {
  const at = state.data.images.findIndex((im) => im.key === fresh.key);
  if (at >= 0) state.data.images[at] = fresh;
}

// --- drawing ---------------------------------------------------------------------------------------

let bitmap = null;
let drag = null; // {mode: "draw"|"move"|"resize", start: [x, y], box, corner, id}

function colour(label) {
  return COLOURS[Math.max(0, state.data.classes.indexOf(label)) % COLOURS.length];
}

function loadImage() {
  const im = image();
  if (!im) return;
  const img = new Image();
  state.pending++;
  img.onload = () => { bitmap = img; state.pending--; render(); };
  img.onerror = () => { state.pending--; setMessage(`cannot load image ${im.name}`, true); };
  img.src = `/review/v1/images/${im.key}`;
  bitmap = null;
  render();
}

function render() {
  const data = state.data;
  const im = image();
  if (!data || !im) return;
  $("progress").textContent = `image ${state.index + 1} of ${data.images.length}`;
  $("caption").textContent = `${im.name} (${im.width}x${im.height})` + (state.edits[im.key] ? " - edited" : "");
  const canvas = $("canvas");
  state.scale = Math.min(MAX_W / im.width, MAX_H / im.height);
  canvas.width = Math.round(im.width * state.scale);
  canvas.height = Math.round(im.height * state.scale);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  if (bitmap) ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const boxes = boxesOf(im);
  const shown = drag && drag.box ? boxes.map((b) => (b.id === drag.id ? { ...b, box: drag.box } : b)) : boxes;
  for (const b of shown) drawBox(ctx, b, b.id === state.selected);
  if (drag && drag.mode === "draw" && drag.box) {
    drawBox(ctx, { label: data.classes[state.drawClass], box: drag.box, score: null }, true);
  }
  const list = $("boxes");
  list.replaceChildren(...ordered(boxes).map((b) => {
    const li = document.createElement("li");
    li.textContent = `${b.label}` + (b.score === null || b.score === undefined ? "" : ` ${b.score.toFixed(2)}`);
    li.style.borderLeft = `4px solid ${colour(b.label)}`;
    if (b.id === state.selected) li.className = "selected";
    else if (data.scored && b.score === 1) li.className = "accepted";
    li.onclick = () => { state.selected = b.id; render(); };
    return li;
  }));
  $("classes").replaceChildren(...data.classes.map((name, i) => {
    const li = document.createElement("li");
    li.textContent = (i < 9 ? `${i + 1}  ` : "") + name;
    li.style.borderLeft = `4px solid ${COLOURS[i % COLOURS.length]}`;
    if (i === state.drawClass) li.className = "current";
    li.onclick = () => relabel(i);
    return li;
  }));
}

function drawBox(ctx, b, selected) {
  const s = state.scale;
  const [x0, y0, x1, y1] = b.box.map((v) => v * s);
  ctx.strokeStyle = colour(b.label);
  ctx.lineWidth = selected ? 4 : 2;
  ctx.setLineDash(state.data.scored && b.score !== null && b.score < 1 ? [6, 3] : []);
  ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  ctx.setLineDash([]);
  const text = b.label + (b.score === null || b.score === undefined || b.score === 1 ? "" : ` ${b.score.toFixed(2)}`);
  ctx.font = "13px system-ui, sans-serif";
  const w = ctx.measureText(text).width + 6;
  ctx.fillStyle = colour(b.label);
  ctx.fillRect(x0, Math.max(0, y0 - 17), w, 17);
  ctx.fillStyle = "#fff";
  ctx.fillText(text, x0 + 3, Math.max(13, y0 - 4));
  if (selected) {
    for (const [cx, cy] of [[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) ctx.fillRect(cx - 3, cy - 3, 6, 6);
  }
}

function pointer(event) {
  const rect = $("canvas").getBoundingClientRect();
  return [(event.clientX - rect.left) / state.scale, (event.clientY - rect.top) / state.scale];
}

function hit(boxes, [x, y]) {
  const inside = boxes.filter((b) => x >= b.box[0] && x <= b.box[2] && y >= b.box[1] && y <= b.box[3]);
  inside.sort((a, b) => (a.box[2] - a.box[0]) * (a.box[3] - a.box[1]) - (b.box[2] - b.box[0]) * (b.box[3] - b.box[1]));
  return inside[0];
}

function corner(b, [x, y]) {
  const r = HANDLE / state.scale;
  const corners = [[0, 1], [2, 1], [0, 3], [2, 3]];
  return corners.find(([i, j]) => Math.abs(x - b.box[i]) <= r && Math.abs(y - b.box[j]) <= r);
}

function onDown(event) {
  $("canvas").focus();
  const p = pointer(event);
  const boxes = boxesOf(image());
  const sel = selectedBox(boxes);
  const c = sel && corner(sel, p);
  if (c) { drag = { mode: "resize", start: p, id: sel.id, corner: c, orig: [...sel.box] }; return; }
  const b = hit(boxes, p);
  if (b) {
    state.selected = b.id;
    drag = { mode: "move", start: p, id: b.id, orig: [...b.box] };
    render();
    return;
  }
  state.selected = null;
  drag = { mode: "draw", start: p, box: null };
}

function onMove(event) {
  if (!drag) return;
  const [x, y] = pointer(event);
  const im = image();
  if (drag.mode === "draw") drag.box = clampBox([drag.start[0], drag.start[1], x, y]);
  else if (drag.mode === "move") {
    const [ox0, oy0, ox1, oy1] = drag.orig, w = ox1 - ox0, h = oy1 - oy0;
    const nx = Math.min(Math.max(0, ox0 + x - drag.start[0]), im.width - w);
    const ny = Math.min(Math.max(0, oy0 + y - drag.start[1]), im.height - h);
    drag.box = clampBox([nx, ny, nx + w, ny + h]);
  } else {
    const box = [...drag.orig];
    box[drag.corner[0]] = x;
    box[drag.corner[1]] = y;
    drag.box = clampBox(box);
  }
  render();
}

function onUp(event) {
  if (!drag) return;
  onMove(event);
  const done = drag;
  drag = null;
  const box = done.box;
  if (!box || box[2] - box[0] < 2 / state.scale || box[3] - box[1] < 2 / state.scale) { render(); return; }
  if (done.mode === "draw") {
    const id = newId();
    edit((boxes) => boxes.push(human({ id, label: state.data.classes[state.drawClass], box, score: null })));
    state.selected = id;
    render();
  } else if (box.some((v, i) => v !== done.orig[i])) {
    edit((boxes) => { const b = boxes.find((x) => x.id === done.id); if (b) { b.box = box; human(b); } });
  } else render();
}

function onKey(event) {
  if (!state.data || event.target.tagName === "INPUT") return;
  const k = event.key;
  const step = event.shiftKey ? 10 : 1;
  const actions = {
    n: () => go(1), p: () => go(-1), PageDown: () => go(1), PageUp: () => go(-1),
    Enter: acceptAll, Tab: () => selectNext(event.shiftKey ? -1 : 1), a: acceptSelected,
    Delete: deleteSelected, Backspace: deleteSelected, x: deleteSelected,
    ArrowLeft: () => nudge(-step, 0), ArrowRight: () => nudge(step, 0),
    ArrowUp: () => nudge(0, -step), ArrowDown: () => nudge(0, step),
    z: undo, s: save, o: () => state.conflicts.length && keepMine(),
    t: () => state.conflicts.length && takeTheirs(), Escape: () => { state.selected = null; render(); },
  };
  if ((event.ctrlKey || event.metaKey) && (k === "s" || k === "z")) actions[k]();
  else if (event.ctrlKey || event.metaKey || event.altKey) return;
  else if (/^[1-9]$/.test(k)) relabel(Number(k) - 1);
  else if (actions[k]) actions[k]();
  else return;
  event.preventDefault();
}

async function start() {
  state.pending++;
  try {
    const response = await fetch("/review/v1/dataset");
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    state.data = body;
    $("dataset").textContent = `${body.name} (${body.format}, ${body.classes.length} classes)`;
    $("who").value = localStorage.getItem("owl-review-who") || body.who;
    restore();
    state.restored = Object.keys(state.edits).length;
    persist();
    setMessage(state.restored ? `restored ${state.restored} unsaved image(s) from this browser; press s to save them`
      : body.note || body.line);
    loadImage();
  } catch (e) {
    setMessage(`cannot load the data set: ${e.message}`, true);
  } finally {
    state.pending--;
  }
}

$("canvas").addEventListener("mousedown", onDown);
window.addEventListener("mousemove", onMove);
window.addEventListener("mouseup", onUp);
document.addEventListener("keydown", onKey);
$("save").onclick = save;
$("keep-mine").onclick = keepMine;
$("take-theirs").onclick = takeTheirs;
$("who").addEventListener("change", () => localStorage.setItem("owl-review-who", $("who").value.trim()));
start();
