// Slipway: a workspace's page follows its state (GET /api/workspaces/<id>, the database only).
// The page reloads when the state changes, so "Open JupyterLab", Stop and Restart match it.
(function () {
  "use strict";
  var box = document.getElementById("workspace");
  if (!box) { return; }
  var url = box.getAttribute("data-url");
  var shown = box.getAttribute("data-state");
  var errors = 0;
  function setField(name, value) {
    document.querySelectorAll("[data-field=" + name + "]").forEach(function (el) {
      el.textContent = value === null || value === undefined || value === "" ? "—" : value;
    });
  }
  function tick() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (d) {
        var w = d.workspace;
        errors = 0;
        if (w.state !== shown || (w.state === "running" && !document.getElementById("open-lab") && w.url)) {
          window.location.reload();
          return;
        }
        setField("cost", "$" + Number(w.cost).toFixed(2));
        setField("node", w.node);
        if (w.reason) { setField("reason", w.reason); }
        if (w.bills_while_open) { setTimeout(tick, w.state === "running" ? 15000 : 3000); }
      })
      .catch(function () {
        errors += 1;
        setTimeout(tick, Math.min(60000, 3000 * errors));
      });
  }
  if (box.getAttribute("data-active") === "1") { setTimeout(tick, 3000); }
})();
