// Siaga 112 operator console: live calls over SSE, a ticket card, classify and dispatch.
"use strict";
(function () {
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var queue = document.querySelector("#queue tbody");
  var recent = document.querySelector("#recent tbody");
  var card = document.getElementById("card");
  var current = null;  // {ref} or {call}

  function cell(text) { var td = document.createElement("td"); td.textContent = text == null ? "" : String(text); return td; }

  var loads = 0;  // only the newest card load is shown (responses can arrive out of order)

  // Form fields the operator has touched but not yet saved, so a live refresh keeps them.
  function dirtyValues() {
    var kept = [];
    card.querySelectorAll("form.dirty").forEach(function (form) {
      form.querySelectorAll("input, select, textarea").forEach(function (el) {
        kept.push({form: form.dataset.kind, name: el.name, value: el.value,
                   checked: el.checked, type: el.type});
      });
    });
    return kept;
  }

  function restore(kept) {
    kept.forEach(function (k) {
      var form = card.querySelector('form[data-kind="' + k.form + '"]');
      if (!form) { return; }
      form.classList.add("dirty");
      form.querySelectorAll("[name]").forEach(function (el) {
        if (el.name !== k.name) { return; }
        if (k.type === "checkbox" || k.type === "radio") {
          if (el.value === k.value) { el.checked = k.checked; }
        } else { el.value = k.value; }
      });
    });
  }

  function loadCard(sel) {
    current = sel;
    var mine = ++loads;
    var q = sel.ref ? "ref=" + encodeURIComponent(sel.ref) : "call=" + encodeURIComponent(sel.call);
    return fetch("/console/card?" + q, {credentials: "same-origin"}).then(function (r) {
      if (mine !== loads) { return; }
      if (!r.ok) { card.innerHTML = '<p class="muted">Ticket not written yet…</p>'; return; }
      return r.text().then(function (html) {
        if (mine !== loads) { return; }
        var old = card.querySelector("article");
        var kept = old && sel.ref && old.dataset.ref === sel.ref ? dirtyValues() : [];
        var error = document.getElementById("card-error");
        var message = kept.length && error ? error.textContent : "";
        card.innerHTML = html;
        restore(kept);
        if (message) { document.getElementById("card-error").textContent = message; }
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
    var isStatus = t.status && t.status !== "notification";  // a delivery report is no status
    if (!row && isStatus) {
      row = document.createElement("tr"); row.className = "pick"; row.dataset.ref = t.reference;
      row.appendChild(cell(t.reference)); var st = cell(t.status); st.className = "status";
      row.appendChild(st); var cat = cell(t.category || ""); cat.className = "category";
      row.appendChild(cat); row.appendChild(cell(t.caller || ""));
      recent.insertBefore(row, recent.firstChild);
    }
    if (row && isStatus) { row.querySelector(".status").textContent = t.status; }
    if (row && t.category) { row.children[2].textContent = t.category; }
    if (row && t.caller) { row.children[3].textContent = t.caller; }
    if (current && current.ref === t.reference) { loadCard(current); }
  }

  document.addEventListener("click", function (ev) {
    var row = ev.target.closest("tr.pick");
    if (!row) { return; }
    document.querySelectorAll("tr.selected").forEach(function (r) { r.classList.remove("selected"); });
    row.classList.add("selected");
    loadCard(row.dataset.ref ? {ref: row.dataset.ref} : {call: row.dataset.call});
  });

  document.addEventListener("input", function (ev) {
    var form = ev.target.closest && ev.target.closest("form.api");
    if (form) { form.classList.add("dirty"); }
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
      return r.json().catch(function () { return {error: "HTTP " + r.status}; }).then(function (j) {
        if (!r.ok) {
          var msg = j.error + (j.errors ? ": " + j.errors.map(function (e) { return e.field + " " + e.message; }).join(", ") : "");
          document.getElementById("card-error").textContent = msg;
          return;
        }
        // saved: a live refresh may have replaced the form meanwhile, so clear the one shown now
        var shown = card.querySelector('form[data-kind="' + form.dataset.kind + '"]');
        if (shown) { shown.classList.remove("dirty"); }
        form.classList.remove("dirty");
        loadCard(current);
      });
    }).catch(function () {
      document.getElementById("card-error").textContent = "not saved: the server could not be reached";
    });
  });

  var stateEl = document.getElementById("sse-state");
  var es = new EventSource("/console/events");
  es.onopen = function () { stateEl.textContent = "live"; };
  es.onerror = function () { stateEl.textContent = "reconnecting…"; };
  es.addEventListener("call", function (e) { upsertCall(JSON.parse(e.data)); });
  es.addEventListener("ticket", function (e) { ticketChanged(JSON.parse(e.data)); });
}());
