// Versions: GET /v1/snapshots with pin and unpin (POST /v1/pin, /v1/unpin with the token), and a
// diff of any two versions from /ui/api/diff (mesh review's report).
"use strict";
(function () {
  var m = mesh, el = m.el;

  function result(text, ok) {
    var p = document.getElementById("write-result");
    p.textContent = text;
    p.className = ok ? "ok" : "error";
  }

  function act(path, body, done) {
    m.write(path, body).then(function () { result("✓ " + done, true); load(); })
      .catch(function (e) { result("✗ " + e.message, false); });
  }

  function render(list) {
    var tb = m.clear(document.getElementById("versions"));
    var pinned = list.some(function (s) { return s.pinned; });
    document.getElementById("v-state").textContent = pinned ? "📌 Pinned: Git commits are recorded but not served until unpinned." : "Following Git: the newest good commit is served.";
    list.forEach(function (s) {
      var state = [];
      if (s.served) { state.push("▶ served"); }
      if (s.pinned) { state.push("📌 pinned" + (s.pinnedBy ? " by " + s.pinnedBy : "") + (s.pinnedAt ? " at " + s.pinnedAt : "")); }
      if (s.forced) { state.push("force-pushed"); }
      var btn = s.pinned
        ? el("button", { type: "button", class: "unpin", "data-version": s.version, text: "Unpin" })
        : el("button", { type: "button", class: "pin", "data-version": s.version, text: "Pin " + s.version.slice(0, 8) });
      btn.addEventListener("click", function () {
        if (s.pinned) { act("/v1/unpin", {}, "unpinned"); } else { act("/v1/pin", { version: s.version }, "pinned " + s.version); }
      });
      tb.appendChild(el("tr", { "data-version": s.version }, [el("td", {}, [el("code", { text: s.version })]), el("td", {}, [m.commitLink(s.commit)]),
        el("td", { text: s.time }), el("td", { class: "state", text: state.join(", ") || "—" }), el("td", {}, [btn])]));
    });
    ["diff-base", "diff-head"].forEach(function (id, k) {
      var sel = m.clear(document.getElementById(id));
      list.forEach(function (s, i) {
        var o = el("option", { value: s.version, text: s.version + " " + m.short(s.commit) });
        if ((k === 0 && i === 1) || (k === 1 && i === 0)) { o.selected = true; }
        sel.appendChild(o);
      });
    });
  }

  function diff(e) {
    e.preventDefault();
    var b = document.getElementById("diff-base").value, h = document.getElementById("diff-head").value;
    m.getJSON("/ui/api/diff?base=" + encodeURIComponent(b) + "&head=" + encodeURIComponent(h)).then(function (d) {
      var box = m.clear(document.getElementById("diff")), r = d.report;
      box.appendChild(el("p", { id: "diff-summary", text: r.summary }));
      if (r.access.length) {
        var t = el("table", { id: "diff-access" }, [el("thead", {}, [el("tr", {}, ["Source", "Destination", "Before", "After", "Detail", "Position"].map(function (x) { return el("th", { scope: "col", text: x }); }))])]);
        var tb = el("tbody", {});
        r.access.forEach(function (a) {
          tb.appendChild(el("tr", {}, [a.source, a.destination, a.before, a.after, a.detail, a.position || ""].map(function (x) { return el("td", { text: x }); })));
        });
        t.appendChild(tb);
        box.appendChild(t);
      }
      box.appendChild(el("details", { open: "" }, [el("summary", { text: "mesh review (Markdown)" }), el("pre", { id: "diff-markdown", text: d.markdown })]));
    }).catch(m.showError);
  }

  function load() { return m.getJSON("/v1/snapshots").then(function (b) { render(b.snapshots || []); }).catch(m.showError); }

  document.addEventListener("DOMContentLoaded", function () {
    document.getElementById("diff-form").addEventListener("submit", diff);
    load();
  });
})();
