// Slipway: upload files or a folder as a new version of a data repository (the repository
// page's #upload form). Each file is hashed in the browser (SHA-256 in 4 MiB slices,
// sha256.js), the manifest is sent, every object the server lacks is sent in 8 MiB chunks from
// the offset the server holds (so an interrupted upload resumes), then the upload is
// committed. The server's messages are shown as they are. No libraries.
(function () {
  "use strict";

  var HASH_SLICE = 4 * 1024 * 1024;
  var CHUNK = 8 * 1024 * 1024;

  var form = document.getElementById("upload");
  if (!form || !window.SlipwaySha256) { return; }
  var filesInput = document.getElementById("upload-files");
  var folderInput = document.getElementById("upload-folder");
  var button = document.getElementById("upload-button");
  var bar = document.getElementById("upload-progress");
  var status = document.getElementById("upload-status");
  var errorBox = document.getElementById("upload-error");
  var meta = document.querySelector("meta[name=csrf-token]");
  var csrfToken = meta ? meta.getAttribute("content") : "";

  function say(text) { status.textContent = text; }
  function fail(text) {
    errorBox.textContent = text; errorBox.hidden = false;
    say(""); bar.hidden = true; button.disabled = false;
  }
  function progress(done, total) {
    bar.hidden = false; bar.max = Math.max(total, 1); bar.value = Math.min(done, total);
  }
  function human(n) {
    var units = ["B", "KB", "MB", "GB", "TB"], i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
  }

  // path inside the version: a folder's files without the folder's own name
  function pathOf(file) {
    var rel = file.webkitRelativePath || "";
    if (rel.indexOf("/") > 0) { return rel.slice(rel.indexOf("/") + 1); }
    return file.name;
  }

  // fetch + JSON; a refusal becomes an Error carrying the server's message verbatim
  function call(method, url, body, headers) {
    var h = { "Accept": "application/json", "X-CSRFToken": csrfToken };
    Object.keys(headers || {}).forEach(function (k) { h[k] = headers[k]; });
    return fetch(url, { method: method, credentials: "same-origin", headers: h, body: body })
      .then(function (r) {
        return r.text().then(function (text) {
          var data = null;
          try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
          if (!r.ok) {
            var msg = data && data.error ? data.error : ("HTTP " + r.status + " " + r.statusText +
                      (text && !data ? ": " + text.slice(0, 300) : ""));
            throw new Error(msg);
          }
          return data;
        });
      });
  }

  function hashFile(file, onBytes) {
    var h = new window.SlipwaySha256();
    var pos = 0;
    function next() {
      if (pos >= file.size) { return Promise.resolve(h.digest()); }
      var end = Math.min(pos + HASH_SLICE, file.size);
      return file.slice(pos, end).arrayBuffer().then(function (buf) {
        h.update(new Uint8Array(buf));
        onBytes(end - pos); pos = end;
        return next();
      });
    }
    return next();
  }

  function sendObject(objectsUrl, sha, file, offset, onBytes) {
    if (offset >= file.size && file.size > 0) { return Promise.resolve(); }
    var end = Math.min(offset + CHUNK, file.size);
    return call("PUT", objectsUrl + sha + "?offset=" + offset, file.slice(offset, end),
                { "Content-Type": "application/octet-stream" })
      .then(function (d) {
        onBytes(d.offset - offset);
        if (d.complete || d.offset >= file.size) { return null; }
        if (d.offset <= offset) { throw new Error("the server did not accept bytes from offset " + offset); }
        return sendObject(objectsUrl, sha, file, d.offset, onBytes);
      });
  }

  function chosen() {
    var list = [];
    [filesInput, folderInput].forEach(function (input) {
      if (!input || !input.files) { return; }
      for (var i = 0; i < input.files.length; i++) { list.push(input.files[i]); }
    });
    return list;
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    errorBox.hidden = true; errorBox.textContent = "";
    var files = chosen();
    if (!files.length) { fail("Choose files or a folder first."); return; }
    button.disabled = true;
    var total = files.reduce(function (n, f) { return n + f.size; }, 0);
    var hashed = 0, manifest = [], bySha = {};
    var chain = Promise.resolve();
    files.forEach(function (file, i) {
      chain = chain.then(function () {
        say("Checking file " + (i + 1) + " of " + files.length + " (" + pathOf(file) + ")…");
        return hashFile(file, function (n) { hashed += n; progress(hashed, total); });
      }).then(function (sha) {
        manifest.push({ path: pathOf(file), size: file.size, sha256: sha });
        if (!bySha[sha]) { bySha[sha] = file; }
      });
    });
    chain.then(function () {
      say("Starting the upload…");
      return call("POST", form.getAttribute("data-start-url"), JSON.stringify({ files: manifest }),
                  { "Content-Type": "application/json" });
    }).then(function (up) {
      var missing = up.missing || {};
      var shas = Object.keys(missing);
      var need = 0, sent = 0;
      shas.forEach(function (sha) { need += bySha[sha].size - missing[sha]; });
      progress(0, need);
      var send = Promise.resolve();
      shas.forEach(function (sha, i) {
        send = send.then(function () {
          say("Sending " + (i + 1) + " of " + shas.length + " (" + human(need) + " to send)…");
          return sendObject(up.objects_url, sha, bySha[sha], missing[sha], function (n) {
            sent += n; progress(sent, need);
          });
        });
      });
      return send.then(function () {
        say("Making the version…");
        return call("POST", up.commit_url, null, {});
      });
    }).then(function (v) {
      say("Version " + v.number + " uploaded.");
      window.location.assign(v.repo_url || window.location.href);
    }).catch(function (e) { fail(e.message || String(e)); });
  });
})();
