// routerl dashboard: polls GET /ui/data and redraws in place (docs/contracts.md §4.11).
// Rates and the latency over time come from the difference of two polls' counts.
"use strict";

const POLL_MS = 2000;
const KEEP_POINTS = 300; // ten minutes of history at one poll every two seconds
const QUERY_CHARS = 80; // a longer query is cut in the table (whole in its tooltip)
const history = { times: [], rates: {}, p50: [], p99: [], spend: {} };
let previous = null;
let polls = 0;

function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function layout(xTitle, yTitle, extra) {
  const fg = css("--fg"), grid = css("--grid");
  const axis = (title) => ({ title: { text: title }, gridcolor: grid, zerolinecolor: grid, color: fg, automargin: true });
  return Object.assign({
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", font: { color: fg, size: 12 },
    margin: { l: 56, r: 16, t: 8, b: 48 }, xaxis: axis(xTitle), yaxis: axis(yTitle),
    legend: { orientation: "h", y: -0.3 }, showlegend: true,
    datarevision: polls, // the history arrays grow in place: a new revision makes Plotly.react redraw them
  }, extra || {});
}

// Draw or redraw a chart in place; without any value yet it says so instead of showing bare axes.
function draw(id, traces, chartLayout) {
  const empty = traces.every((t) => !t.y || t.y.every((v) => v === null || v === undefined));
  if (empty) {
    chartLayout.annotations = [{ text: "no data yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5,
      font: { color: css("--muted"), size: 14 } }];
  }
  Plotly.react(id, traces, chartLayout, { displayModeBar: false, responsive: true });
}

function text(id, value) {
  document.getElementById(id).textContent = value;
}

function count(value) {
  return value === null || value === undefined ? "–" : String(Math.round(value));
}

function fixed(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function cell(row, value, className) {
  const td = row.insertCell();
  td.textContent = value;
  if (className) td.className = className;
  return td;
}

function fillTable(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren();
  for (const values of rows) {
    const row = body.insertRow();
    for (const value of values) cell(row, value);
  }
  return body;
}

// Prometheus' histogram_quantile over cumulative [upper bound, count] buckets.
function quantile(buckets, q) {
  const ordered = buckets.slice().sort((a, b) => a[0] - b[0]);
  const total = ordered.length ? ordered[ordered.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0, below = 0;
  for (const [bound, n] of ordered) {
    if (n >= rank) {
      if (!isFinite(bound)) return lower;
      return lower + (bound - lower) * (n > below ? (rank - below) / (n - below) : 1);
    }
    lower = bound; below = n;
  }
  return lower;
}

function remember(series, value) {
  series.push(value);
  if (series.length > KEEP_POINTS) series.shift();
}

function updateHistory(doc) {
  const traffic = doc.traffic;
  const seconds = previous ? doc.time - previous.time : 0;
  remember(history.times, new Date(doc.time * 1000));
  const models = new Set([...Object.keys(traffic.decisions), ...Object.keys(history.rates)]);
  for (const model of models) {
    history.rates[model] = history.rates[model] || history.times.slice(0, -1).map(() => null);
    const before = previous ? previous.traffic.decisions[model] || 0 : null;
    const rate = seconds > 0 && before !== null ? ((traffic.decisions[model] || 0) - before) / seconds : null;
    remember(history.rates[model], rate);
  }
  const now = buckets(doc), then = previous ? buckets(previous) : null;
  const window = then ? now.map(([bound, n], i) => [bound, n - (then[i] ? then[i][1] : 0)]) : null;
  remember(history.p50, window ? scaled(quantile(window, 0.5)) : null);
  remember(history.p99, window ? scaled(quantile(window, 0.99)) : null);
  for (const account of doc.spend.accounts) {
    const name = account.account || "service";
    history.spend[name] = history.spend[name] || { mean: [], budget: [], weight: [], times: [] };
    const series = history.spend[name];
    remember(series.times, new Date(doc.time * 1000));
    remember(series.mean, account.mean_cost);
    remember(series.budget, account.budget);
    remember(series.weight, account.cost_weight);
  }
}

// The latency histogram's cumulative buckets, +Inf (null in JSON) as Infinity.
function buckets(doc) {
  return doc.traffic.latency.buckets.map(([bound, n]) => [bound === null ? Infinity : bound, n]);
}

function scaled(seconds) {
  return seconds === null ? null : seconds * 1000;
}

function showCards(doc) {
  const traffic = doc.traffic, quality = doc.quality;
  const seconds = previous ? doc.time - previous.time : 0;
  const rate = seconds > 0 ? (traffic.requests_total - previous.traffic.requests_total) / seconds : null;
  text("request-rate", fixed(rate, 1));
  text("requests-total", count(traffic.requests_total));
  text("decisions-total", count(traffic.decisions_total));
  text("latency-p50", fixed(scaled(traffic.latency.p50_seconds), 2));
  text("latency-p99", fixed(scaled(traffic.latency.p99_seconds), 2));
  text("server-errors", count(traffic.server_errors));
  text("client-errors", count(traffic.client_errors));
  text("fallbacks-total", count(Object.values(traffic.fallbacks).reduce((a, b) => a + b, 0)));
  text("explored-share", quality.explored_share === null ? "–" : `${(100 * quality.explored_share).toFixed(1)}%`);
  text("feedback-total", count(quality.feedback_total));
  text("policy-version", doc.policy.version);
  text("engine", doc.service.engine);
}

function showModels(doc) {
  const decisions = doc.traffic.decisions, feedback = doc.quality.feedback;
  const total = doc.traffic.decisions_total;
  const models = [...new Set([...doc.policy.models, ...Object.keys(decisions), ...Object.keys(feedback)])];
  const body = fillTable("models-table", models.map((model) => {
    const fed = feedback[model] || { count: 0, mean_quality: null };
    const n = decisions[model] || 0;
    return [model, count(n), total ? `${(100 * n / total).toFixed(1)}%` : "–", count(fed.count), fixed(fed.mean_quality, 3)];
  }));
  [...body.rows].forEach((row, i) => { row.dataset.model = models[i]; });
  const fedModels = Object.keys(feedback);
  draw("chart-quality", [{
    type: "bar", x: fedModels, y: fedModels.map((m) => feedback[m].mean_quality),
    text: fedModels.map((m) => `${feedback[m].count} records`), marker: { color: css("--accent") }, name: "mean quality",
  }], layout("model", "mean quality (0–1, from feedback)", { yaxis: { range: [0, 1], title: { text: "mean quality (0–1, from feedback)" }, gridcolor: css("--grid"), color: css("--fg") }, showlegend: false }));
}

function showTraffic() {
  const traces = Object.entries(history.rates).map(([model, rates]) => ({
    type: "scatter", mode: "lines", stackgroup: "models", name: model, x: history.times, y: rates,
  }));
  draw("chart-traffic", traces, layout("time", "decisions per second"));
  draw("chart-latency", [
    { type: "scatter", mode: "lines", name: "p50", x: history.times, y: history.p50 },
    { type: "scatter", mode: "lines", name: "p99", x: history.times, y: history.p99 },
  ], layout("time", "latency between polls (ms)"));
}

function showSpend(doc) {
  const accounts = Object.entries(history.spend);
  text("spend-note", accounts.length
    ? `cost weight routed at now: ${doc.spend.accounts.map((a) => `${a.account || "service"} ${fixed(a.cost_weight, 3)}`).join(", ")}`
    : `no live budget (serve.py --budget USD): requests route at their own cost weight, by default the policy's ${fixed(doc.spend.default_cost_weight, 3)}`);
  const traces = [];
  for (const [name, series] of accounts) {
    traces.push({ type: "scatter", mode: "lines", name: `${name}: mean cost`, x: series.times, y: series.mean });
    traces.push({ type: "scatter", mode: "lines", name: `${name}: budget`, x: series.times, y: series.budget, line: { dash: "dash" } });
    traces.push({ type: "scatter", mode: "lines", name: `${name}: cost weight`, x: series.times, y: series.weight, yaxis: "y2", line: { dash: "dot" } });
  }
  const fg = css("--fg");
  const spendLayout = layout("time", "mean cost per query (USD)", {
    yaxis2: { title: { text: "cost weight (quality per USD)" }, overlaying: "y", side: "right", color: fg, showgrid: false, automargin: true },
  });
  spendLayout.yaxis.tickformat = ".6f"; // USD per query: small numbers, shown as such (not with SI prefixes)
  draw("chart-spend", traces, spendLayout);
}

function showPolicy(doc) {
  const p = doc.policy, m = p.metrics || {}, trained = p.training_data || {};
  fillTable("policy-table", [
    ["version", p.version], ["data fingerprint", p.data_fingerprint || "–"], ["agent", p.agent || "–"],
    ["engine", p.engine], ["created", p.created_at || "–"], ["trained on", trained.trained_on || "–"],
    ["held-out mean quality", fixed(m.mean_quality, 4)], ["held-out mean cost (USD)", fixed(m.mean_cost, 6)],
    ["held-out AIQ", fixed(m.aiq, 4)], ["default cost weight", fixed(doc.spend.default_cost_weight, 4)],
    ["rule overrides", String(p.rules)], ["exploration", doc.service.explore], ["file", p.path],
  ]);
}

function showGate(doc) {
  const events = doc.policy.gate_events;
  text("gate-note", events === null
    ? "The policy in service is not a follower's (python -m training.follow): no promotions to show."
    : `${events.length} latest events of the follower beside the policy (events.jsonl).`);
  for (const id of ["chart-gate", "gate-table"]) document.getElementById(id).classList.toggle("hidden", events === null);
  if (events === null) return;
  const judged = events.filter((e) => e.detail && e.detail.estimate !== undefined && e.detail.estimate !== null);
  const colour = (e) => (e.kind === "promote" ? css("--good") : css("--muted"));
  draw("chart-gate", [{
    type: "scatter", mode: "markers", name: "candidate − incumbent (DR)", x: judged.map((e) => e.round),
    y: judged.map((e) => e.detail.estimate), marker: { color: judged.map(colour), size: 9 },
    error_y: { type: "data", symmetric: false, array: judged.map((e) => e.detail.upper - e.detail.estimate),
      arrayminus: judged.map((e) => e.detail.estimate - e.detail.lower) },
    text: judged.map((e) => e.kind),
  }], layout("round (rounds joined)", "estimated reward difference per query", { showlegend: false }));
  const body = fillTable("gate-table", events.slice().reverse().map((e) => {
    const d = e.detail || {};
    const interval = d.lower === undefined ? "–" : `[${fixed(d.lower, 4)}, ${fixed(d.upper, 4)}]`;
    const what = e.kind === "promote" ? `version ${d.version}` : (d.reason || "");
    return [count(e.round), e.kind, fixed(d.estimate, 4), interval, what];
  }));
  [...body.rows].forEach((row) => { row.cells[1].className = row.cells[1].textContent; });
}

function showRecent(doc) {
  const mode = doc.service.log_queries;
  text("recent-note", mode === "full" ? "Queries as sent (--log-queries full)."
    : mode === "hash" ? "Queries as their sha256 (--log-queries hash)." : "Queries are not shown (--log-queries none).");
  const body = fillTable("recent-table", doc.recent.map((d) => [
    new Date(d.time * 1000).toLocaleTimeString(), d.model, fixed(d.cost_weight, 4), d.explored ? "yes" : "no", d.query === null ? "–" : d.query,
  ]));
  for (const row of body.rows) {
    const query = row.cells[4];
    query.className = "query";
    query.title = query.textContent;
    if (query.textContent.length > QUERY_CHARS) query.textContent = `${query.textContent.slice(0, QUERY_CHARS)}…`;
  }
}

async function poll() {
  try {
    const response = await fetch("/ui/data", { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) throw new Error(`GET /ui/data answered ${response.status}`);
    const doc = await response.json();
    updateHistory(doc);
    showCards(doc);
    showModels(doc);
    showTraffic();
    showSpend(doc);
    showPolicy(doc);
    showGate(doc);
    showRecent(doc);
    previous = doc;
    polls += 1;
    text("poll-count", String(polls));
    text("updated", new Date(doc.time * 1000).toLocaleTimeString());
    const weight = document.getElementById("try-weight");
    if (weight.value === "") weight.value = doc.spend.default_cost_weight;
  } catch (error) {
    text("updated", `failed: ${error.message}`);
  }
}

async function tryQuery(event) {
  event.preventDefault();
  const weight = document.getElementById("try-weight").value;
  const body = { query: document.getElementById("try-query").value };
  if (weight !== "") body.cost_weight = Number(weight);
  const response = await fetch("/ui/try", {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) {
    text("try-result", answer.error ? answer.error.message : `answered ${response.status}`);
    return;
  }
  text("try-result", `→ ${answer.model} at cost weight ${fixed(answer.cost_weight, 4)} (scores: ${answer.score_kind})`);
  Object.assign(document.getElementById("try-result").dataset, { model: answer.model, weight: answer.cost_weight });
  const models = Object.keys(answer.scores);
  draw("chart-try", [{
    type: "bar", x: models, y: models.map((m) => answer.scores[m]),
    marker: { color: models.map((m) => (m === answer.model ? css("--good") : css("--accent"))) },
  }], layout("model", `score (${answer.score_kind}, higher is better)`, { showlegend: false }));
}

document.getElementById("try-form").addEventListener("submit", tryQuery);
poll();
setInterval(poll, POLL_MS);
