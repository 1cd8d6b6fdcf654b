"""The report page: inline CSS and a small inline script (sortable tables and galleries), no external URL at all.

`{{title}}` and `{{body}}` are filled in by report.py (plain replacement: the CSS and the script hold braces). The
Content-Security-Policy lets the page load nothing but its own inline code and pictures, so a report that tried to
reach the network would fail loudly in the browser test instead of quietly depending on it.
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data: file: 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{{title}}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 2rem 3rem; color: #1d1d1f; background: #fafafa; }
h1 { margin: 1.2rem 0 .4rem; font-size: 1.6rem; }
h2 { margin: 2rem 0 .6rem; font-size: 1.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
nav a { margin-right: 1rem; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable th { cursor: pointer; user-select: none; background: #f0f0f3; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; }
table.confusion td.diagonal { background: #e3f4e3; font-weight: 600; }
table.confusion td.off { background: #fbe5e5; }
.note { color: #666; }
.controls { margin: .4rem 0; }
.gallery { display: flex; flex-wrap: wrap; gap: .8rem; }
.card { margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .5rem; }
table.facts th { text-align: left; background: #f0f0f3; font-weight: 500; }
.card figcaption, .card .caption { font-size: 12px; max-width: 16rem; overflow-wrap: anywhere; }
.pictures { display: flex; gap: .4rem; }
.pic { position: relative; display: inline-block; }
.pic img { display: block; width: 112px; height: auto; image-rendering: pixelated; }
.pic .box { position: absolute; border: 2px solid #00e676; box-sizing: border-box; }
.pic span.tag { display: block; font-size: 11px; color: #555; text-align: center; }
</style>
</head>
<body>
{{body}}
<script>
"use strict";
function sortKey(text) {
  if (text === null || text === undefined || text === "") return null;
  const number = Number(text);
  return Number.isNaN(number) ? text : number;
}
function compareKeys(a, b, sign) {
  if (a === null || b === null) return (a === null) - (b === null);  // undefined values last, either way
  if (typeof a === "number" && typeof b === "number") return (a - b) * sign;
  return String(a).localeCompare(String(b), undefined, { numeric: true }) * sign;
}
for (const table of document.querySelectorAll("table.sortable")) {
  const headers = Array.from(table.tHead.rows[0].cells);
  headers.forEach((header, column) => {
    header.addEventListener("click", () => {
      const sign = header.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      headers.forEach((other) => other.removeAttribute("aria-sort"));
      header.setAttribute("aria-sort", sign > 0 ? "ascending" : "descending");
      const value = (row) => {
        const cell = row.cells[column];
        return sortKey(cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent.trim());
      };
      const body = table.tBodies[0];
      body.append(...Array.from(body.rows).sort((a, b) => compareKeys(value(a), value(b), sign)));
    });
  });
}
for (const select of document.querySelectorAll("select.gallery-sort")) {
  const gallery = document.getElementById(select.getAttribute("data-gallery"));
  select.addEventListener("change", () => {
    const [key, direction] = select.value.split(":");
    const sign = direction === "desc" ? -1 : 1;
    const value = (card) => sortKey(card.getAttribute("data-sort-" + key));
    gallery.append(...Array.from(gallery.children).sort((a, b) => compareKeys(value(a), value(b), sign)));
  });
}
</script>
</body>
</html>
"""
