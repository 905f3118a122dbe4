// Topology: services as nodes, declared upstreams as edges, laid out by Cytoscape.js. Edges carry
// their verdict as a label and a line style, not only a colour; the list under the graph has the
// same content for keyboard and screen-reader users.
"use strict";
(function () {
  var m = mesh, el = m.el;
  var data = null, cy = null;
  var BIG_MESH = 300;

  function edgeClass(e) { return e.reach; }
  function edgeLabel(e) { return { deny: "DENIED", l7: "L7", allow: "allow" }[e.reach]; }

  function filters() {
    return {
      svc: document.getElementById("f-service").value.trim(),
      owner: document.getElementById("f-owner").value,
      dc: document.getElementById("f-dc").value,
      denied: document.getElementById("f-denied").checked
    };
  }

  function visible(f) {
    var nodes = data.nodes.filter(function (n) {
      return (!f.owner || n.owners.indexOf(f.owner) >= 0) && (!f.dc || n.datacenters.indexOf(f.dc) >= 0);
    });
    var keep = {};
    nodes.forEach(function (n) { keep[n.id] = true; });
    var edges = data.edges.filter(function (e) {
      return keep[e.source] && keep[e.target] && (!f.denied || e.reach === "deny");
    });
    if (f.svc) {
      var near = {};
      nodes.forEach(function (n) { if (n.id.indexOf(f.svc) >= 0) { near[n.id] = true; } });
      edges = edges.filter(function (e) { return near[e.source] || near[e.target]; });
      edges.forEach(function (e) { near[e.source] = near[e.target] = true; });
      nodes = nodes.filter(function (n) { return near[n.id]; });
    }
    return { nodes: nodes, edges: edges };
  }

  function draw() {
    var v = visible(filters());
    var started = performance.now();
    var els = v.nodes.map(function (n) {
      return { data: { id: n.id, label: n.id + "\n" + n.protocol } };
    }).concat(v.edges.map(function (e, i) {
      return { data: { id: "e" + i, source: e.source, target: e.target, label: edgeLabel(e) }, classes: edgeClass(e) };
    }));
    if (cy) { cy.destroy(); }
    var big = v.nodes.length > 150;
    var huge = v.nodes.length > 400;
    cy = cytoscape({
      container: document.getElementById("graph"),
      elements: els,
      wheelSensitivity: 0.3,
      // Large graphs: straight edges, no redraw while panning, labels only when zoomed in.
      hideEdgesOnViewport: big, textureOnViewport: big, pixelRatio: big ? 1 : "auto",
      style: [
        { selector: "node", style: { label: "data(label)", "text-wrap": "wrap", "font-size": 12, "text-valign": "bottom",
          "background-color": "#4a6fa5", shape: "round-rectangle", width: 18, height: 18, "text-background-color": "#fff", "text-background-opacity": 0.85, "min-zoomed-font-size": big ? 9 : 0 } },
        { selector: "edge", style: { width: 1.5, "curve-style": huge ? "haystack" : "bezier", "target-arrow-shape": huge ? "none" : "triangle",
          label: big ? "" : "data(label)", "font-size": 10, "text-background-color": "#fff", "text-background-opacity": 1 } },
        { selector: "edge.allow", style: { "line-color": "#2e7d32", "target-arrow-color": "#2e7d32", "line-style": "solid" } },
        { selector: "edge.l7", style: { "line-color": "#b26a00", "target-arrow-color": "#b26a00", "line-style": "dashed" } },
        { selector: "edge.deny", style: { "line-color": "#c62828", "target-arrow-color": "#c62828", width: 4,
          "line-style": "solid", "target-arrow-shape": huge ? "none" : "tee", "font-weight": "bold" } }
      ],
      layout: big ? { name: "grid", avoidOverlap: !huge, animate: false } : { name: "cose", animate: false, randomize: false, nodeRepulsion: function () { return 400000; }, idealEdgeLength: function () { return 120; }, padding: 30 }
    });
    cy.on("tap", "node", function (ev) { location.href = "/ui/services/" + encodeURIComponent(ev.target.id()); });
    window.meshLayoutMs = performance.now() - started; // read by the benchmark
    document.getElementById("topo-stats").textContent = v.nodes.length + " services, " + v.edges.length +
      " declared upstreams (" + v.edges.filter(function (e) { return e.reach === "deny"; }).length + " denied); laid out in " +
      Math.round(window.meshLayoutMs) + " ms";
    list(v);
    requestAnimationFrame(function () { window.meshPaintedMs = performance.now(); }); // read by the benchmark
  }

  function list(v) {
    var byNode = {};
    v.edges.forEach(function (e) { (byNode[e.source] = byNode[e.source] || []).push(e); });
    var ul = m.clear(document.getElementById("node-list"));
    v.nodes.slice(0, 300).forEach(function (n) {
      var li = el("li", {}, [m.serviceLink(n.id), " (" + n.protocol + "; " + (n.owners.join(", ") || "no owners") + ")"]);
      var out = byNode[n.id] || [];
      if (out.length) {
        var sub = el("ul", {});
        out.forEach(function (e) {
          sub.appendChild(el("li", { class: "edge-" + edgeClass(e) }, ["→ " + e.target + ": ", el("b", { text: edgeLabel(e) }), " · intention check: ", m.verdictBadge(e),
            e.position ? " (" + e.position + ")" : ""]));
        });
        li.appendChild(sub);
      } else {
        li.appendChild(el("span", { class: "muted", text: " — calls no declared upstream" }));
      }
      ul.appendChild(li);
    });
    if (v.nodes.length > 300) { ul.appendChild(el("li", { text: "… " + (v.nodes.length - 300) + " more: filter to narrow" })); }
  }

  function options(id, values) {
    var s = document.getElementById(id);
    values.sort().forEach(function (v) { s.appendChild(el("option", { value: v, text: v })); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    m.getJSON("/ui/api/snapshots/served/topology").then(function (t) {
      window.meshDataMs = performance.now(); // read by the benchmark
      data = t;
      var owners = {}, dcs = {};
      t.nodes.forEach(function (n) {
        n.owners.forEach(function (o) { owners[o] = true; });
        n.datacenters.forEach(function (d) { dcs[d] = true; });
      });
      options("f-owner", Object.keys(owners));
      options("f-dc", Object.keys(dcs));
      var q = new URLSearchParams(location.search);
      document.getElementById("f-service").value = q.get("service") || "";
      document.getElementById("f-dc").value = q.get("dc") || "";
      if (q.has("owner")) {
        document.getElementById("f-owner").value = q.get("owner");
      } else if (t.nodes.length > BIG_MESH) {
        // A whole large mesh is a hairball: start with the first owner's services and say so.
        document.getElementById("f-owner").selectedIndex = 1;
        document.getElementById("topo-hint").textContent = t.nodes.length + " services: showing one owner's; choose owner \u201cany\u201d for all.";
      }
      ["f-owner", "f-dc", "f-denied"].forEach(function (id) { document.getElementById(id).addEventListener("change", draw); });
      var timer = 0;
      document.getElementById("f-service").addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(draw, 200); });
      document.getElementById("filters").addEventListener("submit", function (e) { e.preventDefault(); draw(); });
      draw();
    }).catch(m.showError);
  });
})();
