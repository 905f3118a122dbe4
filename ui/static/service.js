// A service: facts, upstreams and downstreams with verdicts, the routing chain, instances and its
// proxies.
"use strict";
(function () {
  var m = mesh, el = m.el;
  var name = document.body.dataset.name;

  function linkRows(id, links, withPort) {
    var tb = m.clear(document.getElementById(id));
    if (!links.length) { tb.appendChild(el("tr", {}, [el("td", { colspan: withPort ? 5 : 4, class: "muted", text: "none" })])); }
    links.forEach(function (l) {
      var cells = [el("td", {}, [m.serviceLink(l.service)])];
      if (withPort) { cells.push(el("td", { text: String(l.localPort || "") })); }
      cells.push(el("td", {}, [m.verdictBadge(l)]));
      cells.push(el("td", { text: l.intention ? l.intention + " (" + l.precedence + ")" : "mesh default" }));
      cells.push(el("td", {}, [el("code", { text: l.position || "—" })]));
      tb.appendChild(el("tr", {}, cells));
    });
  }

  function chain(c) {
    var box = m.clear(document.getElementById("svc-chain"));
    if (!c) { box.appendChild(el("p", { class: "muted", text: "no chain" })); return; }
    var ol = el("ol", {});
    (c.routes || []).forEach(function (r) {
      var what = r.match ? JSON.stringify(r.match) : "everything else";
      var splits = el("ul", {});
      (r.splits || []).forEach(function (s) {
        var t = c.targets[s.target] || {};
        var li = el("li", {}, [el("code", { text: s.target }), " " + (s.weight / 100) + "%"]);
        if (t.failover && t.failover.length) { li.appendChild(document.createTextNode(" · failover → " + t.failover.join(", "))); }
        splits.appendChild(li);
      });
      var extra = [];
      if (r.requestTimeout && r.requestTimeout !== "0s") { extra.push("timeout " + r.requestTimeout); }
      if (r.numRetries) { extra.push(r.numRetries + " retries on " + (r.retryOn || []).join(",")); }
      if (r.prefixRewrite) { extra.push("rewrite " + r.prefixRewrite); }
      ol.appendChild(el("li", {}, ["match " + what + (extra.length ? " (" + extra.join("; ") + ")" : ""), splits]));
    });
    box.appendChild(ol);
  }

  function render(v) {
    var s = v.service, dl = m.clear(document.getElementById("svc-facts"));
    function row(k, val) { dl.appendChild(el("dt", { text: k })); dl.appendChild(el("dd", {}, [val])); }
    row("Protocol", s.protocol);
    row("Port", String(s.port));
    row("Owners", (s.owners || []).join(", ") || "none");
    row("Defined at", el("code", { text: v.position || "—" }));
    Object.keys(v.routing).sort().forEach(function (k) { row(k, el("code", { text: v.routing[k] })); });
    linkRows("svc-up", v.upstreams, true);
    linkRows("svc-down", v.downstreams, false);
    var tb = m.clear(document.getElementById("svc-in"));
    v.inbound.forEach(function (i) {
      tb.appendChild(el("tr", {}, [el("td", { text: i.source }), el("td", { text: String(i.precedence) }),
        el("td", { text: i.action || ("permissions (" + (i.permissions || []).length + ", L7)") }),
        el("td", {}, [el("code", { text: i.position || "—" })])]));
    });
    chain(v.chain);
    var inst = m.clear(document.getElementById("svc-inst"));
    (s.endpoints || []).forEach(function (e) {
      inst.appendChild(el("tr", {}, [el("td", {}, [el("code", { text: e.address + ":" + e.port })]), el("td", { text: e.datacenter }),
        el("td", { text: JSON.stringify(e.meta || {}) })]));
    });
    var hc = s.healthCheck;
    document.getElementById("svc-health").textContent = hc ? "health check: " + (hc.http ? "HTTP " + hc.http : hc.grpc ? "gRPC " + hc.grpc : "TCP") +
      " every " + hc.interval + ", timeout " + hc.timeout : "no health check declared";
  }

  function proxies(view) {
    var tb = m.clear(document.getElementById("svc-proxies"));
    (view.proxies || []).filter(function (p) { return p.service === name; }).forEach(function (p) {
      var types = Object.keys(p.types || {}).sort().map(function (u) { return u + " " + p.types[u].state; }).join(", ");
      tb.appendChild(el("tr", {}, [el("td", {}, [el("code", { text: p.nodeId })]), el("td", {}, [m.syncBadge(p.sync)]),
        el("td", { text: types + (p.lastNack ? "; NACK: " + p.lastNack.error : "") })]));
    });
    if (!tb.firstChild) { tb.appendChild(el("tr", {}, [el("td", { colspan: 3, class: "muted", text: "no proxy connected" })])); }
  }

  // catalog lists the instances registered in the catalog (when the server has one) with the
  // worst status of their checks, after the instances declared in Git.
  function catalog(entries) {
    var inst = document.getElementById("svc-inst");
    (entries || []).forEach(function (e) {
      var worst = "passing";
      (e.Checks || []).forEach(function (c) {
        if (c.Status === "critical" || (c.Status === "warning" && worst === "passing")) { worst = c.Status; }
      });
      var sym = { passing: "✓", warning: "!", critical: "✗" }[worst] || "?";
      var svc = e.Service || {};
      inst.appendChild(el("tr", {}, [el("td", {}, [el("code", { text: (svc.Address || (e.Node || {}).Address || "") + ":" + (svc.Port || "") })]),
        el("td", { text: (e.Node || {}).Datacenter || "" }), el("td", { text: "catalog: " + sym + " " + worst })]));
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    m.getJSON("/ui/api/snapshots/served/services/" + encodeURIComponent(name)).then(function (v) {
      render(v);
      return m.info();
    }).then(function (i) {
      if (i.catalog) { return m.getJSON("/v1/health/service/" + encodeURIComponent(name)).then(catalog); }
    }).catch(m.showError);
    m.getJSON("/v1/proxies").then(proxies).catch(m.showError);
  });
})();
