// A run's page: small images scaled up by a whole factor without smoothing; an incomplete run reloads.
"use strict";
const TARGET_WIDTH = 400;  // so that three phase grids stand side by side
const RELOAD_MS = 10000;

function scaleUp(image) {
  const factor = Math.max(1, Math.floor(TARGET_WIDTH / image.naturalWidth));
  image.style.width = `${image.naturalWidth * factor}px`;
}

for (const image of document.querySelectorAll("img.pixels")) {
  if (image.complete && image.naturalWidth) scaleUp(image);
  else image.addEventListener("load", () => scaleUp(image));
}
if (document.querySelector("#status[data-incomplete]")) setTimeout(() => location.reload(), RELOAD_MS);
