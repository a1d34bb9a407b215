// The runs table: filter by text and family; while a run trains, refresh the table.
"use strict";
const REFRESH_MS = 5000;

function applyFilter() {
  const text = document.getElementById("filter").value.trim().toLowerCase();
  const family = document.getElementById("family").value;
  for (const row of document.querySelectorAll("#runs tbody tr")) {
    const shown = (!family || row.dataset.family === family) && row.textContent.toLowerCase().includes(text);
    row.classList.toggle("hidden", !shown);
  }
}

async function refresh() {
  if (!document.querySelector("#runs tr[data-incomplete]")) return;
  const ticked = new Set([...document.querySelectorAll("#runs input:checked")].map(box => box.value));
  const response = await fetch("/runs-table");
  if (response.ok) {
    document.getElementById("runs-holder").innerHTML = await response.text();
    for (const box of document.querySelectorAll("#runs input[name=run]")) box.checked = ticked.has(box.value);
    applyFilter();
  }
}

if (document.getElementById("runs")) {
  document.getElementById("filter").addEventListener("input", applyFilter);
  document.getElementById("family").addEventListener("change", applyFilter);
  setInterval(refresh, REFRESH_MS);
}
