// Proxies: GET /v1/proxies as a proxy-status table, refreshed every few seconds.
"use strict";
(function () {
  var m = mesh, el = m.el;
  var TYPES = { CDS: "clusters", LDS: "listeners", EDS: "endpoints", RDS: "routes", SDS: "secrets", ECDS: "extensions" };

  function typeCell(p, short) {
    var st = (p.types || {})[TYPES[short]];
    if (!st) { return el("td", { class: "muted", text: "—" }); }
    var kids = [m.syncBadge(st.state)];
    if (st.acked) { kids.push(el("br", {})); kids.push(el("code", { class: "small", text: st.acked })); }
    return el("td", { "data-type": short, "data-state": st.state }, kids);
  }

  function render(view) {
    var tb = m.clear(document.getElementById("proxy-rows"));
    var counts = {};
    (view.proxies || []).forEach(function (p) {
      counts[p.sync] = (counts[p.sync] || 0) + 1;
      var nack = p.lastNack ? el("td", { class: "nack" }, [el("b", { text: "NACK " + p.lastNack.typeUrl.slice(p.lastNack.typeUrl.lastIndexOf(".") + 1) + ": " }),
        p.lastNack.error]) : el("td", { class: "muted", text: "—" });
      var tr = el("tr", { "data-node": p.nodeId }, [el("td", {}, [el("code", { text: p.nodeId })]), el("td", {}, [m.serviceLink(p.service)]),
        el("td", { text: p.server }), el("td", { text: p.shape }), el("td", {}, [el("code", { class: "small", text: p.version || "" })]),
        el("td", { class: "sync" }, [m.syncBadge(p.sync)])]);
      ["CDS", "LDS", "EDS", "RDS", "SDS", "ECDS"].forEach(function (t) { tr.appendChild(typeCell(p, t)); });
      tr.appendChild(nack);
      tb.appendChild(tr);
    });
    document.getElementById("p-stats").textContent = (view.proxies || []).length + " proxies: " +
      Object.keys(counts).sort().map(function (k) { return counts[k] + " " + k; }).join(", ");
    var un = m.clear(document.getElementById("unreachable"));
    (view.unreachable || []).forEach(function (u) {
      un.appendChild(el("p", { class: "error", text: "server " + u.server + " did not answer: " + u.error }));
    });
  }

  function refresh() { m.getJSON("/v1/proxies").then(render).catch(m.showError); }
  document.addEventListener("DOMContentLoaded", function () { refresh(); setInterval(refresh, 3000); });
})();
