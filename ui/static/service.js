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
    var hc = s.healthCheck;
    document.getElementById("svc-health").textContent = hc ? "health check (run by the servers on the endpoints of their datacenter): " +
      (hc.http ? "HTTP " + hc.http : hc.grpc ? "gRPC " + hc.grpc : "TCP") + " every " + hc.interval + ", timeout " + hc.timeout :
      "no health check declared: Git's endpoints are routed to as healthy";
  }

  // instances shows /ui/api/services/{name}/instances: the catalog's instances with their
  // health and every check's status, and Git's endpoints with the health the servers recorded.
  function instances(v) {
    var tb = m.clear(document.getElementById("svc-catalog"));
    v.instances.forEach(function (i) {
      var checks = el("ul", { class: "checks" });
      i.checks.forEach(function (c) {
        checks.appendChild(el("li", { "data-check": c.id }, [m.healthBadge(c.status), " " + (c.name || c.id) + " (" + c.type + ")"]));
      });
      if (i.nodeHealth === "critical") { checks.appendChild(el("li", {}, [m.healthBadge("critical"), " node " + i.node + " stopped syncing"])); }
      if (!checks.firstChild) { checks.appendChild(el("li", { class: "muted", text: "no checks" })); }
      tb.appendChild(el("tr", { "data-instance": i.id, "data-health": i.status, class: v.declared ? "" : "undeclared-row" }, [
        el("td", {}, [el("code", { text: i.id })]), el("td", { text: i.node }),
        el("td", {}, [el("code", { text: i.address + ":" + i.port })]),
        el("td", { class: "health" }, [m.healthBadge(i.status)]), el("td", {}, [checks])]));
    });
    if (!tb.firstChild) { tb.appendChild(el("tr", {}, [el("td", { colspan: 5, class: "muted", text: "no instance registered" })])); }
    var gt = m.clear(document.getElementById("svc-inst"));
    v.endpoints.forEach(function (e) {
      gt.appendChild(el("tr", { "data-endpoint": e.address + ":" + e.port, "data-health": e.health }, [
        el("td", {}, [el("code", { text: e.address + ":" + e.port })]), el("td", { text: e.datacenter }),
        el("td", { text: JSON.stringify(e.meta || {}) }), el("td", { class: "health" }, [m.healthBadge(e.health)])]));
    });
    if (!gt.firstChild) { gt.appendChild(el("tr", {}, [el("td", { colspan: 4, class: "muted", text: v.declared ? "none in Git" : "not declared in Git" })])); }
    var flag = document.getElementById("svc-undeclared");
    flag.hidden = v.declared;
    if (!v.declared) {
      m.clear(flag).appendChild(el("span", {}, [m.undeclaredBadge(), " Git does not declare " + name +
        ": its instances are listed here and routed to nobody until a commit declares it."]));
    }
    document.getElementById("svc-catalog").dataset.index = String(v.index);
  }

  // undeclared fills the facts of a service that only the catalog knows.
  function undeclared() {
    var dl = m.clear(document.getElementById("svc-facts"));
    dl.appendChild(el("dt", { text: "Declared in Git" }));
    dl.appendChild(el("dd", {}, [m.undeclaredBadge(), " no: not in the served snapshot"]));
    ["svc-up", "svc-down", "svc-in"].forEach(function (id) {
      var tb = m.clear(document.getElementById(id));
      tb.appendChild(el("tr", {}, [el("td", { colspan: 5, class: "muted", text: "none: the service is not declared" })]));
    });
    m.clear(document.getElementById("svc-chain")).appendChild(el("p", { class: "muted", text: "no chain: nobody routes to it" }));
  }

  var shown = "";
  function loadInstances() {
    return m.getJSON("/ui/api/services/" + encodeURIComponent(name) + "/instances").then(function (v) {
      var key = v.index + "@" + v.version;
      if (key !== shown) { shown = key; instances(v); }
      return v;
    });
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

  document.addEventListener("DOMContentLoaded", function () {
    var view = "/ui/api/snapshots/served/services/" + encodeURIComponent(name);
    m.info().then(function (i) {
      if (!i.catalog) {
        m.clear(document.getElementById("svc-catalog")).appendChild(el("tr", {}, [el("td", { colspan: 5, class: "muted", text: "this server has no catalog" })]));
        return m.getJSON(view).then(render);
      }
      // The catalog first: a service only the catalog knows has no view in the snapshot.
      return loadInstances().then(function (v) {
        var es = new EventSource("/ui/api/events");
        es.addEventListener("catalog", function () { loadInstances().catch(m.showError); });
        if (!v.declared) { undeclared(); return; }
        return m.getJSON(view).then(render);
      });
    }).catch(m.showError);
    m.getJSON("/v1/proxies").then(proxies).catch(m.showError);
  });
})();
