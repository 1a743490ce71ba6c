// Meridian console: the few things server-rendered HTML cannot do. Loaded as a static
// file (the Content-Security-Policy allows no inline script). It never parses HTML:
// every node it makes is built with createElement/textContent.
"use strict";

// Copy buttons: <button data-copy="text">. navigator.clipboard needs a secure context;
// elsewhere the command's read-only input next to the button is selected instead.
document.addEventListener("click", function (e) {
  var button = e.target.closest ? e.target.closest("button[data-copy]") : null;
  if (!button) return;
  e.preventDefault();
  var text = button.getAttribute("data-copy");
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(function () { button.textContent = "Copied"; });
  } else {
    var input = button.parentNode.querySelector("input[readonly]");
    if (input) { input.focus(); input.select(); }
  }
});

// Live parts: an element with data-live="<url>" and data-every="<ms>" is refreshed from
// that JSON while the page is open (paused while it is hidden). The replication matrix
// stops polling once every region is complete.
function poll(el, update) {
  var url = el.getAttribute("data-live");
  var every = parseInt(el.getAttribute("data-every"), 10) || 2000;
  function tick() {
    if (document.hidden) { setTimeout(tick, every); return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (data) { if (!update(el, data)) { setTimeout(tick, every); } })
      .catch(function () { setTimeout(tick, every * 2); });
  }
  setTimeout(tick, every);
}

function updateMatrix(table, data) {
  var holders = {};
  data.blobs.forEach(function (b) { holders[b.digest] = b.holders; });
  table.querySelectorAll("td.cell").forEach(function (td) {
    var list = holders[td.getAttribute("data-blob")] || [];
    var held = list.indexOf(td.getAttribute("data-region")) >= 0;
    td.classList.toggle("have", held);
    td.classList.toggle("missing", !held);
    td.textContent = held ? "\u2713" : "\u2026";
  });
  var byName = {};
  data.regions.forEach(function (r) { byName[r.name] = r; });
  table.querySelectorAll("td.total").forEach(function (td) {
    var r = byName[td.getAttribute("data-region")];
    if (!r) return;
    td.textContent = r.present + " / " + data.total;
    td.setAttribute("data-complete", r.complete ? "true" : "false");
  });
  table.setAttribute("data-complete", data.complete ? "true" : "false");
  return data.complete;
}

var SVG = "http://www.w3.org/2000/svg";
var COLORS = ["#2456c9", "#c9242f", "#1e7d3a", "#b36b00", "#6b2bb3", "#00838f"];
var lagSamples = {}; // "region #node" -> recent apply lags
var rateSamples = {}; // region -> recent transfer rates (its nodes summed)

function chart(title, series, unit) {
  var w = 600, h = 120, pad = 4;
  var wrap = document.createElement("figure");
  var caption = document.createElement("figcaption");
  var max = 1;
  Object.keys(series).forEach(function (k) { series[k].forEach(function (v) { if (v > max) max = v; }); });
  caption.textContent = title + " (max " + Math.round(max) + unit + ")";
  var svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 " + w + " " + h);
  svg.setAttribute("class", "chart");
  Object.keys(series).sort().forEach(function (name, i) {
    var span = Math.max(series[name].length - 1, 1);
    var points = series[name].map(function (v, j) {
      var x = pad + j * (w - 2 * pad) / span;
      var y = h - pad - v / max * (h - 2 * pad);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    var line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", COLORS[i % COLORS.length]);
    line.setAttribute("stroke-width", "2");
    line.setAttribute("data-region", name);
    svg.appendChild(line);
  });
  wrap.appendChild(caption);
  wrap.appendChild(svg);
  return wrap;
}

// The regions table and chart: a row and a lag line per node (a region may have
// several), the transfer rate summed per region.
function updateRegions(el, data) {
  data.regions.forEach(function (r) {
    document.querySelectorAll("#regions tr[data-node]").forEach(function (tr) {
      if (tr.getAttribute("data-node") !== String(r.node)) return;
      var cells = { applied: r.applied, lag: r.lag };
      Object.keys(cells).forEach(function (c) { var td = tr.querySelector("td." + c); if (td) td.textContent = String(cells[c]); });
    });
    var key = r.name + " #" + r.node;
    var s = lagSamples[key] || (lagSamples[key] = []);
    s.push(r.lag);
    if (s.length > 90) s.shift();
  });
  var rates = {};
  data.replication.forEach(function (q) { rates[q.name] = (rates[q.name] || 0) + q.rate; });
  Object.keys(rates).forEach(function (name) {
    var s = rateSamples[name] || (rateSamples[name] = []);
    s.push(rates[name]);
    if (s.length > 90) s.shift();
  });
  while (el.firstChild) el.removeChild(el.firstChild);
  el.appendChild(chart("Apply lag", lagSamples, " entries"));
  el.appendChild(legend(lagSamples));
  el.appendChild(chart("Transfer rate", rateSamples, " B/s"));
  el.appendChild(legend(rateSamples));
  var first = lagSamples[Object.keys(lagSamples)[0]] || [];
  el.setAttribute("data-samples", String(first.length));
  return false;
}

function legend(series) {
  var p = document.createElement("p");
  p.className = "legend";
  Object.keys(series).sort().forEach(function (name, i) {
    var item = document.createElement("span");
    item.style.color = COLORS[i % COLORS.length];
    item.textContent = "\u25A0 " + name + " ";
    p.appendChild(item);
  });
  return p;
}

document.addEventListener("DOMContentLoaded", function () {
  var matrix = document.getElementById("matrix");
  if (matrix && matrix.getAttribute("data-complete") !== "true") poll(matrix, updateMatrix);
  var regions = document.getElementById("chart");
  if (regions) poll(regions, updateRegions);
});
