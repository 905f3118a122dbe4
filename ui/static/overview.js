// Overview: /v1/status and /v1/proxies, refreshed on every "served" server-sent event; the
// catalog's health counts from every "catalog" event.
"use strict";
(function () {
  var m = mesh, el = m.el;
  var servedVersion = "";

  function setText(id, node) {
    var e = m.clear(document.getElementById(id));
    e.appendChild(typeof node === "string" ? document.createTextNode(node) : node);
  }

  function renderStatus(st) {
    servedVersion = st.version;
    setText("served-version", el("code", { text: st.version || "(nothing served yet)" }));
    setText("served-commit", m.commitLink(st.commit));
    setText("served-pin", st.pin ? el("span", {}, ["📌 pinned to ", el("code", { text: st.pin })]) : "no (follows Git)");
    setText("served-head", st.head ? el("span", {}, [el("code", { text: st.head.version }), " from ", m.commitLink(st.head.commit)]) : "—");
    setText("served-node", st.node + " (" + st.raftState + ")");
    setText("served-leader", st.leader ? st.leader + (st.leaderAddress ? " at " + st.leaderAddress : "") : "no leader");
    var tb = m.clear(document.getElementById("servers"));
    (st.servers || []).forEach(function (s) {
      tb.appendChild(el("tr", {}, [el("td", { text: s.id }), el("td", { text: s.leader ? "★ leader" : "follower" }),
        el("td", { text: s.raftAddress }), el("td", { text: s.httpAddress || "" }), el("td", { text: s.suffrage })]));
    });
    var le = m.clear(document.getElementById("last-error"));
    if (!st.lastError) {
      le.appendChild(el("p", { text: "none: the newest commit is served" }));
    } else {
      var f = st.lastError;
      le.appendChild(el("p", {}, ["✗ commit ", m.commitLink(f.commit), " failed at step " + (f.step || "compile") +
        (f.retryAt ? "; the leader retries at " + f.retryAt : "") + "; the last good snapshot stays served."]));
      var ul = el("ul", { class: "errors", id: "error-list" });
      (f.errors || []).forEach(function (e) {
        ul.appendChild(el("li", {}, [el("code", { text: (e.pos ? e.pos + ": " : "") + e.msg })]));
      });
      le.appendChild(ul);
    }
  }

  function renderProxies(view) {
    var counts = { SYNCED: 0, STALE: 0, NACK: 0, DISCONNECTED: 0 }, other = 0;
    (view.proxies || []).forEach(function (p) {
      if (servedVersion && p.version && p.version.indexOf(servedVersion + "-") !== 0) { other++; return; }
      counts[p.sync] = (counts[p.sync] || 0) + 1;
    });
    var ul = m.clear(document.getElementById("sync-counts"));
    Object.keys(counts).forEach(function (k) {
      ul.appendChild(el("li", { id: "count-" + k.toLowerCase() }, [m.syncBadge(k), " " + counts[k]]));
    });
    if (other) { ul.appendChild(el("li", { text: other + " on another version" })); }
  }

  // renderCatalog shows the catalog's summary (catalog.Summarize, as GET /v1/catalog/summary
  // answers it) that the event stream sends at once and at each change.
  function renderCatalog(sum) {
    var c = { passing: 0, warning: 0, critical: 0 }, undeclared = [];
    (sum.services || []).forEach(function (s) {
      c.passing += s.passing; c.warning += s.warning; c.critical += s.critical;
      if (s.undeclared) { undeclared.push(s); }
    });
    var ul = m.clear(document.getElementById("catalog-counts"));
    ul.appendChild(el("li", { id: "cat-services" }, [(sum.services || []).length + " services with instances"]));
    [["passing", "✓"], ["warning", "!"], ["critical", "✗"]].forEach(function (k) {
      ul.appendChild(el("li", { id: "cat-" + k[0], "data-count": String(c[k[0]]) },
        [m.healthBadge(k[0]), " " + c[k[0]] + " instance" + (c[k[0]] === 1 ? "" : "s")]));
    });
    ul.appendChild(el("li", { id: "cat-nodes" }, [sum.nodes + " node" + (sum.nodes === 1 ? "" : "s") +
      (sum.criticalNodes ? ", " + sum.criticalNodes + " not syncing" : "")]));
    var box = m.clear(document.getElementById("catalog-undeclared"));
    if (undeclared.length) {
      box.appendChild(el("p", { text: "Registered but not declared in Git (listed, routed to nobody):" }));
      var list = el("ul", { id: "undeclared-list" });
      undeclared.forEach(function (s) {
        list.appendChild(el("li", { "data-service": s.name }, [m.undeclaredBadge(), " ", m.serviceLink(s.name),
          " · " + (s.passing + s.warning + s.critical) + " instance(s)"]));
      });
      box.appendChild(list);
    }
    var sec = document.getElementById("catalog");
    sec.dataset.index = String(sum.index);
    sec.hidden = false;
  }

  function refresh() {
    return m.getJSON("/v1/status").then(function (st) {
      renderStatus(st);
      return m.getJSON("/v1/proxies");
    }).then(renderProxies).catch(m.showError);
  }

  document.addEventListener("DOMContentLoaded", function () {
    refresh();
    m.info().then(function (i) {
      if (!i.catalog) {
        var sec = document.getElementById("catalog");
        m.clear(document.getElementById("catalog-counts")).appendChild(el("li", { text: "this server has no catalog" }));
        sec.hidden = false;
      }
    }).catch(m.showError);
    var live = document.getElementById("live");
    var es = new EventSource("/ui/api/events");
    es.addEventListener("served", function () { live.textContent = "connected"; refresh(); });
    es.addEventListener("catalog", function (e) { renderCatalog(JSON.parse(e.data)); });
    es.onerror = function () { live.textContent = "reconnecting…"; };
    // A failed commit or a pin changes the status without a new snapshot being served, and
    // proxies change sync state on their own: poll those (the status often, the cluster-wide
    // proxy view less).
    setInterval(function () { m.getJSON("/v1/status").then(renderStatus).catch(m.showError); }, 2000);
    setInterval(function () { m.getJSON("/v1/proxies").then(renderProxies).catch(m.showError); }, 5000);
  });
})();
