// Try it: load an image, brush a mask over it, and ask the server for the model's and Telea's fills.
"use strict";
const DISPLAY_WIDTH = 512;  // CSS pixels the picture is shown at, about
const UNDO_LIMIT = 50;

const picture = document.getElementById("picture");
const mask = document.getElementById("mask");
const message = document.getElementById("message");
const brush = document.getElementById("brush");
const eraser = document.getElementById("eraser");
let source = null;  // the bytes the server decodes: the uploaded file, or a test image's PNG
let undo = [];
let lastPoint = null;

function say(text, isError = false) {
  message.textContent = text;
  message.classList.toggle("error", isError);
}

async function refusal(response) {
  try { return (await response.json()).error; } catch { return `the server answered ${response.status}`; }
}

// Small pictures are shown a whole number of times larger, large ones smaller.
function displayScale(width) {
  return width < DISPLAY_WIDTH ? Math.floor(DISPLAY_WIDTH / width) : DISPLAY_WIDTH / width;
}

function showAt(element, width, height) {
  const scale = displayScale(width);
  element.style.width = `${width * scale}px`;
  element.style.height = `${height * scale}px`;
}

async function loadPicture(bytes, decodedPng) {
  const image = await createImageBitmap(decodedPng);
  for (const canvas of [picture, mask]) {
    canvas.width = image.width;
    canvas.height = image.height;
    showAt(canvas, image.width, image.height);
  }
  picture.getContext("2d").drawImage(image, 0, 0);
  mask.getContext("2d").clearRect(0, 0, mask.width, mask.height);
  source = bytes;
  undo = [];
  for (const result of document.querySelectorAll("img.result")) result.removeAttribute("src");
  document.getElementById("stage").dataset.loaded = `${image.width}x${image.height}`;
  say(`${image.width}×${image.height} pixels: paint over what should go, then press Fill.`);
}

async function loadTestImages() {
  const holder = document.getElementById("test-images");
  holder.textContent = "";
  const response = await fetch(`/api/test-images?${new URLSearchParams({model: document.getElementById("model").value})}`);
  if (!response.ok) return say(await refusal(response), true);
  for (const url of (await response.json()).images) {
    const thumb = document.createElement("img");
    thumb.src = url;
    thumb.alt = "a test image";
    thumb.addEventListener("click", async () => {
      for (const other of holder.querySelectorAll("img")) other.classList.toggle("chosen", other === thumb);
      const png = await (await fetch(url)).blob();
      await loadPicture(png, png);
    });
    holder.append(thumb);
  }
  if (!source && holder.firstChild) holder.firstChild.click();
}

async function upload(file) {
  const form = new FormData();
  form.append("image", file);
  say("reading the image…");
  const response = await fetch("/api/decode", {method: "POST", body: form});
  if (!response.ok) return say(await refusal(response), true);
  await loadPicture(file, await response.blob());
}

function imagePoint(event) {
  const box = mask.getBoundingClientRect();
  return {x: (event.clientX - box.left) * mask.width / box.width, y: (event.clientY - box.top) * mask.height / box.height};
}

function paint(from, to) {
  const context = mask.getContext("2d");
  context.globalCompositeOperation = eraser.getAttribute("aria-pressed") === "true" ? "destination-out" : "source-over";
  context.strokeStyle = "rgb(255, 0, 0)";
  context.lineCap = context.lineJoin = "round";
  context.lineWidth = Number(brush.value) / displayScale(mask.width);  // the slider counts screen pixels
  context.beginPath();
  context.moveTo(from.x, from.y);
  context.lineTo(to.x, to.y);
  context.stroke();
}

mask.addEventListener("pointerdown", event => {
  if (!source) return;
  mask.setPointerCapture(event.pointerId);
  undo.push(mask.getContext("2d").getImageData(0, 0, mask.width, mask.height));
  if (undo.length > UNDO_LIMIT) undo.shift();
  lastPoint = imagePoint(event);
  paint(lastPoint, lastPoint);
});
mask.addEventListener("pointermove", event => {
  if (!lastPoint) return;
  const point = imagePoint(event);
  paint(lastPoint, point);
  lastPoint = point;
});
for (const type of ["pointerup", "pointercancel"]) mask.addEventListener(type, () => { lastPoint = null; });

// White where painted (more than half opaque), black elsewhere: the mask `infill` reads.
function maskPng() {
  const painted = mask.getContext("2d").getImageData(0, 0, mask.width, mask.height);
  const pixels = painted.data;
  for (let i = 0; i < pixels.length; i += 4) {
    const level = pixels[i + 3] > 127 ? 255 : 0;
    pixels[i] = pixels[i + 1] = pixels[i + 2] = level;
    pixels[i + 3] = 255;
  }
  const canvas = document.createElement("canvas");
  canvas.width = mask.width;
  canvas.height = mask.height;
  canvas.getContext("2d").putImageData(painted, 0, 0);
  return new Promise(resolve => canvas.toBlob(resolve, "image/png"));
}

async function fill() {
  if (!source) return say("pick a test image or upload one first", true);
  const button = document.getElementById("fill");
  const form = new FormData();
  form.append("model", document.getElementById("model").value);
  form.append("poisson", document.getElementById("poisson").checked);
  form.append("image", source, "image");
  form.append("mask", await maskPng(), "mask.png");
  button.disabled = true;
  say("filling…");
  try {
    const response = await fetch("/api/fill", {method: "POST", body: form});
    if (!response.ok) return say(await refusal(response), true);
    const filled = await response.json();
    const before = picture.toDataURL("image/png");
    for (const method of ["model", "telea"]) {
      const result = document.getElementById(`result-${method}`);
      result.dataset.before = before;
      result.dataset.after = filled[method];
      result.src = filled[method];
      showAt(result, filled.width, filled.height);
      document.getElementById(`download-${method}`).href = filled[method];
    }
    say(`filled at ${filled.width}×${filled.height}; "before / after" shows the input again.`);
  } finally {
    button.disabled = false;
  }
}

brush.addEventListener("input", () => { document.getElementById("brush-size").textContent = brush.value; });
eraser.addEventListener("click", () => {
  eraser.setAttribute("aria-pressed", eraser.getAttribute("aria-pressed") === "true" ? "false" : "true");
});
document.getElementById("undo").addEventListener("click", () => {
  if (undo.length) mask.getContext("2d").putImageData(undo.pop(), 0, 0);
});
document.getElementById("clear").addEventListener("click", () => {
  undo.push(mask.getContext("2d").getImageData(0, 0, mask.width, mask.height));
  mask.getContext("2d").clearRect(0, 0, mask.width, mask.height);
});
for (const toggle of document.querySelectorAll("button.toggle")) {
  toggle.addEventListener("click", () => {
    const result = document.getElementById(toggle.dataset.target);
    if (result.dataset.after) result.src = result.src === result.dataset.after ? result.dataset.before : result.dataset.after;
  });
}
document.getElementById("upload").addEventListener("change", event => {
  if (event.target.files.length) upload(event.target.files[0]);
});
document.getElementById("fill").addEventListener("click", fill);
document.getElementById("model").addEventListener("change", loadTestImages);
loadTestImages();
