/* Pool status: swap in a fresh rendering of the stats every few seconds (no full reload). */
(function () {
  "use strict";
  var root = document.getElementById("pc-root");
  if (!root) { return; }
  var target = document.getElementById("pc-status");
  var dot = document.getElementById("pc-live-dot");
  var text = document.getElementById("pc-live-text");
  var every = parseInt(root.getAttribute("data-refresh-ms"), 10) || 3000;
  var busy = false;

  function url() {
    var params = new URLSearchParams(window.location.search);
    params.set("format", "fragment");
    return window.location.pathname + "?" + params.toString();
  }

  function refresh() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch(url(), {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        target.innerHTML = html;
        dot.className = "pc-dot";
        // One clock on the page: the server's, in UTC, inside the fragment.
        text.textContent = "Live: refreshes every " + Math.round(every / 1000) + " s";
        root.setAttribute("data-refreshes", String((parseInt(root.getAttribute("data-refreshes"), 10) || 0) + 1));
      })
      .catch(function (error) {
        dot.className = "pc-dot pc-dot-stale";
        text.textContent = "Not updating (" + error.message + "); retrying";
      })
      .finally(function () { busy = false; });
  }

  window.setInterval(refresh, every);
  document.addEventListener("visibilitychange", refresh);
})();
