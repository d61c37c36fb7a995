// sam_block click-to-segment page. Plain JavaScript, no build step, no external resources.
//
// The image is embedded once (POST /sam2/embed_image -> image_id); every change of the current
// object's prompts sends POST /sam2/segment_image with that image_id, RLE output and the server's
// logits cache (the previous prompt's low-resolution logits refine the next mask). Requests go one
// at a time: a click made while one is in flight updates the object at once and is sent next.
//
// Hooks for tests and benchmarks (read-only, in the DOM): <html data-requests="idle|busy">,
// <html data-masks-drawn="N"> (masks applied so far), and Performance API measures named
// "sam:click-to-mask" (pointer up -> the frame after the mask of that very prompt was painted on
// the canvas), split into "sam:segment-request" and "sam:mask-decode-draw" (see applyPrediction).
"use strict";

(() => {
  const ROUTES = {
    config: "/sam_block/annotate/config",
    save: "/sam_block/annotate/save",
    embed: "/sam2/embed_image",
    segment: "/sam2/segment_image",
  };
  // Tableau-like colours, distinct on most backgrounds.
  const PALETTE = [
    [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
    [140, 86, 75], [227, 119, 194], [23, 190, 207], [188, 189, 34], [127, 127, 127],
  ];
  const FILL_ALPHA = 150; // of 255, inside the mask; the outline is opaque
  const OUTLINE_PX = 3; // image pixels: the outermost one white (reads on any background), the others in colour
  const DRAG_MIN_CSS_PX = 5; // a pointer moved further than this between down and up draws a box

  const $ = (id) => document.getElementById(id);
  const els = {
    version: $("version"), file: $("file"), status: $("status"), error: $("error"), stage: $("stage"),
    dropHint: $("drop-hint"), canvas: $("canvas"), tags: $("tags"), label: $("label"), objects: $("objects"),
    newObject: $("new-object"), undo: $("undo"), clear: $("clear-object"), remove: $("delete-object"),
    exportCoco: $("export"), save: $("save"),
  };
  const ctx = els.canvas.getContext("2d");
  // A token given in the page's address (?token=...) is sent as a Bearer token on every API call.
  const token = new URLSearchParams(location.search).get("token");

  const state = {
    version: null,
    saveEnabled: false,
    image: null, // {name, width, height, bitmap, base64, embedding: {version, promise} | null}
    objects: [],
    current: null,
    nextId: 1,
    queue: [], // objects whose prompts changed since their last request
    inFlight: false,
    stalled: false, // the last request failed: wait for the next user action before retrying
    drag: null,
    masksDrawn: 0,
    idleWaiters: [],
  };

  // ---------------------------------------------------------------- server calls

  class ApiError extends Error {}

  function headers(json) {
    const result = {};
    if (json) result["Content-Type"] = "application/json";
    if (token) result.Authorization = `Bearer ${token}`;
    return result;
  }

  function describeErrorBody(data, text) {
    if (data && typeof data === "object") {
      if (typeof data.detail === "string") return data.detail;
      if (Array.isArray(data.detail)) {
        return data.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
      }
      if (typeof data.message === "string") return data.message;
    }
    return (text || "").slice(0, 300) || "(empty answer)";
  }

  async function api(path, body) {
    let response;
    try {
      response = await fetch(path, {
        method: body === undefined ? "GET" : "POST",
        headers: headers(body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(`Cannot reach the server at ${location.origin} (${err.message}). Is it still running?`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const hint = response.status === 401 || response.status === 403
        ? " Open the page with the address the server printed (it carries the token)." : "";
      throw new ApiError(`${path} failed (HTTP ${response.status}): ${describeErrorBody(data, text)}.${hint}`);
    }
    if (data === null || typeof data !== "object") throw new ApiError(`${path} did not answer JSON`);
    return data;
  }

  // ---------------------------------------------------------------- status and errors

  function setStatus(text, busy = false) {
    els.status.textContent = text;
    els.status.classList.toggle("busy", busy);
  }

  function showError(message) {
    els.error.textContent = message;
    els.error.hidden = false;
  }

  function clearError() {
    els.error.hidden = true;
    els.error.textContent = "";
  }

  function updateBusyFlag() {
    const busy = state.inFlight || (state.queue.length > 0 && !state.stalled);
    document.documentElement.dataset.requests = busy ? "busy" : "idle";
    if (!busy) {
      const waiters = state.idleWaiters.splice(0);
      waiters.forEach((resolve) => resolve());
    }
  }

  function whenIdle() {
    if (document.documentElement.dataset.requests !== "busy") return Promise.resolve();
    return new Promise((resolve) => state.idleWaiters.push(resolve));
  }

  // ---------------------------------------------------------------- COCO RLE

  // Column-major COCO RLE (the compressed string form) -> row-major 0/1 bytes, area and bbox.
  function decodeRle(rle) {
    const [height, width] = rle.size;
    const counts = rleCounts(rle.counts);
    const mask = new Uint8Array(width * height);
    let position = 0;
    let area = 0;
    let x0 = width, y0 = height, x1 = -1, y1 = -1;
    for (let i = 0; i < counts.length; i++) {
      const run = counts[i];
      if (i % 2 === 1 && run > 0) {
        const end = position + run; // exclusive
        if (end > width * height) throw new ApiError("the mask's RLE runs past its size");
        let x = (position / height) | 0;
        let y = position - x * height;
        for (let k = 0; k < run; k++) { // down the column, then on to the next one
          mask[y * width + x] = 1;
          if (++y === height) {
            y = 0;
            x++;
          }
        }
        area += run;
        const firstX = (position / height) | 0, lastX = ((end - 1) / height) | 0;
        x0 = Math.min(x0, firstX);
        x1 = Math.max(x1, lastX);
        if (firstX === lastX) {
          y0 = Math.min(y0, position % height);
          y1 = Math.max(y1, (end - 1) % height);
        } else {
          y0 = 0;
          y1 = height - 1;
        }
      }
      position += run;
    }
    // COCO's bbox: [x, y, width, height] of the mask's pixels (pycocotools.mask.toBbox)
    const bbox = area ? [x0, y0, x1 - x0 + 1, y1 - y0 + 1] : [0, 0, 0, 0];
    return { mask, width, height, area, bbox };
  }

  // The LEB128-like character string of pycocotools (rleToString) -> run lengths.
  function rleCounts(text) {
    if (Array.isArray(text)) return text.map(Number);
    const counts = [];
    let p = 0;
    while (p < text.length) {
      let value = 0, k = 0, more = 1, c = 0;
      while (more) {
        if (p >= text.length) throw new ApiError("the mask's RLE string is truncated");
        c = text.charCodeAt(p) - 48;
        value |= (c & 0x1f) << (5 * k);
        more = c & 0x20;
        p++;
        k++;
        if (!more && (c & 0x10) && 5 * k < 32) value |= -1 << (5 * k);
      }
      if (counts.length > 2) value += counts[counts.length - 2];
      counts.push(value);
    }
    return counts;
  }

  // An object's mask as a canvas the size of its bbox: colour fill plus an opaque outline
  // OUTLINE_PX wide, inside the mask (nothing outside the mask is painted): white, then colour.
  function maskCanvas(decoded, [r, g, b]) {
    const { mask, width, height, bbox } = decoded;
    const [bx, by, bw, bh] = bbox;
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, bw);
    canvas.height = Math.max(1, bh);
    if (!decoded.area) return canvas;
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(bw, bh);
    const data = pixels.data;
    // depth of each mask pixel of the bbox: 1 on the mask's border, 2..OUTLINE_PX for the rings
    // inside it (grown from the border only), 255 deeper
    const depth = new Uint8Array(bw * bh);
    let ring = [];
    for (let y = by; y < by + bh; y++) {
      for (let x = bx; x < bx + bw; x++) {
        const i = y * width + x;
        if (!mask[i]) continue;
        const edge = x === 0 || y === 0 || x === width - 1 || y === height - 1
          || !mask[i - 1] || !mask[i + 1] || !mask[i - width] || !mask[i + width];
        const j = (y - by) * bw + (x - bx);
        depth[j] = edge ? 1 : 255;
        if (edge) ring.push(j);
      }
    }
    for (let pass = 2; pass <= OUTLINE_PX; pass++) {
      const next = [];
      for (const j of ring) {
        const x = j % bw;
        for (const n of [x > 0 ? j - 1 : -1, x < bw - 1 ? j + 1 : -1, j - bw, j + bw]) {
          if (n >= 0 && n < depth.length && depth[n] === 255) {
            depth[n] = pass;
            next.push(n);
          }
        }
      }
      ring = next;
    }
    // one 32-bit write per pixel (RGBA bytes, little-endian as every browser's ImageData)
    const rgba = (red, green, blue, alpha) => ((alpha << 24) | (blue << 16) | (green << 8) | red) >>> 0;
    const white = rgba(255, 255, 255, 255), line = rgba(r, g, b, 255), fill = rgba(r, g, b, FILL_ALPHA);
    const out = new Uint32Array(data.buffer);
    for (let j = 0; j < depth.length; j++) {
      const d = depth[j];
      if (d) out[j] = d === 1 ? white : d <= OUTLINE_PX ? line : fill;
    }
    context.putImageData(pixels, 0, 0);
    return canvas;
  }

  // ---------------------------------------------------------------- drawing

  // Show the image as large as the stage allows (up to 4x), keeping the canvas's pixels the image's.
  function fitCanvas() {
    if (!state.image) return;
    const stage = els.stage.getBoundingClientRect();
    const availableWidth = Math.max(50, els.stage.clientWidth - 32);
    const availableHeight = Math.max(50, window.innerHeight - stage.top - 32);
    const scale = Math.min(availableWidth / state.image.width, availableHeight / state.image.height, 4);
    els.canvas.style.width = `${Math.floor(state.image.width * scale)}px`;
    els.canvas.style.height = `${Math.floor(state.image.height * scale)}px`;
  }

  function cssScale() {
    const rect = els.canvas.getBoundingClientRect();
    return rect.width ? els.canvas.width / rect.width : 1;
  }

  function render() {
    const image = state.image;
    if (!image) return;
    ctx.clearRect(0, 0, els.canvas.width, els.canvas.height);
    ctx.drawImage(image.bitmap, 0, 0);
    for (const obj of state.objects) {
      if (obj.mask && obj.mask.area) {
        ctx.drawImage(obj.mask.canvas, obj.mask.bbox[0], obj.mask.bbox[1]);
      }
    }
    const scale = cssScale();
    for (const obj of state.objects) {
      const mine = obj === state.current;
      const color = `rgb(${obj.color.join(",")})`;
      if (obj.box) {
        ctx.save();
        ctx.lineWidth = 2 * scale;
        ctx.setLineDash(mine ? [6 * scale, 4 * scale] : []);
        ctx.strokeStyle = color;
        const { x1, y1, x2, y2 } = obj.box;
        ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
        ctx.restore();
      }
      if (!mine) continue;
      for (const point of obj.points) {
        ctx.beginPath();
        ctx.arc(point.x, point.y, 5 * scale, 0, 2 * Math.PI);
        ctx.fillStyle = point.positive ? "#12b76a" : "#f04438";
        ctx.fill();
        ctx.lineWidth = 1.5 * scale;
        ctx.strokeStyle = "#ffffff";
        ctx.stroke();
      }
    }
    if (state.drag && state.drag.box) {
      const { x1, y1, x2, y2 } = state.drag.box;
      ctx.save();
      ctx.lineWidth = 1.5 * scale;
      ctx.setLineDash([4 * scale, 3 * scale]);
      ctx.strokeStyle = "#ffffff";
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      ctx.restore();
    }
    renderTags();
  }

  // Each mask's label, in the object's colour, at the top left of its box: HTML over the canvas
  // (the canvas itself shows only the image, the masks and the prompts).
  function renderTags() {
    const tags = [];
    const rect = els.canvas.getBoundingClientRect();
    const perPixel = els.canvas.width ? rect.width / els.canvas.width : 1;
    for (const obj of state.objects) {
      if (!obj.mask || !obj.mask.area) continue;
      const [bx, by] = obj.mask.bbox;
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = `#${obj.id} ${obj.label}`;
      tag.style.background = `rgb(${obj.color.join(",")})`;
      tag.style.left = `${els.canvas.offsetLeft + bx * perPixel}px`;
      const top = els.canvas.offsetTop + by * perPixel;
      tag.style.top = `${top}px`;
      if (by * perPixel >= 22) tag.classList.add("above"); // room above the box: sit on its edge
      tags.push(tag);
    }
    els.tags.replaceChildren(...tags);
  }

  function renderList() {
    els.objects.replaceChildren();
    for (const obj of state.objects) {
      const item = document.createElement("li");
      item.dataset.objectId = String(obj.id);
      item.classList.toggle("current", obj === state.current);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = `rgb(${obj.color.join(",")})`;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = `#${obj.id} ${obj.label}`;
      const score = document.createElement("span");
      score.className = "score";
      score.title = "the mask's predicted IoU";
      score.textContent = obj.pending ? "…" : obj.mask ? obj.mask.score.toFixed(3) : "–";
      const remove = document.createElement("button");
      remove.className = "remove";
      remove.type = "button";
      remove.title = "delete this object";
      remove.setAttribute("aria-label", `delete object ${obj.id}`);
      remove.textContent = "×";
      remove.addEventListener("click", (event) => {
        event.stopPropagation();
        deleteObject(obj);
      });
      item.addEventListener("click", () => selectObject(obj));
      item.append(swatch, name, score, remove);
      els.objects.append(item);
    }
    const annotated = state.objects.some((obj) => obj.mask && obj.mask.area);
    els.exportCoco.disabled = !annotated;
    els.save.disabled = !annotated;
  }

  // ---------------------------------------------------------------- objects and prompts

  function newObject() {
    const id = state.nextId++;
    const obj = {
      id,
      label: els.label.value.trim() || "object",
      color: PALETTE[(id - 1) % PALETTE.length],
      points: [],
      box: null,
      history: [],
      mask: null,
      revision: 0,
      pending: false,
      clickAt: null, // performance.now() of the pointer action that made the latest revision
    };
    state.objects.push(obj);
    state.current = obj;
    renderList();
    render();
    return obj;
  }

  function hasPrompt(obj) {
    return obj.points.length > 0 || obj.box !== null;
  }

  function currentObject() {
    return state.current || newObject();
  }

  function selectObject(obj) {
    state.current = obj;
    els.label.value = obj.label;
    renderList();
    render();
  }

  function changePrompts(obj, change, clickAt = null) {
    obj.history.push({ points: obj.points.slice(), box: obj.box });
    change(obj);
    obj.clickAt = clickAt;
    promptsChanged(obj);
  }

  function promptsChanged(obj) {
    obj.revision++;
    if (!hasPrompt(obj)) {
      obj.mask = null;
      obj.pending = false;
      state.queue = state.queue.filter((other) => other !== obj);
    } else {
      obj.pending = true;
      if (!state.queue.includes(obj)) state.queue.push(obj);
    }
    state.stalled = false;
    renderList();
    render();
    updateBusyFlag();
    pump();
  }

  function nextObject() {
    if (!state.image) return;
    if (state.current && !hasPrompt(state.current)) return; // already on a fresh object
    newObject();
    setStatus(`Object #${state.current.id}: click on it.`);
  }

  function undo() {
    const obj = state.current;
    if (!obj || !obj.history.length) return;
    const previous = obj.history.pop();
    obj.points = previous.points;
    obj.box = previous.box;
    obj.clickAt = performance.now();
    promptsChanged(obj);
  }

  function clearObject() {
    const obj = state.current;
    if (!obj || !hasPrompt(obj)) return;
    changePrompts(obj, (o) => {
      o.points = [];
      o.box = null;
    });
  }

  function deleteObject(obj = state.current) {
    if (!obj) return;
    state.objects = state.objects.filter((other) => other !== obj);
    state.queue = state.queue.filter((other) => other !== obj);
    if (state.current === obj) state.current = state.objects[state.objects.length - 1] || null;
    if (!state.current && state.image) newObject();
    if (state.current) els.label.value = state.current.label;
    renderList();
    render();
    updateBusyFlag();
  }

  // ---------------------------------------------------------------- requests

  function segmentRequest(obj, imageId) {
    const prompt = {};
    if (obj.points.length) {
      prompt.points = obj.points.map((p) => ({ x: p.x, y: p.y, positive: p.positive }));
    }
    if (obj.box) {
      const { x1, y1, x2, y2 } = obj.box;
      prompt.box = { x: (x1 + x2) / 2, y: (y1 + y2) / 2, width: x2 - x1, height: y2 - y1 };
    }
    return {
      image: { type: "base64", value: state.image.base64 },
      image_id: imageId,
      sam2_version_id: state.version,
      prompts: { prompts: [prompt] },
      // one click is ambiguous: let SAM propose three masks and keep the best; more prompts are not
      multimask_output: obj.points.length === 1 && !obj.box,
      save_logits_to_cache: true,
      load_logits_from_cache: true,
      format: "rle",
    };
  }

  function embed() {
    const image = state.image;
    const version = state.version;
    const started = performance.now();
    setStatus(`Embedding ${image.name} with ${version}…`, true);
    els.stage.classList.add("embedding");
    const promise = api(ROUTES.embed, {
      image: { type: "base64", value: image.base64 },
      sam2_version_id: version,
    }).then((data) => {
      if (typeof data.image_id !== "string" || !data.image_id) {
        throw new ApiError(`${ROUTES.embed} answered without an image_id`);
      }
      return data.image_id;
    });
    image.embedding = { version, promise };
    promise.then(
      () => {
        if (state.image !== image) return;
        const seconds = ((performance.now() - started) / 1000).toFixed(2);
        setStatus(`${image.name} (${image.width} × ${image.height}) embedded with ${version} in ${seconds} s: click on an object.`);
      },
      (err) => {
        if (image.embedding && image.embedding.promise === promise) image.embedding = null;
        if (state.image === image) {
          setStatus("Embedding failed.");
          showError(err.message);
        }
      },
    ).finally(() => {
      if (state.image === image) els.stage.classList.remove("embedding");
    });
    return promise;
  }

  function imageIdFor(image) {
    if (!image.embedding || image.embedding.version !== state.version) embed();
    return image.embedding.promise;
  }

  async function pump() {
    if (state.inFlight || state.stalled) return;
    const obj = state.queue.shift();
    if (!obj) {
      updateBusyFlag();
      return;
    }
    const image = state.image;
    const revision = obj.revision;
    const clickAt = obj.clickAt;
    state.inFlight = true;
    updateBusyFlag();
    let failed = false;
    try {
      const imageId = await imageIdFor(image);
      if (state.image !== image || !state.objects.includes(obj)) return;
      setStatus(`Segmenting object #${obj.id}…`, true);
      const sentAt = performance.now();
      const data = await api(ROUTES.segment, segmentRequest(obj, imageId));
      if (state.image !== image || !state.objects.includes(obj)) return;
      const timing = revision === obj.revision && clickAt !== null ? { clickAt, sentAt, answeredAt: performance.now() } : null;
      applyPrediction(obj, data, timing);
      clearError();
      setStatus(`Object #${obj.id} “${obj.label}”: score ${obj.mask.score.toFixed(3)}.`);
    } catch (err) {
      failed = true;
      state.stalled = true;
      // the object keeps its prompts and is sent again on the next change
      if (state.objects.includes(obj) && !state.queue.includes(obj)) state.queue.unshift(obj);
      obj.pending = false;
      setStatus("Request failed.");
      showError(err instanceof ApiError ? err.message : `Unexpected error: ${err.message}`);
      renderList();
    } finally {
      state.inFlight = false;
      updateBusyFlag();
      if (!failed) pump();
    }
  }

  // `timing` ({clickAt, sentAt, answeredAt} of performance.now()) when the answer is for the latest
  // prompt of a pointer action: then the mask drawn is measured.
  function applyPrediction(obj, data, timing) {
    const predictions = Array.isArray(data.predictions) ? data.predictions : [];
    let best = null;
    for (const prediction of predictions) {
      if (!best || prediction.confidence > best.confidence) best = prediction;
    }
    if (best === null) {
      obj.mask = { rle: null, score: 0, area: 0, bbox: [0, 0, 0, 0] };
    } else {
      const rle = best.masks;
      if (!rle || !Array.isArray(rle.size) || (typeof rle.counts !== "string" && !Array.isArray(rle.counts))) {
        throw new ApiError(`${ROUTES.segment} did not answer an RLE mask (format "rle")`);
      }
      const [height, width] = rle.size;
      if (height !== state.image.height || width !== state.image.width) {
        throw new ApiError(
          `the mask is ${width} × ${height} but the image is ${state.image.width} × ${state.image.height}`);
      }
      const decoded = decodeRle(rle);
      obj.mask = {
        rle: { size: rle.size.slice(), counts: rle.counts }, // exactly as the server sent it
        score: Number(best.confidence),
        area: decoded.area,
        bbox: decoded.bbox,
        canvas: maskCanvas(decoded, obj.color),
      };
    }
    obj.pending = state.queue.includes(obj);
    renderList();
    render();
    state.masksDrawn++;
    document.documentElement.dataset.masksDrawn = String(state.masksDrawn);
    if (timing !== null) {
      const drawnAt = performance.now();
      // sam:segment-request = building the request (the image re-sent), HTTP, reading the answer;
      // sam:mask-decode-draw = RLE decoding, the mask's bitmap and repainting the canvas
      performance.measure("sam:segment-request", { start: timing.sentAt, end: timing.answeredAt });
      performance.measure("sam:mask-decode-draw", { start: timing.answeredAt, end: drawnAt });
      // the frame after this one shows the mask
      requestAnimationFrame(() => {
        performance.measure("sam:click-to-mask", { start: timing.clickAt, end: performance.now() });
      });
    }
  }

  // ---------------------------------------------------------------- opening images

  function bytesToBase64(bytes) {
    let binary = "";
    const chunk = 0x8000;
    for (let i = 0; i < bytes.length; i += chunk) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + chunk));
    }
    return btoa(binary);
  }

  async function openFile(file) {
    if (!file) return;
    clearError();
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch (err) {
      showError(`${file.name} could not be opened as an image (${err.message || err}).`);
      return;
    }
    const bytes = new Uint8Array(await file.arrayBuffer());
    state.image = {
      name: file.name,
      width: bitmap.width,
      height: bitmap.height,
      bitmap,
      base64: bytesToBase64(bytes),
      embedding: null,
    };
    state.objects = [];
    state.queue = [];
    state.current = null;
    state.nextId = 1;
    state.stalled = false;
    els.canvas.width = bitmap.width;
    els.canvas.height = bitmap.height;
    els.canvas.hidden = false;
    els.dropHint.hidden = true;
    fitCanvas();
    newObject();
    embed();
  }

  // ---------------------------------------------------------------- export and save

  function cocoDocument() {
    const image = state.image;
    const annotated = state.objects.filter((obj) => obj.mask && obj.mask.area);
    const categories = [];
    const categoryIds = new Map();
    for (const obj of annotated) {
      if (!categoryIds.has(obj.label)) {
        categoryIds.set(obj.label, categories.length + 1);
        categories.push({ id: categories.length + 1, name: obj.label, supercategory: "" });
      }
    }
    return {
      info: {
        description: "sam_block click-to-segment",
        date_created: new Date().toISOString(),
        sam2_version: state.version,
      },
      licenses: [],
      images: [{ id: 1, file_name: image.name, width: image.width, height: image.height }],
      categories,
      annotations: annotated.map((obj, index) => ({
        id: index + 1,
        image_id: 1,
        category_id: categoryIds.get(obj.label),
        segmentation: { size: obj.mask.rle.size, counts: obj.mask.rle.counts },
        area: obj.mask.area,
        bbox: obj.mask.bbox,
        score: obj.mask.score,
        iscrowd: 0,
      })),
    };
  }

  function cocoFileName() {
    const stem = state.image.name.replace(/\.[^.]*$/, "") || "image";
    return `${stem}.coco.json`;
  }

  async function exportCoco() {
    if (!state.image) return;
    if (document.documentElement.dataset.requests === "busy") {
      setStatus("Waiting for the last masks…", true);
      await whenIdle();
    }
    const blob = new Blob([JSON.stringify(cocoDocument())], { type: "application/json" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = cocoFileName();
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    setStatus(`Exported ${link.download}.`);
  }

  async function saveCoco() {
    if (!state.image || !state.saveEnabled) return;
    await whenIdle();
    try {
      const answer = await api(ROUTES.save, { file_name: cocoFileName(), coco: cocoDocument() });
      clearError();
      setStatus(`Saved ${answer.file_name} in the server's save directory.`);
    } catch (err) {
      setStatus("Save failed.");
      showError(err.message);
    }
  }

  // ---------------------------------------------------------------- input events

  function imagePoint(event) {
    const rect = els.canvas.getBoundingClientRect();
    const x = (event.clientX - rect.left) * (els.canvas.width / rect.width);
    const y = (event.clientY - rect.top) * (els.canvas.height / rect.height);
    return {
      x: Math.min(Math.max(x, 0), els.canvas.width),
      y: Math.min(Math.max(y, 0), els.canvas.height),
    };
  }

  els.canvas.addEventListener("contextmenu", (event) => event.preventDefault());

  els.canvas.addEventListener("pointerdown", (event) => {
    if (!state.image || (event.button !== 0 && event.button !== 2)) return;
    event.preventDefault(); // no text selection; this also keeps the focus where it was...
    if (document.activeElement instanceof HTMLElement) document.activeElement.blur(); // ...so release it: keys act on the image
    els.canvas.setPointerCapture(event.pointerId);
    state.drag = {
      start: imagePoint(event),
      clientX: event.clientX,
      clientY: event.clientY,
      negative: event.button === 2 || event.shiftKey,
      box: null,
    };
  });

  els.canvas.addEventListener("pointermove", (event) => {
    const drag = state.drag;
    if (!drag) return;
    const moved = Math.hypot(event.clientX - drag.clientX, event.clientY - drag.clientY);
    if (drag.box || moved > DRAG_MIN_CSS_PX) {
      const here = imagePoint(event);
      drag.box = {
        x1: Math.min(drag.start.x, here.x), y1: Math.min(drag.start.y, here.y),
        x2: Math.max(drag.start.x, here.x), y2: Math.max(drag.start.y, here.y),
      };
      render();
    }
  });

  els.canvas.addEventListener("pointerup", (event) => {
    const drag = state.drag;
    if (!drag) return;
    state.drag = null;
    const clickAt = performance.now();
    const obj = currentObject();
    if (drag.box && drag.box.x2 - drag.box.x1 >= 1 && drag.box.y2 - drag.box.y1 >= 1) {
      const box = drag.box;
      changePrompts(obj, (o) => { o.box = box; }, clickAt);
    } else if (!drag.box) {
      const { x, y } = drag.start;
      changePrompts(obj, (o) => { o.points = o.points.concat([{ x, y, positive: !drag.negative }]); }, clickAt);
    } else {
      render();
    }
  });

  els.canvas.addEventListener("pointercancel", () => {
    state.drag = null;
    render();
  });

  document.addEventListener("keydown", (event) => {
    const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement;
    if (event.key === "Enter" && (!typing || event.target === els.label)) {
      event.preventDefault();
      nextObject();
    } else if (typing) {
      return;
    } else if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") {
      event.preventDefault();
      undo();
    } else if (event.key === "Delete" || event.key === "Backspace") {
      event.preventDefault();
      deleteObject();
    } else if (event.key === "Escape" && state.drag) {
      state.drag = null;
      render();
    }
  });

  els.label.addEventListener("input", () => {
    if (!state.current) return;
    state.current.label = els.label.value.trim() || "object";
    renderList();
    renderTags();
  });

  els.newObject.addEventListener("click", nextObject);
  els.undo.addEventListener("click", undo);
  els.clear.addEventListener("click", clearObject);
  els.remove.addEventListener("click", () => deleteObject());
  els.exportCoco.addEventListener("click", exportCoco);
  els.save.addEventListener("click", saveCoco);
  els.file.addEventListener("change", () => {
    openFile(els.file.files[0]);
    els.file.value = "";
  });

  els.version.addEventListener("change", () => {
    state.version = els.version.value;
    if (!state.image) return;
    state.image.embedding = null;
    // every object is segmented again with the new model
    for (const obj of state.objects) {
      if (hasPrompt(obj)) {
        obj.clickAt = null;
        promptsChanged(obj);
      }
    }
    if (!state.queue.length) embed();
  });

  for (const name of ["dragenter", "dragover"]) {
    document.addEventListener(name, (event) => {
      event.preventDefault();
      els.stage.classList.add("dragover");
    });
  }
  document.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) els.stage.classList.remove("dragover");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    els.stage.classList.remove("dragover");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) openFile(file);
  });

  window.addEventListener("resize", () => {
    fitCanvas();
    render();
  });

  // ---------------------------------------------------------------- start

  async function start() {
    document.documentElement.dataset.requests = "idle";
    document.documentElement.dataset.masksDrawn = "0";
    try {
      const config = await api(ROUTES.config);
      els.version.replaceChildren();
      for (const version of config.versions) {
        const option = document.createElement("option");
        option.value = version.name;
        option.textContent = version.ready ? version.name : `${version.name} (${version.note})`;
        option.disabled = !version.available;
        els.version.append(option);
      }
      // ?version=NAME in the page's address picks the model (when the server has it)
      const asked = new URLSearchParams(location.search).get("version");
      const usable = config.versions.filter((v) => v.available).map((v) => v.name);
      state.version = asked && usable.includes(asked) ? asked : config.default_version;
      els.version.value = state.version;
      state.saveEnabled = Boolean(config.save);
      els.save.hidden = !state.saveEnabled;
    } catch (err) {
      showError(err.message);
    }
  }

  start();
})();
