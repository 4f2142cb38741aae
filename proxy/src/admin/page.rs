//! The status page: one self-contained HTML page (no build step, no external assets) that
//! shows every site live from the admin API and the event stream.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// `GET /`.
pub(super) async fn status_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sitesteer status</title>
<link rel="icon" href="data:,">
<style>
:root { --bg:#f6f7f9; --card:#fff; --fg:#1b1f24; --muted:#5b6570; --line:#dde1e6;
  --up:#1a7f37; --degraded:#b35900; --down:#c62828; --drained:#6b5bd2; --maintenance:#57606a; }
@media (prefers-color-scheme: dark) {
  :root { --bg:#0d1117; --card:#161b22; --fg:#e6edf3; --muted:#8b949e; --line:#30363d;
    --up:#3fb950; --degraded:#d29922; --down:#f85149; --drained:#a371f7; --maintenance:#8b949e; }
}
* { box-sizing:border-box; }
body { margin:0; font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif; background:var(--bg); color:var(--fg); }
header { display:flex; flex-wrap:wrap; gap:.5rem 1rem; align-items:baseline; padding:1rem 1.25rem; border-bottom:1px solid var(--line); }
h1 { font-size:1.2rem; margin:0; }
.muted { color:var(--muted); font-size:.85rem; }
main { padding:1rem 1.25rem; display:grid; gap:1rem; }
.sites { display:grid; gap:.75rem; grid-template-columns:repeat(auto-fill,minmax(280px,1fr)); }
.site { background:var(--card); border:1px solid var(--line); border-left:6px solid var(--muted); border-radius:8px; padding:.75rem .9rem; }
.site h2 { font-size:1.05rem; margin:0 0 .25rem; display:flex; justify-content:space-between; align-items:center; gap:.5rem; }
.state { font-size:.75rem; font-weight:700; text-transform:uppercase; letter-spacing:.04em; padding:.1rem .45rem; border-radius:99px; color:#fff; }
.s-up { border-left-color:var(--up); } .b-up { background:var(--up); }
.s-degraded { border-left-color:var(--degraded); } .b-degraded { background:var(--degraded); }
.s-down { border-left-color:var(--down); } .b-down { background:var(--down); }
.s-drained { border-left-color:var(--drained); } .b-drained { background:var(--drained); }
.s-maintenance { border-left-color:var(--maintenance); } .b-maintenance { background:var(--maintenance); }
dl { display:grid; grid-template-columns:auto 1fr; gap:.1rem .75rem; margin:.4rem 0; font-size:.88rem; }
dt { color:var(--muted); } dd { margin:0; font-variant-numeric:tabular-nums; }
svg.spark { width:100%; height:34px; display:block; }
svg.spark polyline { fill:none; stroke:var(--fg); stroke-width:1.5; opacity:.75; }
.why { font-size:.82rem; color:var(--muted); min-height:1.2em; overflow-wrap:anywhere; }
button { font:inherit; font-size:.85rem; padding:.3rem .7rem; border-radius:6px; border:1px solid var(--line); background:var(--bg); color:var(--fg); cursor:pointer; }
button:hover { border-color:var(--muted); }
.events { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:.5rem .9rem; }
.events ol { list-style:none; margin:0; padding:0; max-height:22rem; overflow:auto; }
.events li { padding:.3rem 0; border-bottom:1px solid var(--line); font-size:.85rem; overflow-wrap:anywhere; }
.events li:last-child { border-bottom:0; }
.pill { font-size:.72rem; padding:0 .35rem; border:1px solid var(--line); border-radius:4px; margin-right:.35rem; }
#conn.live { color:var(--up); } #conn.lost { color:var(--down); }
.objectives { font-size:.78rem; color:var(--muted); margin:.2rem 0; overflow-wrap:anywhere; }
@media (max-width: 600px) { .events ol { max-height:none; } main { padding:.75rem; } }
.banner { margin:0; padding:.6rem 1.25rem; background:var(--down); color:#fff; font-weight:600; }
</style>
</head>
<body>
<header>
  <h1>sitesteer</h1>
  <span class="muted" id="summary">loading…</span>
  <span class="muted" id="conn">connecting…</span>
  <span style="flex:1"></span>
  <button id="token-btn" type="button">Set admin token</button>
</header>
<p class="banner" id="cluster-banner" role="alert" hidden></p>
<p class="banner" id="panic-banner" role="alert" hidden>PANIC MODE: no site is up or degraded; traffic spreads over every site not in maintenance.</p>
<main>
  <section class="sites" id="sites" aria-live="polite"></section>
  <section class="events"><h2 style="font-size:1rem;margin:.3rem 0">Recent events</h2><ol id="events"></ol></section>
</main>
<script>
"use strict";
const history = {};      // site -> recent latency EWMA samples, for sparklines
const lastRequests = {}; // site -> request counter at the previous refresh
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c]));
const token = () => sessionStorage.getItem("sitesteer-token") || "";
$("token-btn").onclick = () => {
  const t = prompt("Admin token (kept in this tab only):", token());
  if (t !== null) sessionStorage.setItem("sitesteer-token", t.trim());
};
function spark(values) {
  if (values.length < 2) return '<svg class="spark" viewBox="0 0 100 30"></svg>';
  const max = Math.max(...values, 1e-6);
  const pts = values.map((v, i) => `${(i / (values.length - 1) * 100).toFixed(1)},${(28 - v / max * 26).toFixed(1)}`).join(" ");
  return `<svg class="spark" viewBox="0 0 100 30" preserveAspectRatio="none" role="img" aria-label="latency"><polyline points="${pts}"/></svg>`;
}
function objectives(o) {
  if (!o) return "–";
  const m = o.measured || {};
  const mark = (ok) => ok === null || ok === undefined ? "" : (ok ? " ✓" : " ✗");
  const shift = m.last_shift_ms == null ? "no failover yet" : `last ${m.last_shift_ms} ms${mark(m.last_shift_ms <= o.shift_time_ms)}`;
  const failed = m.last_failed_requests == null ? "" : ` · failed ≤ ${o.failed_requests}: last ${m.last_failed_requests}${mark(m.last_failed_requests <= o.failed_requests)}`;
  const avail = `${(100 * m.availability_1d).toFixed(3)}% / ${(100 * o.availability).toFixed(3)}%${mark(m.availability_1d >= o.availability)}`;
  return `objectives: shift ≤ ${o.shift_time_ms} ms (${shift})${failed} · availability ${avail}`;
}
async function act(site, action) {
  const headers = {"content-type": "application/json"};
  if (token()) headers.authorization = "Bearer " + token();
  const r = await fetch(`/api/v1/sites/${encodeURIComponent(site)}/${action}`, {method: "POST", headers});
  if (!r.ok) { const b = await r.json().catch(() => ({})); alert(`${action} ${site}: ${String(b.error || r.status).replace(/`/g, "")}`); }
  refresh();
}
async function refresh() {
  let data;
  try { data = await (await fetch("/api/v1/sites", {cache: "no-store"})).json(); } catch (e) { $("summary").textContent = "admin API unreachable"; return; }
  const total = data.sites.reduce((n, s) => n + Math.max(0, s.requests - (lastRequests[s.name] ?? s.requests)), 0);
  $("panic-banner").hidden = !data.panic;
  $("summary").textContent = `${data.sites.length} sites · snapshot v${data.version}` + (data.cluster ? ` · fleet member ${data.cluster.instance}` : "");
  const banner = $("cluster-banner");
  banner.hidden = !(data.cluster && !data.cluster.connected);
  if (!banner.hidden) banner.textContent = `The cluster store is unreachable${data.cluster.error ? " (" + data.cluster.error + ")" : ""}: serving the last known operator state; changes are refused until it returns.`;
  $("sites").innerHTML = data.sites.map((s) => {
    const h = (history[s.name] ||= []);
    h.push(s.latency_ewma_ms); if (h.length > 60) h.shift();
    const delta = Math.max(0, s.requests - (lastRequests[s.name] ?? s.requests));
    const share = total > 0 ? (100 * delta / total).toFixed(0) + "% now" : "idle now";
    const drainBtn = s.state === "drained"
      ? `<button type="button" data-site="${esc(s.name)}" data-act="undrain">Undrain</button>`
      : `<button type="button" data-site="${esc(s.name)}" data-act="drain">Drain</button>`;
    return `<article class="site s-${esc(s.state)}" data-site="${esc(s.name)}" data-state="${esc(s.state)}">
      <h2><span>${esc(s.name)}</span><span class="state b-${esc(s.state)}">${esc(s.state)}</span></h2>
      <div class="muted">${esc(s.region)} · tier ${s.tier}</div>
      <dl>
        <dt>score</dt><dd>${s.score.toFixed(3)}</dd>
        <dt>latency</dt><dd>${s.latency_ewma_ms.toFixed(1)} ms (p99 ${s.latency_p99_ms.toFixed(1)})</dd>
        <dt>error rate</dt><dd>${(100 * s.error_rate).toFixed(2)}%</dd>
        <dt>weight</dt><dd>${s.effective_weight} / ${s.configured_weight}</dd>
        <dt>traffic</dt><dd>${share} · ${s.requests} total · ${s.open_connections} open</dd>
        <dt>availability</dt><dd>${(100 * s.availability_1h).toFixed(3)}% (1h)</dd>
      </dl>
      <div class="objectives">${objectives(s.objectives)}</div>
      ${spark(h)}
      <div class="why">${esc(s.reason)}</div>
      <div style="margin-top:.4rem">${drainBtn}</div>
    </article>`;
  }).join("");
  for (const s of data.sites) lastRequests[s.name] = s.requests;
}
$("sites").addEventListener("click", (e) => {
  const b = e.target.closest("button[data-act]");
  if (b) act(b.dataset.site, b.dataset.act);
});
function showEvent(ev, prepend) {
  const li = document.createElement("li");
  const when = new Date(ev.at_ms).toISOString().slice(11, 23) + "Z";
  const change = ev.from || ev.to ? ` ${esc(ev.from)} → ${esc(ev.to)}` : "";
  li.innerHTML = `<span class="pill">${esc(ev.kind)}</span><b>${esc(ev.site || "")}</b>${change} <span class="muted">${when} · ${esc(ev.reason)}</span>`;
  const list = $("events");
  prepend ? list.prepend(li) : list.append(li);
  while (list.children.length > 100) list.lastChild.remove();
}
async function loadEvents() {
  try {
    const data = await (await fetch("/api/v1/events?limit=50", {cache: "no-store"})).json();
    $("events").innerHTML = "";
    data.events.forEach((e) => showEvent(e, false));
  } catch (e) {}
}
function follow() {
  const es = new EventSource("/api/v1/events/stream");
  es.addEventListener("open", () => { $("conn").textContent = "● live"; $("conn").className = "live"; });
  es.addEventListener("event", (m) => { try { showEvent(JSON.parse(m.data), true); } catch (e) {} refresh(); });
  es.addEventListener("error", () => { $("conn").textContent = "● reconnecting"; $("conn").className = "lost"; });
}
refresh(); loadEvents(); follow();
setInterval(refresh, 1000);
</script>
</body>
</html>
"##;
