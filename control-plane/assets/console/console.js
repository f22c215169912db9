// The console's one script: follows the fleet live. The server sends small notices naming
// what changed; when one names what this page shows, the page reads itself again and swaps
// its live part in place. No HTML is built here: the new part is the server's own page,
// parsed by the browser (which runs no script in it).
(function () {
  "use strict";
  var live = document.getElementById("live");
  var status = document.getElementById("live-status");
  var topics = (document.body.getAttribute("data-topics") || "").split(" ").filter(Boolean);
  if (!live || !status || topics.length === 0 || !window.EventSource) {
    return;
  }
  var busy = false;
  var again = false;

  function show(state) {
    status.setAttribute("data-state", state);
  }

  function refresh() {
    if (leaving) {
      return;
    }
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.redirected || response.status === 401) {
          window.location.reload();
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) {
          return;
        }
        var page = new DOMParser().parseFromString(html, "text/html");
        var fresh = page.getElementById("live");
        if (fresh) {
          live.replaceChildren.apply(live, Array.prototype.slice.call(fresh.childNodes).map(function (node) {
            return document.adoptNode(node);
          }));
          live.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  var source = new EventSource("/console/events");
  var opened = false;
  // A form being submitted leaves the page (signing out ends the session, whose stream then
  // says so): stop following, so no reload races the form's own navigation.
  var leaving = false;
  document.addEventListener("submit", function () {
    leaving = true;
    source.close();
  }, true);
  source.addEventListener("hello", function () {
    show("on");
    // After a reconnect, read once: changes may have happened while the stream was down.
    if (opened) {
      refresh();
    }
    opened = true;
  });
  source.addEventListener("change", function (event) {
    var kinds = String(event.data).split(" ");
    if (kinds.some(function (kind) { return topics.indexOf(kind) >= 0; })) {
      refresh();
    }
  });
  source.addEventListener("ended", function () {
    source.close();
    if (!leaving) {
      window.location.reload();
    }
  });
  source.addEventListener("error", function () {
    if (leaving) {
      return;
    }
    if (source.readyState === EventSource.CLOSED) {
      // Refused (the session is gone, e.g. after a restart): the reload goes to sign-in.
      show("off");
      window.setTimeout(function () { window.location.reload(); }, 2000);
    } else {
      show("reconnecting");
    }
  });
})();
