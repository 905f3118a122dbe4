// Shared by every page: JSON reads, the API token (sessionStorage), escaping, verdict labels.
"use strict";
var mesh = (function () {
  var TOKEN = "mesh.token";

  function getJSON(path) {
    return fetch(path, { headers: { Accept: "application/json" } }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { throw new Error(path + ": " + (body && body.error || r.status)); }
        return body;
      });
    });
  }

  function token() { return sessionStorage.getItem(TOKEN) || ""; }

  // write POSTs body to an API write route with the token. Without a token it refuses to send.
  function write(path, body) {
    var t = token();
    if (!t) {
      return Promise.reject(new Error("refused: enter the API token above first (writes need it)"));
    }
    return fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + t },
      body: JSON.stringify(body || {})
    }).then(function (r) {
      return r.json().then(function (b) {
        if (!r.ok) { throw new Error("refused by the server (" + r.status + "): " + (b.error || "")); }
        return b;
      });
    });
  }

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) {
      if (k === "text") { e.textContent = attrs[k]; }
      else if (k === "class") { e.className = attrs[k]; }
      else { e.setAttribute(k, attrs[k]); }
    }
    (children || []).forEach(function (c) {
      e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return e;
  }

  function clear(e) { while (e.firstChild) { e.removeChild(e.firstChild); } return e; }

  // verdictBadge renders a verdict with a symbol and a word, never colour alone.
  function verdictBadge(v) {
    var word = v.verdict === "allow" ? "✓ allow" : "✗ deny";
    var cls = "badge v-" + v.verdict;
    var kids = [word];
    if (v.l7) {
      cls += " v-l7";
      kids.push(" ");
      kids.push(el("b", { text: "L7", title: "the deciding intention's permissions decide per request" }));
    }
    return el("span", { class: cls }, kids);
  }

  function syncBadge(s) {
    var sym = { SYNCED: "✓", STALE: "…", NACK: "✗", DISCONNECTED: "○" }[s] || "?";
    return el("span", { class: "badge s-" + (s || "").toLowerCase() }, [sym + " " + s]);
  }

  // healthBadge renders a health word (passing, warning, critical, or a Git endpoint's unchecked,
  // pending, elsewhere) with a symbol, never colour alone.
  function healthBadge(h) {
    var sym = { passing: "✓", warning: "!", critical: "✗", unchecked: "–", pending: "…", elsewhere: "↗" }[h] || "?";
    return el("span", { class: "badge h-" + h, "data-health": h }, [sym + " " + h]);
  }

  function undeclaredBadge() {
    return el("span", { class: "badge undeclared", title: "Git does not declare this service: its instances are routed to nobody" }, ["⚠ undeclared"]);
  }

  function short(sha) { return (sha || "").slice(0, 12); }

  var info = null;
  function getInfo() {
    if (!info) { info = getJSON("/ui/api/info"); }
    return info;
  }

  function commitLink(sha) {
    if (!sha) { return document.createTextNode("(none: a directory, or nothing served)"); }
    var code = el("code", { text: short(sha), title: sha });
    var span = el("span", {}, [code]);
    getInfo().then(function (i) {
      if (i.commitURL) {
        clear(span).appendChild(el("a", { href: i.commitURL + sha, rel: "noreferrer" }, [code]));
      }
    }).catch(showError);
    return span;
  }

  function serviceLink(name) {
    return el("a", { href: "/ui/services/" + encodeURIComponent(name) }, [name]);
  }

  function showError(err) {
    var p = document.getElementById("error");
    if (p) { p.textContent = String(err && err.message || err); p.hidden = false; }
  }

  function tokenForm() {
    var form = document.getElementById("token-form");
    var input = document.getElementById("token-input");
    var state = document.getElementById("token-state");
    function show() { state.textContent = token() ? "token set for this tab" : "no token: read-only"; }
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      if (input.value) { sessionStorage.setItem(TOKEN, input.value); }
      input.value = "";
      show();
    });
    document.getElementById("token-forget").addEventListener("click", function () {
      sessionStorage.removeItem(TOKEN);
      show();
    });
    show();
  }
  document.addEventListener("DOMContentLoaded", tokenForm);

  return {
    getJSON: getJSON, write: write, el: el, clear: clear, verdictBadge: verdictBadge,
    syncBadge: syncBadge, healthBadge: healthBadge, undeclaredBadge: undeclaredBadge, short: short, commitLink: commitLink, serviceLink: serviceLink,
    showError: showError, info: getInfo
  };
})();
