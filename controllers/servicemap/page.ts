// The service map page: one self-contained HTML document (inline CSS, SVG drawn by inline JS, nothing fetched but graph.json).
import type { EdgeVerdict, ServiceGraph } from "./graph.ts";
import { OUTSIDE_NAMESPACE_TITLE } from "./graph.ts";

/** Edge colours; the browser test looks for the denied colour in the screenshot. */
export const VERDICT_COLORS: Readonly<Record<EdgeVerdict, string>> = {
  denied: "#e01b1b",
  allowed: "#1f9d47",
  unenforced: "#8c939c",
};

/** The header's height: the map's SVG starts this many pixels from the top of the page (the browser test maps coordinates with it). */
export const MAP_TOP_PX = 48;

/** How often the page asks for graph.json (it answers 304 while nothing changed). */
export const POLL_INTERVAL_MS = 1000;

/** JSON inside a <script> element: `<` escaped so that no string can close the element. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, "\\u003c").replace(/\u2028/g, "\\u2028").replace(/\u2029/g, "\\u2029");
}

// Runs in the browser. Plain ES2017; every text goes in through textContent, never as markup.
const CLIENT_SCRIPT = String.raw`
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var config = JSON.parse(document.getElementById("servicemap-config").textContent);
  var graph = JSON.parse(document.getElementById("servicemap-initial").textContent);
  var svg = document.getElementById("map");
  var status = document.getElementById("status");
  var updates = 0;

  function el(name, attrs, text) {
    var e = document.createElementNS(SVGNS, name);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function title(parent, text) { parent.appendChild(el("title", {}, text)); }

  function render(g) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    svg.setAttribute("width", g.width);
    svg.setAttribute("height", g.height);
    svg.setAttribute("viewBox", "0 0 " + g.width + " " + g.height);
    svg.setAttribute("data-version", g.version);
    var defs = el("defs", {});
    Object.keys(config.colors).forEach(function (v) {
      var m = el("marker", { id: "arrow-" + v, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
      m.appendChild(el("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: config.colors[v] }));
      defs.appendChild(m);
    });
    svg.appendChild(defs);
    g.namespaces.forEach(function (ns) {
      var grp = el("g", { "class": "namespace", "data-namespace": ns.name });
      grp.appendChild(el("rect", { x: ns.x, y: ns.y, width: ns.width, height: ns.height, rx: 8 }));
      grp.appendChild(el("text", { x: ns.x + 10, y: ns.y + 22, "class": "ns-title" }, ns.name === "" ? config.outsideTitle : "namespace " + ns.name));
      svg.appendChild(grp);
    });
    g.services.forEach(function (s) {
      var grp = el("g", { "class": "service", "data-service": s.namespace + "/" + s.name });
      grp.appendChild(el("rect", { x: s.x, y: s.y, width: s.width, height: s.height, rx: 6 }));
      grp.appendChild(el("text", { x: s.x + 8, y: s.y + 18, "class": "svc-title" }, "service " + s.name + (s.pods.length === 0 ? " (no pods seen)" : "")));
      title(grp, "Service " + s.namespace + "/" + s.name + ": " + s.pods.length + " pod(s) seen in flows");
      svg.appendChild(grp);
    });
    var edgeLayer = el("g", { "class": "edges" });
    g.edges.forEach(function (e) {
      var color = config.colors[e.verdict];
      var grp = el("g", { "class": "edge " + e.verdict, "data-edge": e.id, "data-from": e.from, "data-to": e.to, "data-port": e.port, "data-protocol": e.protocol, "data-verdict": e.verdict });
      grp.appendChild(el("path", { d: e.path, stroke: color, "stroke-width": 3, fill: "none", "marker-end": "url(#arrow-" + e.verdict + ")" }));
      grp.appendChild(el("circle", { cx: e.mx, cy: e.my, r: 6, fill: color }));
      var text = e.protocol + (e.port ? "/" + e.port : "");
      grp.appendChild(el("text", { x: e.mx, y: e.my - 9, "text-anchor": "middle", "class": "port" }, text));
      title(grp, e.from + " \u2192 " + e.to + " " + text + ": " + e.verdict + " (forwarded " + e.forwarded + ", dropped " + e.dropped + ")" +
        (e.dropReason ? "; " + e.dropReason : "") + (e.decidedBy ? "; decided by " + e.decidedBy : "") + "; last " + e.lastSeen);
      edgeLayer.appendChild(grp);
    });
    // Under the pods: a line crossing a column never hides a pod's name (labels sit in the gaps).
    svg.appendChild(edgeLayer);
    g.nodes.forEach(function (n) {
      var grp = el("g", { "class": "node " + n.kind, "data-node": n.id, "data-namespace": n.namespace, "data-identity": n.identity });
      grp.appendChild(el("rect", { x: n.x, y: n.y, width: n.width, height: n.height, rx: 5 }));
      grp.appendChild(el("text", { x: n.x + 10, y: n.y + 22 }, n.label));
      title(grp, n.id + "\nidentity " + n.identity + ", " + n.ip + (n.services.length ? "\nbehind " + n.services.join(", ") : ""));
      svg.appendChild(grp);
    });
    var denied = g.edges.filter(function (e) { return e.verdict === "denied"; }).length;
    status.textContent = g.nodes.length + " endpoints, " + g.edges.length + " edges (" + denied + " denied), updated " + new Date().toISOString().slice(11, 19) + " UTC";
    status.className = "ok";
    document.body.setAttribute("data-updates", String(updates++));
  }

  function poll() {
    fetch(config.graphUrl, { headers: { "if-none-match": '"' + graph.version + '"' }, cache: "no-store" })
      .then(function (res) {
        if (res.status === 304) return null;
        if (!res.ok) throw new Error("graph.json answered " + res.status);
        return res.json();
      })
      .then(function (g) {
        if (g && g.version !== graph.version) { graph = g; render(g); }
        else if (status.className !== "ok") status.className = "ok";
      })
      .catch(function (err) {
        status.textContent = "not updating: " + err.message + " (retrying)";
        status.className = "error";
      })
      .then(function () { setTimeout(poll, config.pollMs); });
  }

  render(graph);
  setTimeout(poll, config.pollMs);
})();
`;

const STYLE = `
body { font: 13px system-ui, sans-serif; margin: 0; background: #f7f8fa; color: #1d2430; }
header { height: ${MAP_TOP_PX}px; box-sizing: border-box; overflow: hidden; padding: 14px 20px; background: #fff; border-bottom: 1px solid #d9dde3; display: flex; gap: 24px; align-items: baseline; }
h1 { font-size: 16px; margin: 0; }
#map { display: block; }
#status.error { color: #8a5a00; font-weight: bold; }
.legend span { margin-right: 14px; }
.legend i { display: inline-block; width: 18px; height: 4px; vertical-align: middle; margin-right: 4px; }
.namespace rect { fill: #eef1f6; stroke: #b9c2d0; }
.ns-title { font-weight: bold; fill: #3a4556; }
.service rect { fill: #e3ecfa; stroke: #6f8fc7; stroke-dasharray: 5 3; }
.svc-title { fill: #2f4f8a; font-size: 12px; }
.node rect { fill: #fff; stroke: #4a5568; }
.node.identity rect { stroke-dasharray: 3 2; }
.node.external rect { fill: #f3f0e8; }
.port { font-size: 11px; fill: #1d2430; paint-order: stroke; stroke: #f7f8fa; stroke-width: 3px; }
`;

/** The page, with the graph as it is now inline (drawn at once, then kept current by polling `graphUrl`). */
export function renderPage(initial: ServiceGraph, graphUrl: string): string {
  const config = { graphUrl, pollMs: POLL_INTERVAL_MS, colors: VERDICT_COLORS, outsideTitle: OUTSIDE_NAMESPACE_TITLE };
  const legend = (Object.entries(VERDICT_COLORS) as [EdgeVerdict, string][])
    .map(([v, c]) => `<span><i style="background:${c}"></i>${v}</span>`)
    .join("");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Membrane service map</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; connect-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<style>${STYLE}</style>
</head>
<body>
<header><h1>Membrane service map</h1><span class="legend">${legend}</span><span id="status">loading</span></header>
<svg id="map" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="services and pods, with flows between them"></svg>
<script type="application/json" id="servicemap-config">${scriptJson(config)}</script>
<script type="application/json" id="servicemap-initial">${scriptJson(initial)}</script>
<script>${CLIENT_SCRIPT}</script>
</body>
</html>
`;
}
