/* The job page's usage plot (portal/templates/_job_usage.html): CPU (% of one core) and
   resident memory (MB) over time, GPU utilisation when the nodes report it. The series come
   embedded as JSON (#job-usage-data); uPlot (vendored) draws them, its legend shows the values
   under the pointer. */
(function () {
  "use strict";
  var el = document.getElementById("job-usage-plot");
  var data = document.getElementById("job-usage-data");
  if (!el || !data || typeof uPlot === "undefined") { return; }
  var s = JSON.parse(data.textContent);
  function fmt(unit, digits) {
    return function (u, v) { return v == null ? "—" : v.toFixed(digits) + " " + unit; };
  }
  var series = [
    {},
    {label: "CPU", scale: "pct", stroke: "#2b6cb0", width: 2, value: fmt("%", 0)},
    {label: "Memory", scale: "mb", stroke: "#c05621", width: 2, value: fmt("MB", 1)}
  ];
  var columns = [s.t, s.cpu, s.rss];
  if (s.gpu) {
    series.push({label: "GPU", scale: "pct", stroke: "#2f855a", width: 2, value: fmt("%", 0)});
    columns.push(s.gpu);
  }
  function width() { return Math.max(el.clientWidth || 0, 320); }
  var plot = new uPlot({
    width: width(),
    height: 260,
    series: series,
    scales: {x: {time: true}, pct: {range: function (u, lo, hi) { return [0, Math.max(hi || 0, 100)]; }},
             mb: {range: function (u, lo, hi) { return [0, Math.max(hi || 0, 1) * 1.1]; }}},
    axes: [
      {},
      {scale: "pct", label: "CPU % (100 = one core)", values: function (u, vals) { return vals.map(function (v) { return v + " %"; }); }},
      {scale: "mb", side: 1, label: "memory (MB)", grid: {show: false}}
    ]
  }, columns, el);
  el.setAttribute("data-drawn", String(s.t.length));
  window.addEventListener("resize", function () { plot.setSize({width: width(), height: 260}); });
})();
