"""The collector's live dashboard at ``/``: one static HTML page that polls the collector's JSON API.

What: pick a model and a time range; the page shows the collector's firing alerts (every model,
when alert rules are configured), calls, errors and latency (p50, p99) per window, the share of
drifted features and data-quality problems per window (each window against the model's
reference), the merged range's per-feature drift verdicts, its quality issues and latency
quantiles, refreshed every few seconds.

Why a static page: the server renders nothing from stored data, so there is nothing to escape on
the server and no template engine; the script builds the DOM with ``textContent`` and SVG
elements (never ``innerHTML`` with data), so model, column and category names cannot inject
markup. The page itself needs no token; when the API answers 401 the page asks for the bearer
token and keeps it in ``sessionStorage``. Everything is inline: it works without internet.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

__all__ = ["PAGE", "page"]

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>mlwatch collector</title>
<style>
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:12px 28px;display:flex;gap:18px;align-items:center;flex-wrap:wrap}
header h1{margin:0;font-size:19px;margin-right:auto}header label{font-size:13px;color:#c8d0dc}
select,input,button{font:inherit;padding:3px 6px;border-radius:5px;border:1px solid #aab}
main{max-width:1320px;margin:0 auto;padding:14px 28px 40px}h2{font-size:16px;margin:22px 0 8px}h2 small{color:#778;font-weight:normal;font-size:12px}
.stats{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:12px}
.stat{background:#fff;border-radius:8px;padding:10px 14px;border-left:5px solid #c9ced6}.stat.bad{border-left-color:#d62728}.stat.good{border-left-color:#2ca02c}
.stat .label{color:#667;font-size:12px;text-transform:uppercase;letter-spacing:.04em}.stat .value{font-size:21px;font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px}.card{background:#fff;border-radius:8px;padding:10px 14px}
.card h3{font-size:14px;margin:0 0 6px}svg.chart{width:100%;height:auto;display:block}svg .tick{font-size:10px;fill:#667}.legend{font-size:12px;font-weight:600;margin-left:8px}.legend .p50{color:#4c72b0}.legend .p99{color:#dd8452}
table{border-collapse:collapse;width:100%;background:#fff;border-radius:8px;overflow:hidden}th,td{padding:5px 9px;text-align:left;border-bottom:1px solid #eceef2;font-size:13px}
th{background:#eef0f4}td.num{text-align:right;font-variant-numeric:tabular-nums}td.worse{color:#b3191b;font-weight:600;background:#fde2e2}tr.drifted td:first-child{border-left:4px solid #d62728}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}.bad .badge,.badge.bad{background:#fde2e2;color:#b3191b}.badge.good{background:#e0f3e0;color:#1f7a1f}
#status{font-size:12px;color:#c8d0dc}#message{color:#b3191b;margin:8px 0}.muted{color:#889;font-size:12px}
tr.alert-row td:first-child{border-left:4px solid #d62728}
</style></head>
<body>
<header><h1>mlwatch</h1>
<label>model <select id="model"></select></label>
<label>range <select id="range">
<option value="900">last 15 min</option><option value="3600" selected>last hour</option><option value="21600">last 6 h</option>
<option value="86400">last 24 h</option><option value="604800">last 7 days</option></select></label>
<label>refresh <select id="refresh"><option value="5">5 s</option><option value="15" selected>15 s</option><option value="60">1 min</option><option value="0">off</option></select></label>
<span id="status">loading…</span></header>
<main>
<div id="message"></div>
<div class="stats">
<div class="stat" id="stat-drift"><div class="label">Drifted features</div><div class="value">&ndash;</div><div class="muted"></div></div>
<div class="stat" id="stat-quality"><div class="label">Data-quality problems</div><div class="value">&ndash;</div><div class="muted"></div></div>
<div class="stat" id="stat-calls"><div class="label">Calls</div><div class="value">&ndash;</div><div class="muted"></div></div>
<div class="stat" id="stat-latency"><div class="label">Latency p50 / p99</div><div class="value">&ndash;</div><div class="muted"></div></div>
</div>
<section id="alerts-section" hidden><h2>Firing alerts <small id="alerts-note"></small></h2>
<table id="alerts"><thead><tr><th>rule</th><th>model</th><th>feature</th><th>metric</th><th>value</th><th>threshold</th><th>since</th></tr></thead><tbody></tbody></table></section>
<h2>Over time <small id="range-note"></small></h2>
<div class="grid">
<div class="card"><h3>Share of drifted features per window</h3><svg class="chart" id="chart-drift" viewBox="0 0 420 150"></svg></div>
<div class="card"><h3>Data-quality problems per window</h3><svg class="chart" id="chart-quality" viewBox="0 0 420 150"></svg></div>
<div class="card"><h3>Calls per window</h3><svg class="chart" id="chart-calls" viewBox="0 0 420 150"></svg></div>
<div class="card"><h3>Errors per window</h3><svg class="chart" id="chart-errors" viewBox="0 0 420 150"></svg></div>
<div class="card"><h3>Latency per window <small class="legend"><span class="p50">&#9679; p50</span> <span class="p99">&#9679; p99</span></small></h3><svg class="chart" id="chart-latency" viewBox="0 0 420 150"></svg></div>
</div>
<h2>Features <small>the whole range against the reference</small></h2>
<table id="features"><thead><tr><th>feature</th><th>role</th><th>kind</th><th>method</th><th>drift score</th><th>verdict</th></tr></thead><tbody></tbody></table>
<section id="model-quality-section" hidden><h2>Model quality <small>from the outcomes (labels) in the range, overall and per segment</small></h2>
<table id="model-quality"><thead><tr></tr></thead><tbody></tbody></table></section>
<h2>Data-quality problems <small>the whole range</small></h2>
<table id="quality"><thead><tr><th>column</th><th>check</th><th>value</th><th>message</th></tr></thead><tbody></tbody></table>
</main>
<script>
(function(){
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var timer = null, token = sessionStorage.getItem("mlwatch-token") || "";
  var DASH = "\\u2013", MAX_SERIES = 240;  // the collector's default max_windows_per_query
  function $(id){ return document.getElementById(id); }
  function api(path){
    var headers = token ? {"Authorization": "Bearer " + token} : {};
    return fetch(path, {headers: headers}).then(function(r){
      if (r.status === 401) {
        var t = window.prompt("This collector needs a bearer token:");
        if (t) { token = t; sessionStorage.setItem("mlwatch-token", t); return api(path); }
      }
      return r.json().then(function(body){
        if (!r.ok) { var e = new Error((body.error && body.error.message) || r.statusText); e.status = r.status; throw e; }
        return body;
      });
    });
  }
  function q(params){ return Object.keys(params).map(function(k){ return k + "=" + encodeURIComponent(params[k]); }).join("&"); }
  function el(tag, text, cls){ var e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }
  function svgEl(tag, attrs, text){
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function(k){ e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fmt(x){ return (x === null || x === undefined) ? DASH : (Math.abs(x) >= 1e4 ? x.toExponential(2) : Number(x.toPrecision(3)).toString()); }
  function ms(s){ return (s === null || s === undefined) ? DASH : s >= 1e-3 ? fmt(s * 1000) + " ms" : fmt(s * 1e6) + " \\u00b5s"; }
  function hhmm(t){ return new Date(t * 1000).toISOString().substr(11, 8); }
  function chart(svg, xs, ys, opts){
    // opts.more: further line series [{ys, color, name}] on the same axes; opts.name: the first one's
    // name (in tooltips and data-series); opts.fmt: how values print (default fmt).
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var W = 420, H = 150, L = opts.fmt ? 54 : 40, T = 12, B = 22, pw = W - L - 8, ph = H - T - B;  // room for units
    var lines = [{ys: ys, color: opts.color, name: opts.name}].concat(opts.more || []), show = opts.fmt || fmt;
    var values = [opts.threshold || 0];
    lines.forEach(function(l){ values = values.concat(l.ys); });
    var top = Math.max.apply(null, values) || 1;
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs), span = (x1 - x0) || 1;
    function px(x){ return L + (xs.length > 1 ? pw * (x - x0) / span : pw / 2); }
    function py(y){ return T + ph - ph * y / top; }
    svg.appendChild(svgEl("line", {x1: L, y1: T + ph, x2: W - 4, y2: T + ph, stroke: "#999"}));
    svg.appendChild(svgEl("text", {x: L - 4, y: T + 4, "text-anchor": "end", "class": "tick"}, opts.percent ? Math.round(top * 100) + "%" : show(top)));
    svg.appendChild(svgEl("text", {x: L - 4, y: T + ph, "text-anchor": "end", "class": "tick"}, "0"));
    if (!xs.length) { svg.appendChild(svgEl("text", {x: W / 2, y: H / 2, "text-anchor": "middle", "class": "tick"}, "no data")); return; }
    if (opts.threshold) svg.appendChild(svgEl("line", {x1: L, x2: W - 4, y1: py(opts.threshold), y2: py(opts.threshold), stroke: "#d62728", "stroke-dasharray": "4 3"}));
    if (opts.bars) {
      var slot = pw / xs.length, w = Math.max(slot * 0.7, 1);
      xs.forEach(function(x, i){
        var r = svgEl("rect", {"class": "bar", x: L + slot * (i + 0.15), y: py(ys[i]), width: w, height: T + ph - py(ys[i]), fill: opts.color});
        r.appendChild(svgEl("title", {}, hhmm(x) + ": " + fmt(ys[i])));
        svg.appendChild(r);
      });
    } else {
      lines.forEach(function(l){
        svg.appendChild(svgEl("polyline", {"class": "line", "data-series": l.name || "", fill: "none", stroke: l.color, "stroke-width": 2,
          points: xs.map(function(x, i){ return px(x) + "," + py(l.ys[i]); }).join(" ")}));
        xs.forEach(function(x, i){
          var c = svgEl("circle", {"class": "point", cx: px(x), cy: py(l.ys[i]), r: 2.5, fill: l.color});
          c.appendChild(svgEl("title", {}, hhmm(x) + (l.name ? " " + l.name : "") + ": " + show(l.ys[i])));
          svg.appendChild(c);
        });
      });
    }
    svg.appendChild(svgEl("text", {x: px(x0), y: H - 6, "class": "tick", "text-anchor": "start"}, hhmm(x0)));
    svg.appendChild(svgEl("text", {x: px(x1), y: H - 6, "class": "tick", "text-anchor": "end"}, hhmm(x1)));
  }
  function stat(id, value, sub, state){
    var box = $(id); box.className = "stat" + (state ? " " + state : "");
    box.querySelector(".value").textContent = value; box.querySelector(".muted").textContent = sub;
  }
  function rows(tbody, list, make){
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    list.forEach(function(item){ tbody.appendChild(make(item)); });
  }
  function modelQuality(mq){
    var section = $("model-quality-section"), overall = mq && mq.overall;
    section.hidden = !(overall && overall.n_labeled);  // absent when the collector has no outcomes (or no such API)
    if (section.hidden) return;
    var cols = [["all", overall]], segs = mq.segments || {};
    Object.keys(segs).slice(0, 12).forEach(function(k){ if (k) cols.push([k, segs[k]]); });
    var head = $("model-quality").tHead.rows[0];
    while (head.firstChild) head.removeChild(head.firstChild);
    head.appendChild(el("th", "metric"));
    cols.forEach(function(c){ head.appendChild(el("th", c[0])); });
    var better = ["accuracy", "precision", "recall", "f1", "roc_auc", "tpr"];
    rows($("model-quality").tBodies[0], Object.keys(overall).filter(function(n){ return n.indexOf("[") < 0; }), function(n){
      var tr = el("tr", undefined, "model-quality-row");
      tr.appendChild(el("td", n));
      cols.forEach(function(c){
        var v = c[1][n], worse = better.indexOf(n) >= 0 && v !== null && v !== undefined && v < overall[n] - 0.1;
        tr.appendChild(el("td", v === null || v === undefined ? DASH : /^(n_|support)/.test(n) ? Math.round(v).toLocaleString("en") : fmt(v), worse ? "num worse" : "num"));
      });
      return tr;
    });
  }
  function firingAlerts(){
    // Alert rules evaluated by the collector (--alerts): every model's firing alerts; hidden without rules.
    return api("/api/alerts").then(function(body){
      var list = body.firing || [];
      $("alerts-section").hidden = !body.configured;
      $("alerts-note").textContent = list.length ? list.length + " firing, all models" : "none firing";
      rows($("alerts").tBodies[0], list, function(a){
        var tr = el("tr", undefined, "alert-row");
        [a.rule, a.model, a.feature || DASH, a.metric].forEach(function(t){ tr.appendChild(el("td", t)); });
        tr.appendChild(el("td", fmt(a.value), "num")); tr.appendChild(el("td", fmt(a.threshold), "num"));
        tr.appendChild(el("td", hhmm(a.since) + " UTC"));
        return tr;
      });
    }).catch(function(){ $("alerts-section").hidden = true; });
  }
  function refresh(){
    firingAlerts();
    var model = $("model").value;
    if (!model) return Promise.resolve();
    var base = "/api/models/" + encodeURIComponent(model);
    $("message").textContent = "";
    return api(base + "/windows").then(function(latest){
      var end = latest.end, start = end - Number($("range").value), range = q({start: start, end: end});
      $("range-note").textContent = new Date(start * 1000).toISOString().replace("T", " ").substr(0, 19) + " " + DASH + " " + hhmm(end) + " UTC";
      return api(base + "/windows?" + range).then(function(listed){
        // Per-window analysis covers the latest MAX_SERIES windows of the range (the API caps a request).
        var ws = listed.windows, series = ws.length > MAX_SERIES ? q({start: ws[ws.length - MAX_SERIES].window_start, end: end}) : range;
        return Promise.all([
        listed,
        api(base + "/drift/windows?" + series).catch(function(e){ return {error: e}; }),
        api(base + "/quality/windows?" + series).catch(function(e){ return {error: e}; }),
        api(base + "/drift?" + range).catch(function(e){ return {error: e}; }),
        api(base + "/quality?" + range).catch(function(e){ return {error: e}; }),
        api(base + "/profile?" + range),
        api(base + "/model-quality?" + range).catch(function(e){ return {error: e}; }),
        api(base + "/windows?" + series + "&latency=true").catch(function(e){ return {error: e}; })
        ]);
      });
    }).then(function(res){
      var wins = res[0].windows, dw = res[1], qw = res[2], dr = res[3], qr = res[4], prof = res[5].profile;
      var calls = 0, errors = 0;
      wins.forEach(function(w){ calls += w.calls; errors += w.errors; });
      chart($("chart-calls"), wins.map(function(w){ return w.window_start; }), wins.map(function(w){ return w.calls || w.rows; }), {bars: true, color: "#8da0cb"});
      chart($("chart-errors"), wins.map(function(w){ return w.window_start; }), wins.map(function(w){ return w.errors; }), {bars: true, color: "#d62728"});
      stat("stat-calls", calls.toLocaleString("en"), "errors " + errors.toLocaleString("en") + " (" + (calls ? (100 * errors / calls).toFixed(2) : "0.00") + "%)", "");
      var lat = prof.latency_seconds;
      stat("stat-latency", lat ? ms(lat.p50) + " / " + ms(lat.p99) : DASH, lat ? "p90 " + ms(lat.p90) + ", max " + ms(lat.max) : "no latency recorded", "");
      var notes = [];
      if (dw.error) { notes.push("drift per window: " + dw.error.message); chart($("chart-drift"), [], [], {}); }
      else chart($("chart-drift"), dw.windows.map(function(w){ return w.window_start; }), dw.windows.map(function(w){ return w.share; }), {percent: true, threshold: 0.5, color: "#e07b39"});
      if (qw.error) { notes.push("quality per window: " + qw.error.message); chart($("chart-quality"), [], [], {}); }
      else chart($("chart-quality"), qw.windows.map(function(w){ return w.window_start; }), qw.windows.map(function(w){ return w.n_issues; }), {bars: true, color: "#d62728"});
      if (dr.error) { notes.push("drift: " + dr.error.message); rows($("features").tBodies[0], [], null); stat("stat-drift", DASH, "", ""); }
      else {
        var d = dr.drift, cols = d.columns.slice().sort(function(a, b){ return (b.value === null ? -1 : b.value) - (a.value === null ? -1 : a.value); });
        stat("stat-drift", d.n_drifted + " / " + d.n_columns, d.dataset_drift ? "dataset drift" : "no dataset drift", d.n_drifted ? "bad" : "good");
        rows($("features").tBodies[0], cols, function(c){
          var tr = el("tr", undefined, c.drifted ? "feature-row drifted" : "feature-row");
          tr.setAttribute("data-feature", c.column); tr.setAttribute("data-drifted", c.drifted ? "true" : "false");
          [c.column, c.role, c.kind, c.method || DASH].forEach(function(t){ tr.appendChild(el("td", t)); });
          tr.appendChild(el("td", fmt(c.value), "num"));
          var v = el("td"); v.appendChild(el("span", c.drifted ? "drifted" : c.status === "ok" ? "ok" : c.status, "badge " + (c.drifted ? "bad" : "good"))); tr.appendChild(v);
          return tr;
        });
      }
      if (qr.error) { notes.push("quality: " + qr.error.message); rows($("quality").tBodies[0], [], null); stat("stat-quality", DASH, "", ""); }
      else {
        var issues = qr.quality.issues;
        stat("stat-quality", String(issues.length), issues.length ? "in the range" : "none", issues.length ? "bad" : "good");
        rows($("quality").tBodies[0], issues, function(i){
          var tr = el("tr", undefined, "quality-row");
          [i.column, i.check].forEach(function(t){ tr.appendChild(el("td", t)); });
          tr.appendChild(el("td", fmt(i.value), "num")); tr.appendChild(el("td", i.message));
          return tr;
        });
      }
      modelQuality(res[6]);
      var lw = res[7];  // latency per window: windows without latency (or an older collector) leave gaps
      if (lw.error) { notes.push("latency per window: " + lw.error.message); chart($("chart-latency"), [], [], {}); }
      else {
        var timed = lw.windows.filter(function(w){ return w.latency_seconds; });
        chart($("chart-latency"), timed.map(function(w){ return w.window_start; }), timed.map(function(w){ return w.latency_seconds.p50; }),
              {color: "#4c72b0", name: "p50", fmt: ms, more: [{ys: timed.map(function(w){ return w.latency_seconds.p99; }), color: "#dd8452", name: "p99"}]});
      }
      $("message").textContent = notes.join(" · ");
      $("status").textContent = "updated " + new Date().toISOString().substr(11, 8) + " UTC";
      document.documentElement.setAttribute("data-ready", "1");
    }).catch(function(e){
      $("message").textContent = e.message;
      $("status").textContent = "error";
      document.documentElement.setAttribute("data-ready", "error");
    });
  }
  function schedule(){
    if (timer) clearInterval(timer);
    var s = Number($("refresh").value);
    if (s > 0) timer = setInterval(refresh, s * 1000);
  }
  api("/api/models").then(function(body){
    var params = new URLSearchParams(location.search), sel = $("model"), wanted = params.get("model");
    if (params.get("range") && $("range").querySelector('option[value="' + Number(params.get("range")) + '"]')) $("range").value = String(Number(params.get("range")));
    body.models.forEach(function(m){ var name = typeof m === "string" ? m : m.model; var o = el("option", name); o.value = name; sel.appendChild(o); if (name === wanted) o.selected = true; });
    if (!body.models.length) { $("message").textContent = "No models yet: point an mlwatch exporter at this collector."; $("status").textContent = "idle"; document.documentElement.setAttribute("data-ready", "empty"); return; }
    ["model", "range"].forEach(function(id){ $(id).addEventListener("change", refresh); });
    $("refresh").addEventListener("change", schedule);
    schedule();
    return refresh();
  }).catch(function(e){ $("message").textContent = e.message; $("status").textContent = "error"; });
})();
</script></body></html>
"""


async def page(request: Request) -> Response:
    """The dashboard page (static; its script reads the JSON API, with the token when one is needed)."""
    return HTMLResponse(PAGE, headers={"Cache-Control": "no-cache", "Content-Security-Policy": _CSP})


#: Inline script and style only, requests to this origin only: the page cannot load anything else.
_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:"
