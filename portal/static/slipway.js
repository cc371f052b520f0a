// Slipway: copy buttons, typed confirmations, live job log. No libraries.
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return new Promise(function (resolve, reject) {   // http:// origins: the old way
      var ta = document.createElement("textarea");
      ta.value = text; ta.setAttribute("readonly", "");
      ta.style.position = "fixed"; ta.style.opacity = "0";
      document.body.appendChild(ta); ta.select();
      try { document.execCommand("copy") ? resolve() : reject(); } catch (e) { reject(e); }
      document.body.removeChild(ta);
    });
  }

  document.querySelectorAll("[data-copy]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var label = btn.textContent;
      copyText(btn.getAttribute("data-copy")).then(function () {
        btn.textContent = "Copied"; btn.classList.add("copied");
      }, function () { btn.textContent = "Select and copy"; });
      setTimeout(function () { btn.textContent = label; btn.classList.remove("copied"); }, 1600);
    });
  });

  // Destructive forms: the button works only once the typed text matches.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    var input = form.querySelector("input[name=confirm]");
    var button = form.querySelector("button[type=submit]");
    var want = form.getAttribute("data-confirm");
    function sync() { button.disabled = input.value.trim() !== want; }
    input.addEventListener("input", sync); sync();
  });

  // Live log: poll the JSON endpoint for bytes after our offset (the server reads the job's
  // log file; nothing asks Slurm). Stops once the job has ended and the log is drained.
  var log = document.getElementById("log");
  if (log) {
    var url = log.getAttribute("data-url");
    var offset = 0, timer = null, follow = true, errors = 0;
    var status = document.getElementById("log-status");
    log.addEventListener("scroll", function () {
      follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    });
    function setField(name, value) {
      document.querySelectorAll("[data-field=" + name + "]").forEach(function (el) {
        el.textContent = value === null || value === undefined || value === "" ? "—" : value;
        if (name === "state") { el.className = "badge state-" + value; }
      });
    }
    function tick() {
      fetch(url + "?offset=" + offset, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
        .then(function (d) {
          errors = 0;
          if (d.offset < offset) { log.textContent = ""; }   // log restarted (requeue)
          if (d.data) {
            if (log.getAttribute("data-empty") === "1") { log.textContent = ""; log.setAttribute("data-empty", "0"); }
            log.appendChild(document.createTextNode(d.data));
            if (follow) { log.scrollTop = log.scrollHeight; }
          }
          offset = d.next_offset;
          setField("state", d.state); setField("reason", d.reason);
          setField("node", d.node); setField("exit_code", d.exit_code);
          setField("cost", d.cost_text || ("$" + Number(d.cost).toFixed(2)));
          var more = d.next_offset < d.size;
          if (d.terminal) {
            document.querySelectorAll("[data-hide-when-ended]").forEach(function (el) { el.hidden = true; });
          }
          if (d.terminal && !more) {
            if (status) { status.textContent = "job ended — log complete"; }
            return;
          }
          if (status) { status.textContent = d.exists ? "live" : "waiting for the job to write its log…"; }
          timer = setTimeout(tick, more ? 50 : 2000);
        })
        .catch(function (e) {
          errors += 1;
          if (status) { status.textContent = "reconnecting (" + e.message + ")"; }
          timer = setTimeout(tick, Math.min(30000, 2000 * errors));
        });
    }
    tick();
  }
})();
