// Keeps a page current while a rollout on it runs: every few seconds the page is
// fetched again from the same address and its <main> swapped in, with the evidence
// that was open kept open and the scroll position kept. It stops once the server
// sends a page without data-refresh (every rollout on it has ended). No other
// script, no other origin: the server's Content-Security-Policy allows nothing else.
(function () {
  "use strict";
  var seconds = Number(document.body.getAttribute("data-refresh") || 0);
  if (!seconds) { return; }
  var live = document.getElementById("live");

  function openDetails() {
    var open = [];
    document.querySelectorAll("main details[open][id]").forEach(function (d) { open.push(d.id); });
    return open;
  }

  function poll() {
    fetch(window.location.href, { cache: "no-store", headers: { Accept: "text/html" } })
      .then(function (answer) {
        return answer.text().then(function (text) { return { ok: answer.ok, text: text }; });
      })
      .then(function (got) {
        var fresh = new DOMParser().parseFromString(got.text, "text/html");
        var main = fresh.querySelector("main");
        if (!got.ok || !main) {
          if (live) { live.textContent = "live · the last refresh failed; retrying"; }
          window.setTimeout(poll, seconds * 1000);
          return;
        }
        var open = openDetails();
        var y = window.scrollY;
        document.querySelector("main").replaceWith(document.adoptNode(main));
        open.forEach(function (id) {
          var d = document.getElementById(id);
          if (d) { d.open = true; }
        });
        window.scrollTo(0, y);
        var stamp = new Date().toLocaleTimeString();
        if (fresh.body.getAttribute("data-refresh")) {
          if (live) { live.textContent = "live · updated " + stamp; }
          window.setTimeout(poll, seconds * 1000);
        } else {
          document.body.removeAttribute("data-refresh");
          if (live) { live.textContent = "ended · updated " + stamp; }
        }
      })
      .catch(function () {
        if (live) { live.textContent = "live · the dashboard cannot be reached; retrying"; }
        window.setTimeout(poll, seconds * 1000);
      });
  }

  window.setTimeout(poll, seconds * 1000);
})();
