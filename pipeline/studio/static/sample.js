// Sample: a grid of a DCGAN's images from a seed, and a slider along the great circle between two latents.
"use strict";
const value = id => document.getElementById(id).value;
const message = document.getElementById("message");

function show(image, url) {
  fetch(url).then(async response => {
    if (!response.ok) {
      message.textContent = (await response.json()).error;
      return;
    }
    message.textContent = "";
    image.src = URL.createObjectURL(await response.blob());
  });
}

function scaleUp(image) {
  image.style.width = `${image.naturalWidth * Math.max(1, Math.floor(512 / image.naturalWidth))}px`;
}

function drawGrid() {
  const query = new URLSearchParams({model: value("model"), seed: value("seed"), count: value("count")});
  show(document.getElementById("grid"), `/api/sample.png?${query}`);
}

function drawWalk() {
  document.getElementById("t-value").textContent = value("t");
  const query = new URLSearchParams({model: value("model"), seed_a: value("seed-a"), seed_b: value("seed-b"),
                                    t: value("t")});
  show(document.getElementById("walk"), `/api/walk.png?${query}`);
}

if (document.getElementById("model")) {
  for (const id of ["grid", "walk"]) {
    const image = document.getElementById(id);
    image.addEventListener("load", () => scaleUp(image));
  }
  document.getElementById("draw").addEventListener("click", drawGrid);
  for (const id of ["t", "seed-a", "seed-b"]) document.getElementById(id).addEventListener("input", drawWalk);
  document.getElementById("model").addEventListener("change", () => { drawGrid(); drawWalk(); });
  drawGrid();
  drawWalk();
}
