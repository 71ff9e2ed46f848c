// Siaga 112 operator console: my state, the waiting queue, live calls over SSE, the call card
// (screen pop when my phone rings), classify, dispatch, close. Every word comes from #texts.
const T = JSON.parse(document.getElementById("texts").textContent);
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const me = document.getElementById("me");
const myOperator = me ? me.dataset.operator : "";
const callsBody = document.querySelector("#calls tbody");
const waitingBody = document.querySelector("#waiting tbody");
const recent = document.querySelector("#recent tbody");
const card = document.getElementById("card");
let current = null;  // {ref} or {call}: what the card shows
let loads = 0;       // only the newest card load is shown (responses can arrive out of order)

function t(group, key, fallback) {
  const table = T[group] || {};
  return key in table ? table[key] : (fallback === undefined ? key : fallback);
}
function cell(text) { const td = document.createElement("td"); td.textContent = text == null ? "" : String(text); return td; }
function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const m = Math.floor(s / 60);
  return m + ":" + String(s % 60).padStart(2, "0");
}

// Form fields the operator has touched but not yet saved, so a live refresh keeps them.
function dirtyValues() {
  const kept = [];
  card.querySelectorAll("form.dirty").forEach((form) => {
    form.querySelectorAll("input, select, textarea").forEach((el) => {
      kept.push({form: form.dataset.kind, name: el.name, value: el.value, checked: el.checked, type: el.type});
    });
  });
  return kept;
}
function restore(kept) {
  kept.forEach((k) => {
    const form = card.querySelector('form[data-kind="' + k.form + '"]');
    if (!form) { return; }
    form.classList.add("dirty");
    form.querySelectorAll("[name]").forEach((el) => {
      if (el.name !== k.name) { return; }
      if (k.type === "checkbox" || k.type === "radio") {
        if (el.value === k.value) { el.checked = k.checked; }
      } else { el.value = k.value; }
    });
  });
}

function loadCard(sel, retries) {
  current = sel;
  const mine = ++loads;
  const q = sel.ref ? "ref=" + encodeURIComponent(sel.ref) : "call=" + encodeURIComponent(sel.call);
  return fetch("/console/card?" + q, {credentials: "same-origin"}).then((r) => {
    if (mine !== loads) { return; }
    if (!r.ok) {
      card.innerHTML = '<p class="muted"></p>';
      card.firstChild.textContent = t("console", "not_written");
      if ((retries || 0) > 0) { setTimeout(() => { if (mine === loads) { loadCard(sel, retries - 1); } }, 300); }
      return;
    }
    return r.text().then((html) => {
      if (mine !== loads) { return; }
      const old = card.querySelector("article");
      const same = old && ((sel.ref && old.dataset.ref === sel.ref) || (sel.call && old.dataset.call === sel.call));
      const kept = same ? dirtyValues() : [];
      const error = document.getElementById("card-error");
      const message = kept.length && error ? error.textContent : "";
      card.innerHTML = html;
      restore(kept);
      if (message) { document.getElementById("card-error").textContent = message; }
      const art = card.querySelector("article");
      if (art) { current = {ref: art.dataset.ref, call: art.dataset.call || sel.call}; }
      document.dispatchEvent(new CustomEvent("card-loaded", {detail: art}));
    });
  });
}

// Changes on the call bus that tell more about a call without moving it to another stage.
const NOT_STAGES = ["location", "agency", "silent", "language"];

function upsertCall(c) {
  const id = "call-" + c.call;
  let row = document.getElementById(id);
  if (c.stage === "ended") { if (row) { row.remove(); } return; }
  if (NOT_STAGES.includes(c.stage)) {
    if (row && c.stage === "location") { row.dataset.located = "1"; }
  } else {
    if (!row) {
      row = document.createElement("tr"); row.id = id; row.className = "pick";
      row.dataset.call = c.call;
      for (let i = 0; i < 5; i++) { row.appendChild(document.createElement("td")); }
      callsBody.appendChild(row);
    }
    const tds = row.children;
    if (c.caller) { tds[0].textContent = c.caller; }
    row.dataset.stage = c.stage;
    if (c.node) { row.dataset.node = c.node; }
    tds[1].textContent = t("stage", c.stage) + (row.dataset.node ? " · " + row.dataset.node : "");
    if (c.priority != null) { tds[2].textContent = c.priority; }
    if (c.operator) { tds[3].textContent = c.operator; }
  }
  if (row && c.reference) { row.children[4].textContent = c.reference; row.dataset.ref = c.reference; }
  // Screen pop: my phone rings with this call, so its card opens now, before I answer.
  if (c.stage === "ringing" && myOperator && c.operator === myOperator) {
    document.body.dataset.popped = c.call;
    loadCard({call: c.call}, 20);
    return;
  }
  // The card follows its call live: a key pressed while ringing, a location, the answer.
  if (current && current.call === c.call && ["menu", "location", "silent", "bridged", "queued"].includes(c.stage)) {
    loadCard(current.ref ? {ref: current.ref, call: c.call} : {call: c.call}, 5);
  }
}

// The waiting queue: rows in serving order, times counting up between server snapshots.
let snapshot = {waiting: [], count: 0, longest_s: 0};
let snapshotAt = performance.now();
function renderQueue() {
  const since = (performance.now() - snapshotAt) / 1000;
  waitingBody.textContent = "";
  snapshot.waiting.forEach((w) => {
    const row = document.createElement("tr");
    row.className = "pick prio-" + Math.min(w.priority || 9, 5);
    row.dataset.call = w.call;
    if (w.node) { row.dataset.node = w.node; }  // several nodes: the one the caller is on
    if (w.reference) { row.dataset.ref = w.reference; }
    row.appendChild(cell(w.caller || "—"));
    const wait = cell(clock(w.waited_s + since)); wait.className = "wait";
    wait.dataset.seconds = String(Math.floor(w.waited_s + since));
    row.appendChild(wait);
    const pri = cell(w.priority == null ? "?" : w.priority); pri.className = "prio";
    row.appendChild(pri);
    row.appendChild(cell(t("stage", w.stage) + (w.operator ? " → " + w.operator : "") +
                         (w.node ? " · " + w.node : "")));
    const badges = document.createElement("td");
    w.badges.forEach((b) => {
      const span = document.createElement("span");
      span.className = "badge b-" + b; span.dataset.badge = b; span.textContent = t("badge", b);
      badges.appendChild(span); badges.appendChild(document.createTextNode(" "));
    });
    row.appendChild(badges);
    waitingBody.appendChild(row);
  });
  document.getElementById("waiting-count").textContent = String(snapshot.count);
  const longest = document.getElementById("longest-wait");
  longest.textContent = snapshot.count ? clock(snapshot.longest_s + since) : "—";
  longest.dataset.seconds = snapshot.count ? String(Math.floor(snapshot.longest_s + since)) : "0";
}
setInterval(renderQueue, 1000);

function showMe(s) {
  const state = document.getElementById("my-state");
  const phone = document.getElementById("my-phone");
  if (!state) { return; }
  let text = t("state", s.state);
  if (s.state === "not_ready" && s.reason) { text += " · " + t("reason", s.reason); }
  if (s.state === "wrap_up" && s.wrap_up_left_s != null) { text = t("state", "wrap_up_left").replace("{s}", s.wrap_up_left_s); }
  if (s.in_call) { text += " · " + t("state", "in_call"); }
  if (!s.on_shift) { text += " · " + t("state", "off_shift"); }
  state.textContent = text;
  state.dataset.state = s.state;
  state.dataset.reason = s.reason || "";
  phone.textContent = t("state", s.registered ? "phone_registered" : "phone_unregistered");
  phone.dataset.registered = s.registered ? "1" : "0";
}

function ticketChanged(tk) {
  let row = recent.querySelector('tr[data-ref="' + tk.reference + '"]');
  const isStatus = tk.status && tk.status !== "notification";  // a delivery report is no status
  if (!row && isStatus) {
    row = document.createElement("tr"); row.className = "pick"; row.dataset.ref = tk.reference;
    row.appendChild(cell(tk.reference));
    const st = cell(""); st.className = "status"; row.appendChild(st);
    const cat = cell(""); cat.className = "category"; row.appendChild(cat);
    row.appendChild(cell(tk.caller || ""));
    recent.insertBefore(row, recent.firstChild);
  }
  if (row && isStatus) {
    const st = row.querySelector(".status"); st.textContent = t("status", tk.status); st.dataset.status = tk.status;
  }
  if (row && tk.category) { row.children[2].textContent = t("category", tk.category); }
  if (row && tk.caller) { row.children[3].textContent = tk.caller; }
  if (current && current.ref === tk.reference) { loadCard(current); }
}

function post(url, body) {
  return fetch(url, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify(body)})
    .then((r) => r.json().catch(() => ({error: "HTTP " + r.status})).then((j) => ({ok: r.ok, body: j})));
}

document.addEventListener("click", (ev) => {
  const button = ev.target.closest("button.set-state");
  if (button) {
    const body = {state: button.dataset.state};
    if (button.dataset.reason) { body.reason = button.dataset.reason; }
    post("/console/state", body).then((res) => { if (res.ok) { showMe(res.body); } });
    return;
  }
  const row = ev.target.closest("tr.pick");
  if (!row) { return; }
  document.querySelectorAll("tr.selected").forEach((r) => r.classList.remove("selected"));
  row.classList.add("selected");
  loadCard(row.dataset.ref ? {ref: row.dataset.ref, call: row.dataset.call} : {call: row.dataset.call}, 5);
});

document.addEventListener("input", (ev) => {
  const form = ev.target.closest && ev.target.closest("form.api");
  if (form) { form.classList.add("dirty"); }
});

document.addEventListener("submit", (ev) => {
  const form = ev.target;
  if (!form.classList.contains("api")) { return; }
  ev.preventDefault();
  const body = {};
  const data = new FormData(form);
  if (form.dataset.kind === "dispatch") {
    body.agencies = data.getAll("agencies");
  } else {
    data.forEach((v, k) => { if (v !== "") { body[k] = v; } });
  }
  if (ev.submitter && ev.submitter.name) { body[ev.submitter.name] = ev.submitter.value; }
  post(form.dataset.api, body).then((res) => {
    if (!res.ok) {
      const j = res.body;
      document.getElementById("card-error").textContent = j.error +
        (j.errors ? ": " + j.errors.map((e) => e.field + " " + e.message).join(", ") : "");
      return;
    }
    // saved: a live refresh may have replaced the form meanwhile, so clear the one shown now
    const shown = card.querySelector('form[data-kind="' + form.dataset.kind + '"]');
    if (shown) { shown.classList.remove("dirty"); }
    form.classList.remove("dirty");
    loadCard(current);
  }).catch(() => {
    document.getElementById("card-error").textContent = t("console", "not_saved");
  });
});

const stateEl = document.getElementById("sse-state");
const es = new EventSource("/console/events");
es.onopen = () => { stateEl.textContent = t("console", "live"); stateEl.dataset.state = "live"; };
es.onerror = () => { stateEl.textContent = t("console", "reconnecting"); stateEl.dataset.state = "reconnecting"; };
es.addEventListener("call", (e) => upsertCall(JSON.parse(e.data)));
es.addEventListener("ticket", (e) => ticketChanged(JSON.parse(e.data)));
es.addEventListener("queue", (e) => { snapshot = JSON.parse(e.data); snapshotAt = performance.now(); renderQueue(); });
es.addEventListener("me", (e) => showMe(JSON.parse(e.data)));
