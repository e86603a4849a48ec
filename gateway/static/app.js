// Hearth dashboard: plain JS over the gateway's API, no build step.
// Views: overview (#/), providers, live jobs, one job (#/jobs/<id>), submit (EIP-1193 wallet).
"use strict";

const $ = (sel) => document.querySelector(sel);
const USD_DEC = 6n, HST_DEC = 18n;
const STATE_ORDER = ["posted", "claimed", "delivered", "challenged", "finalized", "refunded"];

function fmtUnits(value, decimals, shown = 2) {
  if (value === null || value === undefined) return "–";
  const v = BigInt(value), base = 10n ** decimals;
  const whole = v / base, frac = (v % base).toString().padStart(Number(decimals), "0").slice(0, shown);
  return `${whole.toLocaleString("en-US")}${shown ? "." + frac : ""}`;
}
const usd = (v) => fmtUnits(v, USD_DEC, 6);
const hst = (v) => fmtUnits(v, HST_DEC, 2);
const short = (a) => (a ? `${a.slice(0, 6)}…${a.slice(-4)}` : "–");
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const badge = (s) => `<span class="badge s-${esc(s)}" data-status="${esc(s)}">${esc(s)}</span>`;
// Every time the index reports is chain time (a block's timestamp), which a devnet can move
// ahead of the wall clock (`hearth devnet advance`): shown as such, never as "now".
const chainTime = (t, withDate = false) => (t
  ? `<time class="chain-time" data-chain-time="${t}" title="chain time: the block's timestamp">${
    withDate ? new Date(t * 1000).toLocaleString() : new Date(t * 1000).toLocaleTimeString()} (chain)</time>` : "");
function fmtOffset(s) {
  const a = Math.abs(s);
  if (a < 90) return "in step with";
  const txt = a < 5400 ? `${Math.round(a / 60)} min` : `${(a / 3600).toFixed(1)} h`;
  return `${txt} ${s > 0 ? "ahead of" : "behind"}`;
}

async function api(path, opts = {}) {
  const resp = await fetch(path, {headers: {"content-type": "application/json"}, ...opts});
  const text = await resp.text();
  const body = text ? JSON.parse(text) : null;
  if (!resp.ok) {
    const e = body && body.error ? body.error : {reason: "http_" + resp.status, message: text};
    const err = new Error(`${e.reason}: ${e.message}`);
    err.reason = e.reason;
    err.details = e.details || {};
    throw err;
  }
  return body;
}

// ------------------------------------------------------------------ live feed (one SSE stream)
// One entry per job, at its latest known state, ordered by the block of that state (newest
// first). Seeded from the index on load ("indexed"), then moved by live events.

const feedListeners = new Set();
const feedJobs = new Map();  // job_id -> {job_id, status, event, block, log_index, at}
let feedSource = null;
const newer = (a, b) => (a.block !== b.block ? a.block > b.block
  : (a.log_index ?? -1) !== (b.log_index ?? -1) ? (a.log_index ?? -1) > (b.log_index ?? -1)
  : STATE_ORDER.indexOf(a.status) > STATE_ORDER.indexOf(b.status));
function noteFeed(u) {
  const had = feedJobs.get(u.job_id);
  if (had && !newer(u, had)) return false;
  feedJobs.set(u.job_id, {job_id: u.job_id, status: u.status, event: u.event, block: u.block, log_index: u.log_index, at: u.at});
  return true;
}
async function seedFeed() {
  try {
    const page = await api("/v1/jobs?limit=25");
    for (const j of page.items) {
      const last = j.history[j.history.length - 1] || {block: j.updated_block, at: 0};
      noteFeed({job_id: j.job_id, status: j.status, event: "indexed", block: last.block, log_index: -1, at: last.at});
    }
    renderFeeds(false);
  } catch (e) { /* the index may not be up yet */ }
}

function startFeed() {
  if (feedSource) return;
  feedSource = new EventSource("/v1/events/jobs");
  feedSource.addEventListener("open", () => $("#live-dot").classList.add("on"));
  feedSource.addEventListener("error", () => $("#live-dot").classList.remove("on"));
  feedSource.addEventListener("job", (ev) => {
    const u = JSON.parse(ev.data);
    for (const fn of feedListeners) fn(u);
  });
}

function feedItem(u, fresh) {
  const li = document.createElement("li");
  if (fresh) li.className = "fresh";
  li.dataset.job = u.job_id;
  li.dataset.status = u.status;
  li.dataset.block = u.block;
  const what = u.event === "indexed" ? `<span class="mono muted" title="the state the index held when this page loaded">indexed</span>`
    : `<span class="mono muted" title="the live event that moved the job here">${esc(u.event)}</span>`;
  li.innerHTML = `<a href="#/jobs/${u.job_id}">job ${u.job_id}</a> ${badge(u.status)}
    ${what}<span class="when">block ${u.block} · ${chainTime(u.at)}</span>`;
  return li;
}
function renderFeed(list, max, freshId) {
  const items = [...feedJobs.values()].sort((a, b) => (newer(a, b) ? -1 : newer(b, a) ? 1 : b.job_id - a.job_id)).slice(0, max);
  list.replaceChildren(...items.map((u) => feedItem(u, u.job_id === freshId)));
}
function renderFeeds(freshId) { renderFeed($("#feed-mini"), 12, freshId); renderFeed($("#feed"), 50, freshId); }
feedListeners.add((u) => { if (noteFeed(u)) renderFeeds(u.job_id); });
feedListeners.add(() => { if (current === "overview") scheduleOverview(); if (current === "jobs") loadJobs(); });

// ------------------------------------------------------------------ views

let current = null, jobStream = null;

let health = null;
async function loadChain() {
  try {
    const h = health = await api("/healthz");
    $("#chain").textContent = `chain ${h.chain_id} · market ${short(h.market)} · block ${h.indexed_block ?? "–"}`;
    const clock = $("#chain-clock");
    if (h.indexed_block_time) {
      const offset = Math.round(h.indexed_block_time - Date.now() / 1000);
      clock.dataset.offset = String(offset);
      clock.innerHTML = `latest block at ${new Date(h.indexed_block_time * 1000).toLocaleTimeString()} chain time · ` +
        `chain clock ${fmtOffset(offset)} wall clock (${new Date().toLocaleTimeString()})`;
    }
  } catch (e) { $("#chain").textContent = "gateway unreachable"; }
}

function providerRow(p, full) {
  const cells = full
    ? [`<td class="mono" title="${esc(p.address)}">${short(p.address)}</td>`, `<td>${badge(p.status)}</td>`,
       `<td class="num">${hst(p.staked)}</td>`, `<td class="num">${hst(p.locked)}</td>`, `<td class="num">${hst(p.unbonding)}</td>`,
       `<td>${esc(p.region)}</td>`, `<td>${esc(p.gpu_class)}</td>`, `<td class="num">${p.jobs_done}</td>`, `<td class="num">${p.slashes}</td>`]
    : [`<td class="mono" title="${esc(p.address)}">${short(p.address)}</td>`, `<td>${badge(p.status)}</td>`,
       `<td class="num">${hst(p.staked)}</td>`, `<td>${esc(p.gpu_class)}</td>`, `<td class="num">${p.jobs_done}</td>`];
  return `<tr data-provider="${esc(p.address)}">${cells.join("")}</tr>`;
}

let overviewTimer = null;
function scheduleOverview() { clearTimeout(overviewTimer); overviewTimer = setTimeout(loadOverview, 300); }
async function loadOverview() {
  const [stats, providers] = await Promise.all([api("/v1/stats"), api("/v1/providers")]);
  const price = stats.prices[0];
  // The two rates are measured on the chain's clock (block timestamps), like every time shown here.
  const cards = [
    ["Jobs", stats.jobs_total], ["Jobs / min", stats.jobs_per_minute, "jobs posted per minute over the last 10 minutes of chain time"],
    ["Active providers", `${stats.providers_active} / ${stats.providers_total}`],
    ["Active stake (HST)", hst(stats.active_stake)],
    ["Median latency", stats.median_latency_s === null ? "–" : `${stats.median_latency_s.toFixed(1)} s`,
     "post to delivery in chain time (block timestamps), median of the last 200 deliveries"],
    ["Price / 1M tokens", price ? `${fmtUnits(BigInt(price.price_per_unit) * 1000000n, USD_DEC, 2)} hUSD` : "–"],
  ];
  $("#stats").innerHTML = cards.map(([l, v, t]) => `<div class="card"${t ? ` title="${esc(t)}"` : ""}><div class="label">${l}${
    t ? ' <span class="muted">(chain time)</span>' : ""}</div><div class="value">${esc(v)}</div></div>`).join("");
  $("#providers-mini tbody").innerHTML = providers.map((p) => providerRow(p, false)).join("");
}

function servingRow(p) {
  const n = (v) => (v === null || v === undefined ? "–" : esc(v));
  const cells = [
    `<td class="mono" title="${esc(p.address)} at ${esc(p.endpoint)}">${short(p.address)}</td>`, `<td>${esc(p.region)}</td>`,
    `<td class="num">${usd(p.price)}</td>`,
    `<td class="num">${p.latency_ema_ms === null || p.latency_ema_ms === undefined ? "–" : p.latency_ema_ms.toFixed(1)}</td>`,
    `<td class="num">${n(p.in_flight)}</td>`, `<td class="num">${hst(p.staked)}</td>`,
    `<td class="num" data-field="capacity_left">${p.capacity_left === null || p.capacity_left === undefined ? "–" : usd(p.capacity_left)}</td>`,
    `<td class="num" data-field="requests_served">${n(p.requests_served)}</td>`,
    `<td class="num" data-field="batches_committed">${n(p.batches_committed)}</td>`,
    `<td class="num" data-field="vouchers_collected" title="${usd(p.collected)} hUSD collected">${n(p.vouchers_collected)}</td>`,
    `<td class="num" data-field="challenges" title="${n(p.frauds)} proven fraudulent">${n(p.challenges)}</td>`,
    `<td class="num" data-field="slashes" title="${hst(p.slashed_total)} HST slashed">${n(p.slashes)}</td>`,
  ];
  return `<tr data-serving-provider="${esc(p.address)}">${cells.join("")}</tr>`;
}

async function loadProviders() {
  const [providers, models, serving] = await Promise.all([api("/v1/providers"), api("/v1/models"),
    api("/v1/serving/providers").catch(() => [])]);
  $("#providers tbody").innerHTML = providers.map((p) => providerRow(p, true)).join("");
  $("#serving-providers tbody").innerHTML = serving.length ? serving.map(servingRow).join("")
    : `<tr><td colspan="12" class="muted">no provider serves on the serving plane now</td></tr>`;
  $("#models tbody").innerHTML = models.data.map((m) => `<tr><td>${esc(m.name)}</td><td class="mono" title="${esc(m.model_id)}">${short(m.model_id)}</td>
    <td class="num">${usd(m.price_per_unit)}</td><td class="num">${m.providers}</td><td>${m.active ? "yes" : "no"}</td></tr>`).join("");
}

async function loadJobs() {
  const page = await api("/v1/jobs?limit=25");
  $("#jobs tbody").innerHTML = page.items.map((j) => `<tr data-job="${j.job_id}"><td><a href="#/jobs/${j.job_id}">${j.job_id}</a></td>
    <td>${badge(j.status)}</td><td class="mono" title="${j.paid_by ? `paid by ${esc(j.paid_by)} through an API key; posted by the gateway's relayer ${esc(j.client)}` : esc(j.client)}">${short(j.paid_by || j.client)}</td><td class="mono">${short(j.provider)}</td>
    <td class="num">${usd(j.max_payment)}</td></tr>`).join("");
}

function renderJob(job) {
  $("#job-id").textContent = job.job_id;
  $("#job-status").className = `badge s-${job.status}`;
  $("#job-status").textContent = job.status;
  $("#job-status").dataset.status = job.status;
  const kv = [
    job.paid_by ? ["Paid by", job.paid_by] : ["Client", job.client],
    ...(job.paid_by ? [["Posted by", `${job.client} (this gateway's relayer, for an API key of the wallet above)`]] : []),
    ["Provider", job.provider || "–"], ["Model", job.model_id], ["Input", job.input_hash],
    ["Max payment", `${usd(job.max_payment)} hUSD`], ["Payment", `${usd(job.payment)} hUSD`],
    ["Units (tokens)", job.units],
  ];
  $("#job-meta").innerHTML = kv.map(([k, v]) => `<div>${k}</div><div class="mono">${esc(v)}</div>`).join("") +
    `<div>Deadline</div><div class="mono">${chainTime(job.deadline, true)}</div>`;
  $("#job-meta").dataset.payer = job.paid_by || job.client;
  $("#job-timeline").innerHTML = job.history.map((h) => `<li data-state="${h.status}">${badge(h.status)} block ${h.block} ·
    <span class="mono" title="${esc(h.tx_hash)}">tx ${short(h.tx_hash)}</span> · ${chainTime(h.at)}</li>`).join("");
}

async function loadResult(jobId) {
  try {
    const r = await api(`/v1/jobs/${jobId}/result`);
    const v = r.verification;
    const box = $("#job-verification");
    box.className = "verification " + (v.output_hash_matches_receipt ? "ok" : "bad");
    box.dataset.verified = String(v.output_hash_matches_receipt);
    box.textContent = (v.output_hash_matches_receipt ? "✔ " : "✘ ") + v.summary;
    const rc = r.receipt;
    $("#job-receipt").innerHTML = [
      ["Output hash", rc.output_hash], ["Units", rc.units], ["Payment", `${usd(rc.payment)} hUSD`],
      ["Model hash", rc.model_hash], ["Runtime hash", rc.runtime_hash], ["Receipt tx", rc.tx_hash],
    ].map(([k, val]) => `<div>${k}</div><div class="mono">${esc(val)}</div>`).join("") +
      `<div>Challenge window ends</div><div class="mono">${chainTime(rc.challenge_end, true)}</div>`;
    if (r.embeddings) {
      $("#job-output").textContent = `${r.embeddings.length} embedding(s) × ${r.embeddings[0].length} floats; first values: ` +
        r.embeddings[0].slice(0, 6).map((x) => x.toFixed(5)).join(", ") + " …";
    }
  } catch (e) {
    if (e.reason !== "result_not_ready") $("#job-verification").textContent = e.message;
  }
}

// The market numbers jobs 1..jobCount, each a uint64-sized id the gateway accepts up to 2^63-1.
const MAX_JOB_ID = 2n ** 63n - 1n;

function jobMissing(status, label, message) {
  const st = $("#job-status");
  st.className = "badge"; st.dataset.status = status; st.textContent = label;
  $("#job-missing").textContent = message;
  $("#job-missing").hidden = false;
}

async function showJob(jobId) {
  $("#job-verification").className = "verification muted";
  $("#job-verification").textContent = "No receipt yet.";
  $("#job-receipt").innerHTML = ""; $("#job-output").textContent = "";
  $("#job-id").textContent = jobId;
  $("#job-missing").hidden = true;
  $("#job-meta").innerHTML = ""; $("#job-timeline").innerHTML = "";
  if (jobStream) { jobStream.close(); jobStream = null; }
  if (BigInt(jobId) < 1n || BigInt(jobId) > MAX_JOB_ID) {
    jobMissing("job_not_found", "does not exist", `job ${jobId} does not exist: job ids run from 1 to the market's job count`);
    return;
  }
  try {
    renderJob(await api(`/v1/jobs/${jobId}`));
  } catch (e) {
    if (e.reason === "job_not_found" && e.details.job_count !== undefined && e.details.job_count !== null) {
      // Past the market's job count the job does not exist (it is not "coming").
      jobMissing("job_not_found", "does not exist", e.message);
      return;
    }
    if (e.reason !== "job_not_indexed") {
      // Not in the index and the gateway could not ask the chain (or another error): say so, claim nothing.
      jobMissing(e.reason === "job_not_found" ? "job_unknown" : e.reason || "error",
                 e.reason === "job_not_found" ? "not found" : "error", e.message);
      return;
    }
    // On-chain but not indexed yet: it appears within a block or two, and the stream below shows it.
    const st = $("#job-status");
    st.className = "badge"; st.dataset.status = e.reason; st.textContent = "on-chain, not indexed yet";
  }
  loadResult(jobId);
  jobStream = new EventSource(`/v1/jobs/${jobId}/events`);
  const onUpdate = (ev) => {
    const u = JSON.parse(ev.data);
    if (u.job) renderJob(u.job);
    if (["delivered", "challenged", "finalized", "refunded"].includes(u.status)) loadResult(jobId);
  };
  jobStream.addEventListener("snapshot", onUpdate);
  jobStream.addEventListener("job", onUpdate);
}

// ------------------------------------------------------------------ submit (EIP-1193 wallet)

let account = null;
function log(msg, cls = "") {
  const div = document.createElement("div");
  if (cls) div.className = cls;
  div.textContent = msg;
  $("#submit-log").appendChild(div);
}

async function connect() {
  if (!window.ethereum) {
    const h = health || await api("/healthz").catch(() => null);
    if (h) {
      $("#help-chain").textContent = String(h.chain_id);
      $("#help-rpc").textContent = h.devnet_rpc_url || "the chain's RPC URL";
    }
    $("#wallet-help").hidden = false;
    return;
  }
  const accounts = await window.ethereum.request({method: "eth_requestAccounts"});
  account = accounts[0];
  $("#account").textContent = account;
  $("#submit").disabled = false;
}

function splitSig(sig) {
  const h = sig.replace(/^0x/, "");
  let v = parseInt(h.slice(128, 130), 16);
  if (v < 27) v += 27;
  return {r: "0x" + h.slice(0, 64), s: "0x" + h.slice(64, 128), v};
}

async function submitJob() {
  $("#submit").disabled = true;
  $("#submit-log").innerHTML = "";
  try {
    const texts = $("#texts").value.split("\n").map((t) => t.trim()).filter(Boolean);
    if (!texts.length) throw new Error("enter at least one text");
    // The input travels with the job (its keccak256 is the signed inputHash); nothing is uploaded first.
    const input = JSON.stringify({texts});
    const td = await api("/v1/jobs/typed-data", {method: "POST", body: JSON.stringify({client: account, input})});
    log(`input hash ${td.typed_data.message.inputHash}`);
    $("#price").textContent = `${td.units} tokens · ${usd(td.typed_data.message.maxPayment)} hUSD`;
    const body = {request: td.typed_data.message, input, chain_id: td.typed_data.domain.chainId,
                  verifying_contract: td.typed_data.domain.verifyingContract};
    const bal = await api(`/v1/balances/${account}`);
    if (BigInt(bal.allowance_market ?? "0") < BigInt(td.typed_data.message.maxPayment)) {
      log("the market may not pull the payment yet: signing an EIP-2612 permit");
      const pt = await api(`/v1/jobs/permit-typed-data?owner=${account}&value=${td.typed_data.message.maxPayment}`);
      const psig = await window.ethereum.request({method: "eth_signTypedData_v4", params: [account, JSON.stringify(pt.typed_data)]});
      const {v, r, s} = splitSig(psig);
      body.permit = {value: pt.typed_data.message.value, deadline: pt.typed_data.message.deadline, v, r, s};
    }
    log("signing the JobRequest in your wallet…");
    body.signature = await window.ethereum.request({method: "eth_signTypedData_v4", params: [account, JSON.stringify(td.typed_data)]});
    const sent = await api("/v1/jobs", {method: "POST", body: JSON.stringify(body)});
    log(`relayed, tx ${sent.tx_hash}: waiting for it to be mined…`);
    let relay = sent;
    while (relay.status === "pending") {
      await new Promise((ok) => setTimeout(ok, 500));
      relay = await api(sent.status_url);
    }
    if (relay.status !== "mined") throw new Error(`the relayed transaction ${relay.status}: ${relay.error?.message ?? ""}`);
    log(`job ${relay.job_id} posted in block ${relay.block_number}, tx ${relay.mined_tx}`, "ok");
    location.hash = `#/jobs/${relay.job_id}`;
  } catch (e) {
    log(e.message, "err");
  } finally {
    $("#submit").disabled = !account;
  }
}

// ------------------------------------------------------------------ routing

function route() {
  const hash = location.hash || "#/";
  const m = hash.match(/^#\/jobs\/(\d+)/);
  const view = m ? "job" : ({"#/": "overview", "#/providers": "providers", "#/jobs": "jobs", "#/submit": "submit"}[hash] || "overview");
  current = view;
  document.querySelectorAll(".view").forEach((v) => (v.hidden = v.id !== `view-${view}`));
  document.querySelectorAll("nav a[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === view || (view === "job" && a.dataset.nav === "jobs")));
  if (view !== "job" && jobStream) { jobStream.close(); jobStream = null; }
  if (view === "overview") loadOverview();
  if (view === "providers") loadProviders();
  if (view === "jobs") loadJobs();
  if (view === "job") showJob(m[1].replace(/^0+(?=\d)/, ""));
}

$("#connect").addEventListener("click", () => connect().catch((e) => log(e.message, "err")));
$("#submit").addEventListener("click", submitJob);
window.addEventListener("hashchange", route);
seedFeed().then(startFeed);
loadChain();
setInterval(loadChain, 5000);
route();
