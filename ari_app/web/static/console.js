// Siaga 112 operator console: live calls over SSE, a ticket card, classify and dispatch.
"use strict";
(function () {
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var queue = document.querySelector("#queue tbody");
  var recent = document.querySelector("#recent tbody");
  var card = document.getElementById("card");
  var current = null;  // {ref} or {call}

  function cell(text) { var td = document.createElement("td"); td.textContent = text == null ? "" : String(text); return td; }

  function loadCard(sel) {
    current = sel;
    var q = sel.ref ? "ref=" + encodeURIComponent(sel.ref) : "call=" + encodeURIComponent(sel.call);
    return fetch("/console/card?" + q, {credentials: "same-origin"}).then(function (r) {
      if (!r.ok) { card.innerHTML = '<p class="muted">Ticket not written yet…</p>'; return; }
      return r.text().then(function (html) {
        card.innerHTML = html;
        var art = card.querySelector("article");
        if (art) { current = {ref: art.dataset.ref}; }
      });
    });
  }

  function upsertCall(c) {
    var id = "call-" + c.call;
    var row = document.getElementById(id);
    if (c.stage === "ended") { if (row) { row.remove(); } return; }
    if (!row) {
      row = document.createElement("tr"); row.id = id; row.className = "pick";
      row.dataset.call = c.call;
      for (var i = 0; i < 5; i++) { row.appendChild(document.createElement("td")); }
      queue.appendChild(row);
    }
    var tds = row.children;
    if (c.caller) { tds[0].textContent = c.caller; }
    tds[1].textContent = c.stage;
    if (c.priority != null) { tds[2].textContent = c.priority; }
    if (c.operator) { tds[3].textContent = c.operator; }
    if (c.reference) { tds[4].textContent = c.reference; row.dataset.ref = c.reference; }
  }

  function ticketChanged(t) {
    var row = recent.querySelector('tr[data-ref="' + t.reference + '"]');
    if (!row && t.status) {
      row = document.createElement("tr"); row.className = "pick"; row.dataset.ref = t.reference;
      row.appendChild(cell(t.reference)); var st = cell(t.status); st.className = "status";
      row.appendChild(st); row.appendChild(cell(t.category || "")); row.appendChild(cell(t.caller || ""));
      recent.insertBefore(row, recent.firstChild);
    }
    if (row && t.status && t.status !== "notification") { row.querySelector(".status").textContent = t.status; }
    if (current && current.ref === t.reference) { loadCard(current); }
  }

  document.addEventListener("click", function (ev) {
    var row = ev.target.closest("tr.pick");
    if (!row) { return; }
    document.querySelectorAll("tr.selected").forEach(function (r) { r.classList.remove("selected"); });
    row.classList.add("selected");
    loadCard(row.dataset.ref ? {ref: row.dataset.ref} : {call: row.dataset.call});
  });

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.classList.contains("api")) { return; }
    ev.preventDefault();
    var body = {};
    var data = new FormData(form);
    if (form.dataset.kind === "dispatch") {
      body.agencies = data.getAll("agencies");
    } else {
      data.forEach(function (v, k) { if (v !== "") { body[k] = v; } });
    }
    fetch(form.dataset.api, {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(body)}).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) {
          var msg = j.error + (j.errors ? ": " + j.errors.map(function (e) { return e.field + " " + e.message; }).join(", ") : "");
          document.getElementById("card-error").textContent = msg;
          return;
        }
        loadCard(current);
      });
    });
  });

  var stateEl = document.getElementById("sse-state");
  var es = new EventSource("/console/events");
  es.onopen = function () { stateEl.textContent = "live"; };
  es.onerror = function () { stateEl.textContent = "reconnecting…"; };
  es.addEventListener("call", function (e) { upsertCall(JSON.parse(e.data)); });
  es.addEventListener("ticket", function (e) { ticketChanged(JSON.parse(e.data)); });
}());
