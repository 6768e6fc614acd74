// owl serve page: upload images once, then every change (queries, example boxes, threshold)
// re-scores them on the server with POST /v1/rescore; nothing is re-encoded. No build step,
// no libraries. window.owlState is the page's whole state (the browser tests read it).
"use strict";

const DISPLAY = 384; // longest side of a drawn image, in CSS pixels
const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];

const state = (window.owlState = {
  images: [],      // {id, name, width, height, bitmap, canvas, detections: [...]}
  videos: [],      // the /v1/detect-video answers: {video_id, drawn, frames: [...], tracks, ...}
  queries: [],     // {text, threshold|null}
  exemplars: [],   // {image_id, box: [x0, y0, x1, y1]} (pixels), averaged into one query
  threshold: 0.1,
  calls: { detect: 0, rescore: 0, video: 0 },
  pending: 0,
  error: null,
});

const $ = (id) => document.getElementById(id);

async function api(path, init) {
  const response = await fetch(path, init);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function options() {
  return {
    queries: state.queries.map((q) => ({ text: q.text, threshold: q.threshold })),
    exemplars: state.exemplars.map((e) => ({ image_id: e.image_id, box: e.box, label: "example" })),
    threshold: state.threshold,
  };
}

function setStatus(message) {
  state.error = message;
  $("status").textContent = message || "";
}

const VIDEO_NAME = /\.(mp4|mov|mkv|webm|avi)$/i;
const isVideo = (f) => f.type.startsWith("video/") || VIDEO_NAME.test(f.name);

// A video goes to /v1/detect-video with the current queries: the server detects and tracks in
// it and keeps the drawn video; the page plays it (the video's own time slider) and shows the
// boxes of the frame at the current time; the frames download as tracks JSON.
async function uploadVideo(file) {
  const form = new FormData();
  form.append("video", file, file.name);
  form.append("options", JSON.stringify(options()));
  state.pending++;
  try {
    state.calls.video++;
    const body = await api("/v1/detect-video", { method: "POST", body: form });
    state.videos.push(body);
    addVideo(body);
    setStatus(body.truncated ? `${body.video}: only the first ${body.frames_detected} frames were detected` : "");
  } catch (e) {
    setStatus(e.message);
  } finally {
    state.pending--;
  }
}

function frameAt(body, seconds) {
  // The last detected frame at or before `seconds` of the drawn video (it plays at body.fps).
  const k = Math.min(body.frames.length - 1, Math.max(0, Math.floor(seconds * body.fps + 1e-6)));
  return body.frames[k];
}

function addVideo(body) {
  const figure = document.createElement("figure");
  figure.className = "video";
  const video = document.createElement("video");
  video.controls = true;
  video.src = body.drawn;
  video.width = DISPLAY;
  const caption = document.createElement("figcaption");
  const link = document.createElement("a");
  link.textContent = "tracks JSON";
  link.download = body.video.replace(/\.[^.]*$/, "") + ".tracks.json";
  link.href = URL.createObjectURL(new Blob([JSON.stringify(body.frames)], { type: "application/json" }));
  const now = document.createElement("output");
  const show = () => {
    const f = frameAt(body, video.currentTime);
    now.textContent = f ? `${f.timestamp.toFixed(2)} s: ` + (f.detections.map((d) =>
      `${d.track_id ? "#" + d.track_id + " " : ""}${d.label} ${d.score.toFixed(2)}`).join(", ") || "nothing") : "";
  };
  video.addEventListener("timeupdate", show);
  caption.append(`${body.video}: ${body.frames_detected} frames, ${body.tracks} tracks; `, link, " ", now);
  show();
  figure.append(video, caption);
  $("videos").append(figure);
}

async function upload(all) {
  for (const f of all.filter(isVideo)) await uploadVideo(f);
  const files = all.filter((f) => !isVideo(f));
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("images", f, f.name);
  form.append("options", JSON.stringify(options()));
  state.pending++;
  try {
    state.calls.detect++;
    const body = await api("/v1/detect", { method: "POST", body: form });
    const bitmaps = {};
    for (const f of files) bitmaps[f.name] = await createImageBitmap(f);
    body.results.forEach((r, i) => {
      const image = { id: body.image_ids[i], name: r.image.path, width: r.image.width,
                      height: r.image.height, bitmap: bitmaps[r.image.path], detections: r.detections };
      state.images.push(image);
      addFigure(image);
    });
    setStatus(body.failed.map((f) => f.error).join("; "));
  } catch (e) {
    setStatus(e.message);
  } finally {
    state.pending--;
  }
}

let rescoreSerial = 0;
async function rescore() {
  if (!state.images.length) return;
  const serial = ++rescoreSerial;
  state.pending++;
  try {
    state.calls.rescore++;
    const body = await api("/v1/rescore", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ image_ids: state.images.map((im) => im.id), ...options() }),
    });
    if (serial !== rescoreSerial) return; // a newer answer is on its way
    body.results.forEach((r, i) => { state.images[i].detections = r.detections; draw(state.images[i]); });
    setStatus(body.notes.join("; "));
  } catch (e) {
    setStatus(e.message);
  } finally {
    state.pending--;
  }
}

function colour(label) {
  const labels = [...state.queries.map((q) => q.text), "example"];
  const i = labels.indexOf(label);
  return COLOURS[(i < 0 ? 0 : i) % COLOURS.length];
}

function addFigure(image) {
  const figure = document.createElement("figure");
  const canvas = document.createElement("canvas");
  image.scale = DISPLAY / Math.max(image.width, image.height);
  canvas.width = Math.round(image.width * image.scale);
  canvas.height = Math.round(image.height * image.scale);
  canvas.dataset.imageId = image.id;
  image.canvas = canvas;
  const caption = document.createElement("figcaption");
  caption.textContent = `${image.name} (${image.width}x${image.height})`;
  figure.append(canvas, caption);
  $("images").append(figure);
  listen(image);
  draw(image);
}

function draw(image, dragBox) {
  const ctx = image.canvas.getContext("2d");
  const s = image.scale;
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(image.bitmap, 0, 0, image.canvas.width, image.canvas.height);
  ctx.lineWidth = 2;
  ctx.font = "12px system-ui, sans-serif";
  for (const d of image.detections) {
    const [x0, y0, x1, y1] = d.box.map((v) => v * s);
    ctx.strokeStyle = ctx.fillStyle = colour(d.label);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    const text = `${d.label} ${d.score.toFixed(2)}`;
    const w = ctx.measureText(text).width + 6;
    ctx.fillRect(x0 - 1, Math.max(0, y0 - 16), w, 16);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x0 + 2, Math.max(12, y0 - 4));
  }
  ctx.setLineDash([5, 3]);
  ctx.strokeStyle = "#ffeb3b";
  for (const e of state.exemplars.filter((e) => e.image_id === image.id)) {
    const [x0, y0, x1, y1] = e.box.map((v) => v * s);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  }
  if (dragBox) {
    const [x0, y0, x1, y1] = dragBox.map((v) => v * s);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  }
  ctx.setLineDash([]);
}

function listen(image) {
  const canvas = image.canvas;
  const toPixels = (event) => {
    const r = canvas.getBoundingClientRect();
    const x = ((event.clientX - r.left) * canvas.width) / r.width / image.scale;
    const y = ((event.clientY - r.top) * canvas.height) / r.height / image.scale;
    return [Math.min(Math.max(x, 0), image.width), Math.min(Math.max(y, 0), image.height)];
  };
  let start = null;
  canvas.addEventListener("mousedown", (event) => { start = toPixels(event); });
  canvas.addEventListener("mousemove", (event) => {
    const [x, y] = toPixels(event);
    if (start) {
      draw(image, [Math.min(start[0], x), Math.min(start[1], y), Math.max(start[0], x), Math.max(start[1], y)]);
      return;
    }
    hover(image, event, x, y);
  });
  canvas.addEventListener("mouseleave", () => { $("tip").hidden = true; });
  window.addEventListener("mouseup", (event) => {
    if (!start) return;
    const [x, y] = toPixels(event);
    const box = [Math.min(start[0], x), Math.min(start[1], y), Math.max(start[0], x), Math.max(start[1], y)];
    start = null;
    if (box[2] - box[0] < 2 || box[3] - box[1] < 2) { draw(image); return; } // a click, not a box
    state.exemplars.push({ image_id: image.id, box: box.map((v) => Math.round(v * 10) / 10) });
    renderChips();
    rescore();
  });
}

function hover(image, event, x, y) {
  const inside = image.detections.filter((d) => x >= d.box[0] && x <= d.box[2] && y >= d.box[1] && y <= d.box[3]);
  const tip = $("tip");
  if (!inside.length) { tip.hidden = true; return; }
  inside.sort((a, b) => b.score - a.score);
  tip.textContent = inside.map((d) => `${d.label}: ${d.score.toFixed(3)}`).join(", ");
  tip.style.left = `${event.clientX + 12}px`;
  tip.style.top = `${event.clientY + 12}px`;
  tip.hidden = false;
}

function renderChips() {
  const chips = $("chips");
  chips.replaceChildren();
  state.queries.forEach((q, i) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.style.background = colour(q.text);
    chip.textContent = q.threshold == null ? q.text : `${q.text} @${q.threshold}`;
    const remove = document.createElement("button");
    remove.textContent = "×";
    remove.title = "remove";
    remove.onclick = () => { state.queries.splice(i, 1); renderChips(); rescore(); };
    chip.append(remove);
    chips.append(chip);
  });
  if (state.exemplars.length) {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.style.background = colour("example");
    chip.textContent = `example (${state.exemplars.length} box${state.exemplars.length > 1 ? "es" : ""})`;
    chips.append(chip);
  }
}

async function download(format) {
  const response = await fetch("/v1/rescore", {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ image_ids: state.images.map((im) => im.id), ...options(), format }),
  });
  if (!response.ok) { setStatus((await response.json()).error); return; }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = { json: "detections.json", csv: "detections.csv", coco: "detections.coco.json" }[format];
  link.click();
  URL.revokeObjectURL(link.href);
}

$("files").addEventListener("change", (event) => { upload([...event.target.files]); event.target.value = ""; });
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  upload([...event.dataTransfer.files]);
});
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("drop", (event) => event.preventDefault());
$("query-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("query").value.trim();
  if (!text) return;
  const own = $("query-threshold").value;
  state.queries.push({ text, threshold: own === "" ? null : Number(own) });
  $("query").value = "";
  $("query-threshold").value = "";
  renderChips();
  rescore();
});
$("threshold").addEventListener("input", (event) => {
  state.threshold = Number(event.target.value);
  $("threshold-value").textContent = state.threshold.toFixed(2);
  rescore();
});
$("clear-examples").addEventListener("click", () => { state.exemplars = []; renderChips(); rescore(); });
for (const button of document.querySelectorAll("[data-format]")) {
  button.addEventListener("click", () => download(button.dataset.format));
}
api("/v1/models").then((body) => { $("model").textContent = `model: ${body.models[0].name}`; });
