// The mmat viewer page. Vanilla JavaScript, no dependency, nothing fetched from outside.
//
// Safety rule: every string that comes from the data is inserted with textContent (through
// el() and svg() below); this file never assigns innerHTML. The server's Content-Security-Policy
// forbids inline script as a second line of defence.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const STATUS_ORDER = ["kept", "reflected", "flagged", "dropped", "failed", "quarantined"];
const BOX_COLOURS = ["#e4572e", "#17bebb", "#ffc914", "#76b041", "#9b5de5", "#f15bb5", "#00bbf9", "#fe7f2d"];
const state = { info: null, version: null, view: null, cursors: [0], page: null, pollTimer: null };

// -- DOM helpers ---------------------------------------------------------------------------------

/** An element with attributes and children; strings and numbers become text nodes. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

/** An SVG element, same conventions as el(). */
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
function $(id) { return document.getElementById(id); }
function fmtInt(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }
function fmtCost(n) { return n === null || n === undefined ? "–" : "$" + Number(n).toFixed(n < 1 ? 4 : 2); }
function fmtSec(n) { return n === null || n === undefined ? "–" : (n < 1 ? (n * 1000).toFixed(1) + " ms" : n.toFixed(2) + " s"); }
function badge(status) { return el("span", { class: "badge status-" + status }, status); }

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// -- routing ---------------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  document.querySelectorAll("header nav a").forEach((a) => a.classList.remove("active"));
  const sample = path.match(/^\/sample\/(\d+)$/);
  if (sample) { $("nav-samples").classList.add("active"); state.view = "sample"; return showSample(Number(sample[1]), params); }
  if (path === "/dashboard") { $("nav-dashboard").classList.add("active"); state.view = "dashboard"; return showDashboard(); }
  $("nav-samples").classList.add("active");
  state.view = "list";
  return showList(params);
}

function filterParams(params) {
  const keep = new URLSearchParams();
  for (const key of ["q", "status", "source", "subset", "tool", "verdict"]) if (params.get(key)) keep.set(key, params.get(key));
  return keep;
}

function showError(error) {
  clear($("app")).append(el("div", { class: "error" }, "Could not load: ", error.message || String(error)));
}

// -- header and live refresh -----------------------------------------------------------------

async function refreshInfo() {
  try {
    const info = await api("/api/info");
    const changed = state.version !== null && info.version !== state.version;
    state.info = info;
    state.version = info.version;
    $("run-label").textContent = info.label;
    $("run-label").title = info.label;
    const runState = $("run-state");
    runState.textContent = info.state === "running" ? "running · live" : info.state;
    runState.className = "badge state-" + info.state;
    const idx = info.index;
    $("index-state").textContent = idx.error ? idx.error
      : (idx.built && idx.indexed >= idx.total ? "" : `indexing ${fmtInt(idx.indexed)} / ${fmtInt(idx.total)}`);
    if (changed) onDataChanged();
  } catch (error) {
    $("index-state").textContent = "server unreachable";
  }
  clearTimeout(state.pollTimer);
  const busy = state.info && (state.info.state === "running" || !state.info.index.built || state.info.index.indexed < state.info.index.total);
  state.pollTimer = setTimeout(refreshInfo, busy ? 2000 : 15000);
}

function onDataChanged() {
  // A running run grew: refresh what is on screen without losing the reader's place.
  if (state.view === "dashboard") showDashboard();
  else if (state.view === "list" && state.cursors.length === 1) showList(new URLSearchParams(location.hash.split("?")[1] || ""), true);
  else if (state.view === "list") updateFilterOptions();
}

// -- sample list -----------------------------------------------------------------------------

function select(name, label, options, value) {
  const node = el("select", { name, "aria-label": label, id: "filter-" + name },
    el("option", { value: "" }, label + ": all"),
    options.map(([v, text]) => el("option", { value: v, selected: v === value }, text)));
  node.addEventListener("change", applyFilters);
  return node;
}

function filterOptions(params) {
  const f = state.info ? state.info.facets : { sources: [], subsets: [], statuses: {}, tools: [], verdicts: [] };
  const statuses = STATUS_ORDER.filter((s) => f.statuses[s] !== undefined || s === "quarantined")
    .map((s) => [s, `${s} (${fmtInt(f.statuses[s] || 0)})`]);
  const subsets = f.subset_counts ? f.subset_counts.filter((s) => s.subset)
    .filter((s) => !params.get("source") || s.source === params.get("source"))
    .map((s) => [s.subset, `${s.source}/${s.subset}`]) : [];
  const verdicts = [];
  for (const kind of ["fix", "reject"]) verdicts.push([`*:${kind}`, `any critic: ${kind}`]);
  for (const v of f.verdicts) verdicts.push([`${v.critic}:${v.verdict}`, `${v.critic}: ${v.verdict} (${fmtInt(v.count)})`]);
  return [
    select("status", "Status", statuses, params.get("status") || ""),
    select("source", "Source", f.sources.map((s) => [s, s]), params.get("source") || ""),
    select("subset", "Sub-dataset", subsets, params.get("subset") || ""),
    select("tool", "Tool used", f.tools.map((t) => [t.name, `${t.name} (${fmtInt(t.count)})`]), params.get("tool") || ""),
    select("verdict", "Verdict", verdicts, params.get("verdict") || ""),
  ];
}

function updateFilterOptions() {
  const holder = $("filter-selects");
  if (!holder) return;
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  clear(holder).append(...filterOptions(params));
}

function applyFilters(event) {
  if (event) event.preventDefault();
  const params = new URLSearchParams();
  const q = $("filter-q").value.trim();
  if (q) params.set("q", q);
  for (const name of ["status", "source", "subset", "tool", "verdict"]) {
    const value = $("filter-" + name).value;
    if (value) params.set(name, value);
  }
  state.cursors = [0];
  location.hash = "#/?" + params.toString();
}

async function showList(params, keepCursor) {
  if (!keepCursor && !params.get("after")) state.cursors = [0];
  const app = clear($("app"));
  const search = el("input", { type: "search", id: "filter-q", placeholder: "Search questions, thoughts, answers…",
    value: params.get("q") || "", "aria-label": "Search" });
  const form = el("form", { class: "filters", id: "filters", onsubmit: applyFilters },
    search, el("span", { id: "filter-selects", class: "filter-selects" }, filterOptions(params)),
    el("button", { type: "submit" }, "Search"),
    el("a", { href: "#/", class: "clear" }, "Clear"));
  const summary = el("div", { class: "summary", id: "list-summary" }, "Loading…");
  const table = el("div", { id: "list" });
  app.append(form, summary, table);
  await loadPage(params);
}

async function loadPage(params) {
  const query = filterParams(params);
  const after = state.cursors[state.cursors.length - 1];
  query.set("after", after);
  // Answers can arrive out of order (a live refresh racing a filter change): only the newest
  // request may draw the list.
  const ticket = (state.listTicket = (state.listTicket || 0) + 1);
  let page;
  try { page = await api("/api/samples?" + query.toString()); } catch (error) { return showError(error); }
  if (ticket !== state.listTicket) return;
  state.page = page;
  const summary = $("list-summary");
  if (!summary) return;
  const first = (state.cursors.length - 1) * 50 + 1;
  const shown = page.rows.length ? `${fmtInt(first)}–${fmtInt(first + page.rows.length - 1)}` : "0";
  append(clear(summary), [
    el("strong", {}, `${fmtInt(page.count)}${page.count_capped ? "+" : ""} `),
    page.quarantine ? "quarantined rows" : "samples", ` · showing ${shown}`,
    page.via === "store" && !page.quarantine ? el("span", { class: "muted" }, " · index still building: filters scan the run store") : null]);
  const list = clear($("list"));
  if (!page.rows.length) { list.append(el("p", { class: "empty" }, "No sample matches these filters.")); return; }
  list.append(page.quarantine ? quarantineTable(page.rows) : sampleTable(page.rows, query));
  const pager = el("div", { class: "pager" },
    el("button", { type: "button", id: "page-first", disabled: state.cursors.length === 1, onclick: () => { state.cursors = [0]; loadPage(params); } }, "« First"),
    el("button", { type: "button", id: "page-prev", disabled: state.cursors.length === 1, onclick: () => { state.cursors.pop(); loadPage(params); } }, "‹ Previous"),
    el("span", { class: "muted" }, `page ${state.cursors.length}`),
    el("button", { type: "button", id: "page-next", disabled: page.next === null, onclick: () => { state.cursors.push(page.next); loadPage(params); } }, "Next ›"));
  list.append(pager);
}

function sampleTable(rows, query) {
  query.delete("after");
  const suffix = query.toString() ? "?" + query.toString() : "";
  return el("table", { class: "samples" },
    el("thead", {}, el("tr", {}, ["#", "Status", "Source", "Tools", "Question", "Reflected by", "Cost"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => {
      const href = `#/sample/${r.seq}${suffix}`;
      const row = el("tr", { class: "sample-row", dataset: { seq: r.seq }, tabindex: 0 },
        el("td", { class: "num" }, el("a", { href }, r.seq)),
        el("td", {}, badge(r.status), r.failure ? el("div", { class: "failure" }, r.failure) : null),
        el("td", {}, r.source, r.subset ? el("span", { class: "muted" }, "/" + r.subset) : null),
        el("td", {}, (r.tools || "").split(",").filter(Boolean).map((t) => el("span", { class: "chip" }, t))),
        el("td", { class: "question" }, r.question),
        el("td", {}, r.reflected_by || ""),
        el("td", { class: "num" }, fmtCost(r.cost)));
      row.addEventListener("click", (event) => { if (!event.target.closest("a")) location.hash = href; });
      row.addEventListener("keydown", (event) => { if (event.key === "Enter") location.hash = href; });
      return row;
    })));
}

function quarantineTable(rows) {
  return el("table", { class: "samples quarantine" },
    el("thead", {}, el("tr", {}, ["#", "Source", "Row", "Reason", "Detail", "Stage"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", { class: "quarantine-row" },
      el("td", { class: "num" }, r.n),
      el("td", {}, r.source, r.subset ? el("span", { class: "muted" }, "/" + r.subset) : null),
      el("td", { class: "mono" }, r.row),
      el("td", {}, el("span", { class: "badge status-quarantined" }, r.reason)),
      el("td", { class: "question" }, r.detail || ""),
      el("td", {}, r.stage || "")))));
}

// -- one sample ----------------------------------------------------------------------------------

async function showSample(seq, params) {
  const app = clear($("app"));
  app.append(el("p", { class: "muted" }, "Loading sample…"));
  const query = filterParams(params).toString();
  let view;
  try { view = await api(`/api/sample/${seq}${query ? "?" + query : ""}`); } catch (error) { return showError(error); }
  const t = view.trace;
  const suffix = query ? "?" + query : "";
  const nav = el("div", { class: "sample-nav" },
    el("a", { href: "#/" + suffix, class: "back" }, "← list"),
    el("a", { id: "prev-sample", class: "step-link" + (view.neighbours.prev === null ? " disabled" : ""),
      href: view.neighbours.prev === null ? null : `#/sample/${view.neighbours.prev}${suffix}` }, "‹ previous"),
    el("a", { id: "next-sample", class: "step-link" + (view.neighbours.next === null ? " disabled" : ""),
      href: view.neighbours.next === null ? null : `#/sample/${view.neighbours.next}${suffix}` }, "next ›"),
    el("h1", { id: "sample-id" }, view.id), badge(view.status),
    el("span", { class: "muted" }, `${view.source}${view.subset ? "/" + view.subset : ""} · #${view.seq}`),
    view.kind !== "trace" ? el("span", { class: "badge" }, `from ${view.kind.toUpperCase()} record`) : null);
  const left = el("div", { class: "col-left" },
    imageCard(view), questionCard(view), verdictCard(t), usageCard(t));
  const right = el("div", { class: "col-right" }, dialogueCard(view));
  const exports = exportCard(view);
  const raw = el("details", { class: "card raw" }, el("summary", {}, "Raw trace JSON"),
    el("pre", { class: "mono" }, JSON.stringify(t, null, 2)));
  clear(app).append(nav, el("div", { class: "sample-grid" }, left, right), exports, raw);
}

function imageCard(view) {
  const card = el("section", { class: "card image-card" }, el("h2", {}, "Image"));
  if (!view.images.length) { card.append(el("p", { class: "muted" }, "This sample has no image.")); return card; }
  view.images.forEach((image, index) => {
    const boxes = index === 0 ? view.boxes : [];
    const frame = el("div", { class: "image-frame" });
    const img = el("img", { src: image.url, alt: `image ${index + 1} of the sample`, class: "sample-image" });
    const overlay = svg("svg", { class: "boxes", preserveAspectRatio: "none", "aria-label": "boxes" });
    frame.append(img, overlay);
    const tools = [...new Set(boxes.map((b) => b.tool))];
    const draw = () => drawBoxes(overlay, boxes, img.naturalWidth || image.width || 1, img.naturalHeight || image.height || 1, card);
    img.addEventListener("load", draw);
    img.addEventListener("error", () => frame.replaceWith(el("p", { class: "error" }, "Image unavailable: ", image.path || image.sha256 || "")));
    if (image.width && image.height) draw();
    card.append(frame);
    if (tools.length) {
      card.append(el("div", { class: "legend" }, tools.map((tool, i) => el("label", {},
        el("input", { type: "checkbox", checked: true, dataset: { tool }, onchange: (e) => {
          overlay.querySelectorAll(`g[data-tool="${CSS.escape(tool)}"]`).forEach((g) => g.style.display = e.target.checked ? "" : "none");
        } }),
        el("span", { class: "swatch", style: null, dataset: { colour: i % BOX_COLOURS.length } }),
        `${tool} (${boxes.filter((b) => b.tool === tool).length})`))));
    }
    card.append(el("div", { class: "muted small mono" }, image.path || image.sha256 || ""));
  });
  return card;
}

function drawBoxes(overlay, boxes, width, height) {
  clear(overlay);
  overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const tools = [...new Set(boxes.map((b) => b.tool))];
  const stroke = Math.max(2, Math.round(Math.max(width, height) / 250));
  for (const b of boxes) {
    const [x1, y1, x2, y2] = b.units === "norm" ? [b.box[0] * width, b.box[1] * height, b.box[2] * width, b.box[3] * height] : b.box;
    const colour = BOX_COLOURS[tools.indexOf(b.tool) % BOX_COLOURS.length];
    const size = Math.max(12, Math.round(Math.max(width, height) / 40));
    overlay.append(svg("g", { class: "box", "data-tool": b.tool },
      svg("rect", { x: x1, y: y1, width: Math.max(1, x2 - x1), height: Math.max(1, y2 - y1), fill: "none", stroke: colour, "stroke-width": stroke }),
      svg("rect", { x: x1, y: Math.max(0, y1 - size - 4), width: Math.max(size * 2, b.label.length * size * 0.6 + 8), height: size + 4, fill: colour }),
      svg("text", { x: x1 + 4, y: Math.max(size, y1 - 6), "font-size": size, fill: "#111" }, b.label),
      svg("title", {}, `${b.tool} · step ${b.step + 1} · [${b.box.join(", ")}] (${b.units === "norm" ? "normalised" : "pixels"})`)));
  }
}

function questionCard(view) {
  const t = view.trace;
  const sample = t.sample || {};
  const answers = sample.answers || [];
  const card = el("section", { class: "card" }, el("h2", {}, "Question"),
    el("p", { class: "question-text", id: "question-text" }, sample.question || ""),
    sample.constraint ? el("p", { class: "muted constraint" }, sample.constraint.trim()) : null,
    sample.choices ? el("ol", { class: "choices", type: "A" }, sample.choices.map((c) => el("li", {}, c))) : null);
  const final = t.final_answer ?? "";
  const matched = answers.some((a) => a.trim().toLowerCase() === String(final).trim().toLowerCase());
  card.append(el("div", { class: "answers" },
    el("div", {}, el("div", { class: "label" }, "Ground truth"),
      answers.length ? el("div", { class: "answer gt", id: "ground-truth" }, answers[0]) : el("div", { class: "muted" }, "not in this file"),
      answers.length > 1 ? el("div", { class: "muted small" }, "also accepted: ", answers.slice(1).join(" · ")) : null),
    el("div", {}, el("div", { class: "label" }, "Final answer"),
      el("div", { class: "answer final " + (answers.length ? (matched ? "match" : "mismatch") : ""), id: "final-answer" }, final))));
  if (t.failure) card.append(el("p", { class: "failure" }, "Failure: ", t.failure));
  if (t.notes && t.notes.length) card.append(el("p", { class: "muted small" }, "Engine notes: ", t.notes.join(", ")));
  return card;
}

function verdictCard(t) {
  const card = el("section", { class: "card", id: "verdicts" }, el("h2", {}, "Critics"));
  if (!t.verdicts || !t.verdicts.length) { card.append(el("p", { class: "muted" }, t.from_record ? "Verdicts are not part of exported records." : "No critic reviewed this sample.")); return card; }
  card.append(el("table", { class: "kv" }, t.verdicts.map((v) => el("tr", { class: "verdict verdict-" + v.verdict },
    el("td", {}, v.critic, v.round ? el("span", { class: "muted" }, ` · round ${v.round}`) : null),
    el("td", {}, el("span", { class: "badge verdict-" + v.verdict }, v.verdict)),
    el("td", {}, v.reason || el("span", { class: "muted" }, "—"), v.score !== null && v.score !== undefined ? el("span", { class: "muted" }, ` (score ${v.score})`) : null)))));
  return card;
}

function usageCard(t) {
  const card = el("section", { class: "card" }, el("h2", {}, "Usage and provenance"));
  const u = t.usage;
  const rows = [];
  if (u) rows.push(["Tokens", `${fmtInt(u.prompt_tokens)} prompt · ${fmtInt(u.completion_tokens)} completion`],
    ["Cost", fmtCost(u.cost_usd)], ["Model time", fmtSec(u.latency_s)], ["Calls", `${fmtInt(u.calls)} (${fmtInt(u.cached_calls)} cached)`]);
  for (const [k, v] of Object.entries(t.timings || {})) rows.push([k.replace(/_/g, " "), fmtSec(v)]);
  const p = t.provenance;
  if (p) {
    rows.push(["Generator", p.generator + (p.offline ? " (offline: not model-written)" : "")]);
    if (p.licence) rows.push(["Licence", p.licence]);
    if (p.mmat_version) rows.push(["mmat", p.mmat_version]);
  }
  if (t.final_call) rows.push(["Final answer call", callText(t.final_call)]);
  card.append(el("table", { class: "kv" }, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)))));
  return card;
}

function callText(call) {
  if (!call) return "";
  const u = call.usage || {};
  return `${call.backend}:${call.model} · ${fmtInt(u.prompt_tokens)}+${fmtInt(u.completion_tokens)} tokens · ${fmtCost(u.cost_usd)} · ${fmtSec(u.latency_s)}`
    + (call.cached ? " · cached" : "") + (call.attempts > 1 ? ` · ${call.attempts} attempts` : "") + (call.error ? ` · error: ${call.error}` : "");
}

function dialogueCard(view) {
  const t = view.trace;
  const sample = t.sample || {};
  const card = el("section", { class: "card dialogue", id: "dialogue" }, el("h2", {}, "Dialogue"));
  card.append(el("div", { class: "turn user" }, el("div", { class: "role" }, "user"), el("div", { class: "content" }, (sample.question || "") + (sample.constraint || ""))));
  (t.steps || []).forEach((step, i) => card.append(stepNode(step, i)));
  if (t.final_prompt) card.append(el("div", { class: "turn user" }, el("div", { class: "role" }, "user · final question"), el("div", { class: "content" }, t.final_prompt)));
  card.append(el("div", { class: "turn assistant final-turn" }, el("div", { class: "role" }, "assistant · answer"),
    el("div", { class: "content" }, t.final_answer ?? "")));
  return card;
}

function stepNode(step, i) {
  const node = el("div", { class: `step step-${step.kind || "rationale"}`, dataset: { step: i } },
    el("div", { class: "step-head" }, el("strong", {}, `Step ${i + 1}`), " ",
      el("span", { class: "badge kind-" + (step.kind || "rationale") }, step.kind || "rationale"),
      el("span", { class: "badge signal-" + step.signal }, "signal: " + step.signal),
      step.leaks_answer ? el("span", { class: "badge status-failed" }, "leaks answer") : null,
      step.model_call ? el("span", { class: "muted small call" }, callText(step.model_call)) : null),
    el("div", { class: "thought" }, el("span", { class: "label" }, "Thought"), el("p", {}, step.thought || "")));
  if (step.operators && step.operators.length) node.append(el("div", { class: "operators" }, el("span", { class: "label" }, "Operators"), step.operators.map((o) => el("span", { class: "chip" }, o))));
  for (const call of step.tool_calls || []) {
    node.append(el("div", { class: "tool-call" + (call.error ? " has-error" : "") },
      el("div", { class: "tool-head" }, el("strong", {}, call.name), call.version ? el("span", { class: "muted" }, " v" + call.version) : null,
        call.latency_s !== undefined ? el("span", { class: "muted small" }, ` · ${fmtSec(call.latency_s)}`) : null,
        call.cached ? el("span", { class: "muted small" }, " · cached") : null,
        call.args && Object.keys(call.args).length ? el("span", { class: "muted small mono" }, " · args " + JSON.stringify(call.args)) : null),
      call.error ? el("div", { class: "error" }, call.error) : null,
      call.result ? el("pre", { class: "result" }, call.result) : null));
  }
  if (step.rag_query || step.rag) {
    const rag = step.rag || {};
    node.append(el("div", { class: "rag" }, el("span", { class: "label" }, "RAG"),
      el("div", { class: "rag-query" }, "query: ", el("q", {}, step.rag_query || rag.query || "")),
      rag.error ? el("div", { class: "error" }, rag.error) : null,
      (rag.hits || []).length ? el("ol", { class: "hits" }, rag.hits.map((h) => el("li", {},
        h.title ? el("strong", {}, h.title + " ") : null, h.score !== null && h.score !== undefined ? el("span", { class: "muted small" }, `(${Number(h.score).toFixed(3)}) `) : null,
        el("span", {}, h.snippet), h.url ? el("div", { class: "muted small mono" }, h.url) : null))) : null));
  }
  if (step.observation) node.append(el("div", { class: "turn user observation" }, el("div", { class: "role" }, "user · observation"), el("div", { class: "content" }, step.observation)));
  return node;
}

function exportCard(view) {
  const card = el("section", { class: "card exports", id: "exports" }, el("h2", {}, "As exported: RR and ORR"));
  if (view.export_note) card.append(el("p", { class: "note" }, view.export_note));
  const column = (name, record, id) => el("div", { class: "export-col", id },
    el("h3", {}, name),
    record ? [record.messages.map((m) => el("div", { class: "msg msg-" + m.role }, el("div", { class: "role" }, m.role), el("pre", {}, m.content))),
      el("div", { class: "muted small mono" }, "images: ", JSON.stringify(record.images))]
      : el("p", { class: "muted" }, "not available"));
  card.append(el("div", { class: "export-grid" }, column("RR (multi-turn)", view.rr, "rr"), column("ORR (one turn)", view.orr, "orr")));
  return card;
}

// -- dashboard -------------------------------------------------------------------------------

async function showDashboard() {
  const app = $("app");
  if (!app.querySelector(".dashboard")) clear(app).append(el("p", { class: "muted" }, "Loading dashboard…"));
  let d, paper;
  try { [d, paper] = await Promise.all([api("/api/dashboard"), api("/api/paper")]); } catch (error) { return showError(error); }
  if (state.view !== "dashboard") return;
  const kept = (d.statuses.kept || 0) + (d.statuses.reflected || 0) + (d.statuses.flagged || 0);
  const tiles = el("div", { class: "tiles" }, [
    ["Samples read", fmtInt(d.generated + d.quarantined)], ["Kept", fmtInt(kept)],
    ["Reflected", `${fmtInt(d.reflection.reflected)} (${(100 * d.reflection.rate).toFixed(1)}%)`],
    ["Quarantined", fmtInt(d.quarantined)], ["Tokens", fmtInt(d.usage.prompt_tokens + d.usage.completion_tokens)],
    ["Cost", fmtCost(d.usage.cost_usd)], ["Cost per kept", fmtCost(d.usage.cost_per_kept)],
  ].map(([k, v]) => el("div", { class: "tile" }, el("div", { class: "tile-value" }, v), el("div", { class: "tile-label" }, k))));
  const charts = el("div", { class: "charts" },
    chartCard("Yield per stage", hbars(d.stages.map((s) => ({ label: s.stage, value: s.count })))),
    chartCard("Yield per source", stacked(d.by_source.map((s) => ({ label: s.source, counts: s.counts }))), legend()),
    chartCard("Steps per sample", columns(d.steps.map((s) => ({ label: String(s.steps), value: s.count })), "steps")),
    chartCard("Tool calls per operator", hbars(d.tool_calls.map((t) => ({ label: t.tool, value: t.calls, note: t.errors ? `${fmtInt(t.errors)} errors` : "" })))),
    chartCard("Reflection: verdicts per critic", stacked(d.reflection.critics.map((c) => ({ label: c.critic, counts: c.verdicts })), ["pass", "fix", "reject"]),
      el("p", { class: "muted small" }, `${fmtInt(d.reflection.with_reflection_steps)} samples carry a reflection step`)),
    chartCard("Tokens and cost per source", hbars(d.usage.by_source.map((s) => ({ label: s.source, value: s.tokens, note: fmtCost(s.cost_usd) })))),
    chartCard("Latency percentiles (model calls)", latencyTable(d.latency.model_calls), el("p", { class: "muted small" }, `from ${fmtInt(d.latency.sampled)} traces spread over the run; cached calls left out`)),
    chartCard("Latency percentiles (tools and retrieval)", latencyTable(d.latency.tool_calls)),
    chartCard("Failures by reason", d.failures.length || d.quarantine_reasons.length
      ? hbars([...d.failures.map((f) => ({ label: f.reason, value: f.count })), ...d.quarantine_reasons.map((f) => ({ label: "quarantine: " + f.reason, value: f.count }))])
      : el("p", { class: "muted" }, "No failure.")));
  clear(app).append(el("div", { class: "dashboard" }, tiles, charts, paperCard(paper)));
}

const PAPER_SECTIONS = {
  collections: "Collections: share of kept samples (paper: share of its dialogues, Table 1)",
  "sub-datasets": "Sub-datasets: share of their collection",
  steps: "Rationale steps per sample: share of kept samples",
  operators: "Operator calls per kept sample",
  reflections: "Reflections per kept sample",
  quality: "Quality: share of scored kept samples",
  cost: "Tokens and cost per kept sample",
};

function fmtFigure(unit, v) {
  if (v === null || v === undefined) return "–";
  if (unit === "share") return (100 * v).toFixed(1) + "%";
  if (unit === "per_sample") return v.toFixed(3);
  if (unit === "usd") return fmtCost(v);
  return fmtInt(Math.round(v));
}

/** The build's figures beside the paper's, as `mmat stats --compare paper` prints them. */
function paperCard(p) {
  const origin = p.origin === "run.json" ? "from run.json" : p.origin === "store"
    ? `counted from the ${fmtInt(p.total)} stored samples` : `estimated from ${fmtInt(p.counted)} of ${fmtInt(p.total)} samples spread over the run`;
  const departing = p.rows.filter((r) => r.departs).length;
  const body = [];
  let section = null;
  for (const r of p.rows) {
    if (r.section !== section) {
      section = r.section;
      body.push(el("tr", { class: "paper-section" }, el("th", { colspan: 5 }, PAPER_SECTIONS[section] || section)));
    }
    const max = Math.max(1e-9, r.build || 0, r.paper || 0);
    const diff = r.build !== null && r.paper !== null
      ? (r.unit === "share" ? `${(100 * (r.build - r.paper)).toFixed(1)} pts` : (r.build - r.paper).toFixed(3)) : "";
    const bars = r.unit === "share" || r.unit === "per_sample"
      ? svg("svg", { viewBox: "0 0 100 14", class: "spark pair" },
        svg("rect", { x: 0, y: 1, width: Math.max(r.build ? 1 : 0, 100 * (r.build || 0) / max), height: 5, class: "build" }),
        svg("rect", { x: 0, y: 8, width: Math.max(r.paper ? 1 : 0, 100 * (r.paper || 0) / max), height: 5, class: "paper" }))
      : "";
    body.push(el("tr", { class: r.departs ? "departs" : null, dataset: { section: r.section, figure: r.figure } },
      el("td", {}, r.label ? `${r.figure} (${r.label})` : r.figure, r.note ? el("div", { class: "muted small" }, r.note) : null),
      el("td", { class: "num build" }, fmtFigure(r.unit, r.build)),
      el("td", { class: "num paper" }, fmtFigure(r.unit, r.paper)),
      el("td", { class: "num" }, diff, r.departs ? el("span", { class: "departs-mark", title: "departs from the paper" }, " ◀") : null),
      el("td", {}, bars)));
  }
  return el("section", { class: "card chart paper-compare" }, el("h2", {}, "Beside the paper (MMAT-1M)"),
    el("p", { class: "muted small" }, `${departing} figure(s) depart from the paper; the run's figures ${origin}. Paper: ${p.citation}.`),
    el("table", { class: "paper-table" },
      el("thead", {}, el("tr", {}, ["Figure", "This run", "Paper", "Difference", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, body)));
}

function chartCard(title, ...body) { return el("section", { class: "card chart" }, el("h2", {}, title), body); }

function legend() {
  return el("div", { class: "legend" }, STATUS_ORDER.map((s) => el("span", { class: "legend-item" }, el("span", { class: "swatch status-bg-" + s }), s)));
}

/** Horizontal bars: one row per item, the value printed at the end. */
function hbars(items) {
  if (!items.length) return el("p", { class: "muted" }, "Nothing yet.");
  const max = Math.max(1, ...items.map((i) => i.value));
  const row = 22, labelW = 190, barW = 300;
  const chart = svg("svg", { class: "hbars", viewBox: `0 0 ${labelW + barW + 120} ${items.length * row + 4}`, role: "img" });
  items.forEach((item, i) => {
    const y = i * row + 2;
    const w = Math.max(item.value ? 2 : 0, (item.value / max) * barW);
    chart.append(svg("text", { x: labelW - 6, y: y + 14, "text-anchor": "end", class: "axis" }, item.label.length > 30 ? item.label.slice(0, 29) + "…" : item.label),
      svg("rect", { x: labelW, y, width: w, height: row - 6, rx: 2, class: "bar" }, svg("title", {}, `${item.label}: ${fmtInt(item.value)}`)),
      svg("text", { x: labelW + w + 6, y: y + 14, class: "value" }, fmtInt(item.value) + (item.note ? ` · ${item.note}` : "")));
  });
  return chart;
}

/** Stacked horizontal bars, one colour per status (or verdict). */
function stacked(items, order = STATUS_ORDER) {
  if (!items.length) return el("p", { class: "muted" }, "Nothing yet.");
  const total = (c) => Object.values(c).reduce((a, b) => a + b, 0);
  const max = Math.max(1, ...items.map((i) => total(i.counts)));
  const row = 22, labelW = 190, barW = 300;
  const chart = svg("svg", { class: "hbars", viewBox: `0 0 ${labelW + barW + 80} ${items.length * row + 4}`, role: "img" });
  items.forEach((item, i) => {
    const y = i * row + 2;
    let x = labelW;
    chart.append(svg("text", { x: labelW - 6, y: y + 14, "text-anchor": "end", class: "axis" }, item.label));
    for (const key of [...order, ...Object.keys(item.counts).filter((k) => !order.includes(k))]) {
      const n = item.counts[key] || 0;
      if (!n) continue;
      const w = (n / max) * barW;
      chart.append(svg("rect", { x, y, width: w, height: row - 6, class: "seg status-fill-" + key }, svg("title", {}, `${item.label} · ${key}: ${fmtInt(n)}`)));
      x += w;
    }
    chart.append(svg("text", { x: x + 6, y: y + 14, class: "value" }, fmtInt(total(item.counts))));
  });
  return chart;
}

/** Vertical columns (a histogram). */
function columns(items, unit) {
  if (!items.length) return el("p", { class: "muted" }, "Nothing yet.");
  const max = Math.max(1, ...items.map((i) => i.value));
  const h = 160, colW = Math.min(48, 500 / items.length);
  const chart = svg("svg", { class: "columns", viewBox: `0 0 540 ${h + 40}`, role: "img" });
  items.forEach((item, i) => {
    const bh = (item.value / max) * h;
    const x = 10 + i * colW;
    chart.append(svg("rect", { x: x + 3, y: h - bh + 14, width: colW - 6, height: bh, class: "bar" }, svg("title", {}, `${item.label} ${unit}: ${fmtInt(item.value)}`)),
      svg("text", { x: x + colW / 2, y: h - bh + 10, "text-anchor": "middle", class: "value" }, fmtInt(item.value)),
      svg("text", { x: x + colW / 2, y: h + 30, "text-anchor": "middle", class: "axis" }, item.label));
  });
  return chart;
}

function latencyTable(rows) {
  if (!rows.length) return el("p", { class: "muted" }, "No call measured.");
  const max = Math.max(1e-9, ...rows.map((r) => r.p99 || 0));
  return el("table", { class: "latency" },
    el("thead", {}, el("tr", {}, ["Call", "n", "p50", "p90", "p99", "max", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, el("td", {}, r.name), el("td", { class: "num" }, fmtInt(r.n)),
      ["p50", "p90", "p99", "max"].map((k) => el("td", { class: "num" }, fmtSec(r[k]))),
      el("td", {}, svg("svg", { viewBox: "0 0 100 10", class: "spark" },
        svg("rect", { x: 0, y: 2, width: Math.max(1, 100 * (r.p99 || 0) / max), height: 6, class: "p99" }),
        svg("rect", { x: 0, y: 2, width: Math.max(1, 100 * (r.p90 || 0) / max), height: 6, class: "p90" }),
        svg("rect", { x: 0, y: 2, width: Math.max(1, 100 * (r.p50 || 0) / max), height: 6, class: "p50" })))))));
}

// -- start -----------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
refreshInfo().then(route);
