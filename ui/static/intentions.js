// The intentions matrix, windowed: the server evaluates and the page renders only the window
// (at most WIN × WIN cells), whatever the number of services. Arrow keys move the focus between
// cells and shift the window at its edges; Enter (or a click) shows the deciding intention.
"use strict";
(function () {
  var m = mesh, el = m.el;
  var WIN = 25;
  var st = { row: 0, col: 0, fi: 0, fj: 0, data: null, seq: 0 };

  function load(focus) {
    var q = "?row=" + st.row + "&col=" + st.col + "&rows=" + WIN + "&cols=" + WIN +
      "&src=" + encodeURIComponent(document.getElementById("f-src").value.trim()) +
      "&dst=" + encodeURIComponent(document.getElementById("f-dst").value.trim());
    var seq = ++st.seq;
    return m.getJSON("/ui/api/snapshots/served/matrix" + q).then(function (d) {
      if (seq !== st.seq) { return; }
      st.data = d; st.row = d.row; st.col = d.col;
      render(focus);
    }).catch(m.showError);
  }

  function render(focus) {
    var d = st.data, t = m.clear(document.getElementById("matrix"));
    document.getElementById("m-stats").textContent = d.sources + " sources × " + d.destinations +
      " destinations (version " + d.version + ", default " + d.default + "); showing sources " +
      (d.rows.length ? (d.row + 1) + "–" + (d.row + d.rows.length) : "none") + ", destinations " +
      (d.cols.length ? (d.col + 1) + "–" + (d.col + d.cols.length) : "none");
    var head = el("tr", {}, [el("th", { scope: "col", class: "corner", text: "source ↓ / destination →" })]);
    d.cols.forEach(function (c) { head.appendChild(el("th", { scope: "col", class: "col" }, [el("span", {}, [m.serviceLink(c.id)])])); });
    t.appendChild(el("thead", {}, [head]));
    var body = el("tbody", {});
    st.fi = Math.min(st.fi, Math.max(d.rows.length - 1, 0));
    st.fj = Math.min(st.fj, Math.max(d.cols.length - 1, 0));
    d.rows.forEach(function (r, i) {
      var tr = el("tr", {}, [el("th", { scope: "row" }, [m.serviceLink(r.id)])]);
      d.cells[i].forEach(function (c, j) {
        var td = el("td", {
          role: "gridcell", class: "cell v-" + c.verdict + (c.l7 ? " v-l7" : ""),
          "data-src": r.id, "data-dst": d.cols[j].id, "data-verdict": c.verdict, "data-l7": c.l7 ? "1" : "0",
          "data-i": i, "data-j": j, tabindex: (i === st.fi && j === st.fj) ? "0" : "-1",
          "aria-label": r.id + " to " + d.cols[j].id + ": " + c.verdict + (c.l7 ? ", L7 rules decide" : ""),
          title: c.reason
        }, [c.verdict === "allow" ? "✓" : "✗"]);
        if (c.l7) { td.appendChild(el("sup", { text: "L7" })); }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    t.appendChild(body);
    if (focus) { focusCell(); }
  }

  function cellAt(i, j) { return document.querySelector('#matrix td[data-i="' + i + '"][data-j="' + j + '"]'); }

  function focusCell() {
    var c = cellAt(st.fi, st.fj);
    if (!c) { return; }
    document.querySelectorAll('#matrix td[tabindex="0"]').forEach(function (x) { x.setAttribute("tabindex", "-1"); });
    c.setAttribute("tabindex", "0");
    c.focus();
  }

  function detail(i, j) {
    var d = st.data, c = d.cells[i][j], dst = d.cols[j];
    var box = m.clear(document.getElementById("cell-detail"));
    box.appendChild(el("h2", {}, [d.rows[i].id + " → " + dst.id + ": ", m.verdictBadge(c)]));
    var dl = el("dl", { class: "facts" });
    function row(k, v) { dl.appendChild(el("dt", { text: k })); dl.appendChild(el("dd", {}, [v])); }
    row("Reason", c.reason);
    row("Deciding intention", c.intention ? c.intention + " (precedence " + c.precedence + ")" : "none: the mesh default decides");
    row("Position", c.position || "—");
    row("Owners of " + dst.id, dst.owners.join(", ") || "none");
    box.appendChild(dl);
  }

  function move(di, dj) {
    var d = st.data, ni = st.fi + di, nj = st.fj + dj, shift = false;
    if (ni < 0 && st.row > 0) { st.row = Math.max(0, st.row + ni); ni = 0; shift = true; }
    if (ni >= d.rows.length && st.row + d.rows.length < d.sources) { st.row += ni - d.rows.length + 1; ni = d.rows.length - 1; shift = true; }
    if (nj < 0 && st.col > 0) { st.col = Math.max(0, st.col + nj); nj = 0; shift = true; }
    if (nj >= d.cols.length && st.col + d.cols.length < d.destinations) { st.col += nj - d.cols.length + 1; nj = d.cols.length - 1; shift = true; }
    st.fi = Math.max(0, Math.min(ni, d.rows.length - 1));
    st.fj = Math.max(0, Math.min(nj, d.cols.length - 1));
    if (shift) { load(true); } else { focusCell(); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var t = document.getElementById("matrix");
    t.addEventListener("keydown", function (e) {
      var k = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1],
        PageUp: [-WIN, 0], PageDown: [WIN, 0] }[e.key];
      if (k) { e.preventDefault(); move(k[0], k[1]); return; }
      if (e.key === "Enter" || e.key === " ") {
        var c = e.target.closest("td");
        if (c) { e.preventDefault(); detail(+c.dataset.i, +c.dataset.j); }
      }
    });
    t.addEventListener("click", function (e) {
      var c = e.target.closest("td");
      if (c) { st.fi = +c.dataset.i; st.fj = +c.dataset.j; focusCell(); detail(st.fi, st.fj); }
    });
    var timer = 0;
    ["f-src", "f-dst"].forEach(function (id) {
      document.getElementById(id).addEventListener("input", function () {
        clearTimeout(timer);
        timer = setTimeout(function () { st.row = st.col = 0; load(false); }, 200);
      });
    });
    document.getElementById("filters").addEventListener("submit", function (e) { e.preventDefault(); });
    document.getElementById("m-up").addEventListener("click", function () { st.row = Math.max(0, st.row - WIN); load(false); });
    document.getElementById("m-down").addEventListener("click", function () { st.row += WIN; load(false); });
    document.getElementById("m-left").addEventListener("click", function () { st.col = Math.max(0, st.col - WIN); load(false); });
    document.getElementById("m-right").addEventListener("click", function () { st.col += WIN; load(false); });
    load(false);
  });
})();
