// Slipway's charts: draws uPlot (vendor/uplot, MIT) plots from the JSON the page embeds in
// <script type="application/json" class="chart-data">: a list of
//   {id, title, unit, kind: "line"|"bars", labels: [...]?, x: [...] (epoch seconds),
//    series: [{label, values, color?, dash?}]}
// each drawn into the element with that id. Hover values are uPlot's legend. No inline JS.
(function () {
  "use strict";
  if (typeof uPlot === "undefined") { return; }

  var PALETTE = ["#3b6fd8", "#d8733b", "#2e9e5b", "#b03bd8", "#d83b5a", "#7a8a99", "#c9a227"];

  function fmt(v, unit) {
    if (v == null) { return "–"; }
    var n = Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
    n = n.replace(/\.0+$/, "").replace(/(\.\d*?)0+$/, "$1");
    if (unit === "$") { return "$" + Number(v).toFixed(2); }
    return unit ? n + " " + unit : n;
  }

  function points(spec) {
    var n = 0;
    spec.series.forEach(function (s) {
      s.values.forEach(function (v) { if (v != null) { n += 1; } });
    });
    return n;
  }

  function draw(spec) {
    var el = document.getElementById(spec.id);
    if (!el || !spec.x || !spec.x.length) { return; }
    // bars for one series; several series per period are lines with a point per period
    // (uPlot's bars of several series would hide one another)
    var bars = spec.kind === "bars" && spec.series.length === 1;
    var labels = spec.labels || null;
    var series = [{
      label: labels ? "period" : "time",
      value: labels ? function (u, v, i, idx) { return idx == null ? "–" : labels[idx]; } : undefined
    }];
    var data = [spec.x];
    spec.series.forEach(function (s, i) {
      var color = s.color || PALETTE[i % PALETTE.length];
      var opts = {
        label: s.label, stroke: color, width: bars ? 1 : 1.5,
        value: function (u, v) { return fmt(v, spec.unit); },
        points: { show: bars ? false : spec.x.length < 60 }
      };
      if (s.dash) { opts.dash = [6, 4]; }
      if (bars) {
        opts.fill = color + "cc";
        opts.paths = uPlot.paths.bars({ size: [0.8, 60], align: 0, gap: 1 });
      }
      series.push(opts);
      data.push(s.values.map(function (v) { return v == null ? null : Number(v); }));
    });
    var width = Math.max(320, Math.min(el.clientWidth || 720, 1200));
    var opts = {
      title: spec.title, width: width, height: spec.height || 220, series: series,
      scales: { x: { time: true } },
      axes: [{}, { size: 72, values: function (u, vals) {
        return vals.map(function (v) { return fmt(v, spec.unit); });
      } }],
      legend: { live: true }
    };
    if (bars) { opts.cursor = { points: { show: false } }; }   // (true would break uPlot)
    if (bars) {
      var step = spec.x.length > 1 ? spec.x[1] - spec.x[0] : 86400;
      opts.scales.x.range = function () {
        return [spec.x[0] - step / 2, spec.x[spec.x.length - 1] + step / 2];
      };
    }
    el.textContent = "";
    var plot = new uPlot(opts, data, el);
    el.setAttribute("data-drawn", "1");
    el.setAttribute("data-points", String(points(spec)));
    return plot;
  }

  var plots = [];
  document.querySelectorAll('script[type="application/json"].chart-data').forEach(function (node) {
    var specs;
    try { specs = JSON.parse(node.textContent); } catch (e) { return; }
    (Array.isArray(specs) ? specs : [specs]).forEach(function (spec) {
      var p = draw(spec);
      if (p) { plots.push([p, document.getElementById(spec.id)]); }
    });
  });

  var pending = null;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(function () {
      plots.forEach(function (pair) {
        var w = Math.max(320, Math.min(pair[1].clientWidth || 720, 1200));
        pair[0].setSize({ width: w, height: pair[0].height });
      });
    }, 150);
  });
}());
