// The supervisor's wallboard: one board per server-sent event; the longest wait counts up between.
const T = JSON.parse(document.getElementById("texts").textContent);
const t = (group, key) => ((T[group] || {})[key] !== undefined ? T[group][key] : key);
const longest = document.getElementById("wb-longest");
let board = null;
let boardAt = performance.now();

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
}
function tick() {
  if (!board) { return; }
  const s = board.waiting ? board.longest_s + (performance.now() - boardAt) / 1000 : 0;
  longest.textContent = board.waiting ? clock(s) : "—";
  longest.dataset.seconds = String(Math.floor(s));
}
function show(b) {
  board = b; boardAt = performance.now();
  document.getElementById("wb-waiting").textContent = String(b.waiting);
  document.getElementById("wb-within10").textContent = b.within_10s_pct + " %";
  document.getElementById("wb-abandoned").textContent = String(b.abandoned_today);
  const body = document.querySelector("#wb-operators tbody");
  body.textContent = "";
  b.operators.forEach((o) => {
    const row = document.createElement("tr");
    row.dataset.operator = o.operator; row.dataset.bucket = o.bucket;
    const name = document.createElement("td"); name.textContent = o.operator;
    const state = document.createElement("td");
    state.textContent = t("bucket", o.bucket.split(":")[0]) + (o.reason ? " · " + t("reason", o.reason) : "");
    row.append(name, state); body.appendChild(row);
  });
  tick();
}
setInterval(tick, 1000);
const stateEl = document.getElementById("sse-state");
const es = new EventSource("/wallboard/events");
es.onopen = () => { stateEl.textContent = t("console", "live"); stateEl.dataset.state = "live"; };
es.onerror = () => { stateEl.textContent = t("console", "reconnecting"); stateEl.dataset.state = "reconnecting"; };
es.addEventListener("board", (e) => show(JSON.parse(e.data)));
