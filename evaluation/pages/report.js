// report.html and compare.html: draws the cost-quality plane and, at the cost weight the slider
// selects, each router's mean quality, cost, reward and model shares (the report's frontier.points),
// and writes the commands for that weight. The data is the page's JSON (evaluation/html_report.py).
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("page-data").textContent);
  const slider = document.getElementById("cost-weight");
  const dark = window.matchMedia("(prefers-color-scheme: dark)");

  // The numbers as the page shows them (evaluation/html_report.py formats its tables the same way).
  const format = {
    quality: (x) => x.toFixed(4),
    usd: (x) => String(Number(x.toPrecision(4))),
    share: (x) => (100 * x).toFixed(1),
    weight: (x) => String(Number(x.toPrecision(6))),
  };

  function theme() {
    const style = getComputedStyle(document.documentElement);
    const css = (name) => style.getPropertyValue(name).trim();
    return {
      bg: css("--panel"), fg: css("--fg"), muted: css("--muted"), grid: css("--grid"), accent: css("--accent"),
      single: css("--single"), oracle: css("--oracle"), operating: css("--operating"),
      series: css("--series").split(",").map((colour) => colour.trim()),
    };
  }

  // The folder this page was opened from (file:), for the commands' {folder}, quoted for a POSIX shell
  // when it needs to be ('/my runs'-w3 is the word /my runs-w3); elsewhere a placeholder.
  function pageFolder() {
    if (window.location.protocol !== "file:") return "RUN_DIR";
    let path = decodeURIComponent(window.location.pathname);
    path = path.slice(0, path.lastIndexOf("/"));
    if (/^\/[A-Za-z]:/.test(path)) path = path.slice(1);
    return /^[\w@%+=:,./-]+$/.test(path) ? path : `'${path.replaceAll("'", "'\"'\"'")}'`;
  }

  function axes(t, x, y) {
    const axis = (title) => ({
      title: { text: title }, gridcolor: t.grid, linecolor: t.grid, zerolinecolor: t.grid, automargin: true,
    });
    return { xaxis: { ...axis(x.title), ...x.options }, yaxis: { ...axis(y.title), ...y.options } };
  }

  function layout(t, x, y, extra) {
    return {
      paper_bgcolor: t.bg, plot_bgcolor: t.bg, font: { color: t.fg, size: 12 },
      margin: { l: 10, r: 10, t: 10, b: 10 },
      legend: { orientation: "h", x: 0, y: -0.18, yanchor: "top" },
      ...axes(t, x, y), ...extra,
    };
  }

  const hover = "%{text}<br>cost %{x:.4g} USD per query<br>quality %{y:.4f}<extra></extra>";

  function planeTraces(t, index) {
    const names = Object.keys(data.single_models);
    const singles = Object.values(data.single_models);
    const zero = data.zero_router.hull;
    const traces = [
      {
        x: zero.map((p) => p.cost), y: zero.map((p) => p.quality), mode: "lines", name:
        `zero router (AIQ ${format.quality(data.zero_router.aiq)})`, line: { color: t.single, dash: "dash" },
        hoverinfo: "skip",
      },
      {
        x: singles.map((p) => p.cost), y: singles.map((p) => p.quality), text: names, mode: "markers+text",
        textposition: "top center", textfont: { size: 10, color: t.muted }, name: "single models", cliponaxis: false,
        marker: { color: t.single, size: 8 }, hovertemplate: hover,
      },
    ];
    if (data.oracle) {
      traces.push({
        x: [data.oracle.cost], y: [data.oracle.quality], text: ["oracle"], mode: "markers",
        name: "oracle (best model per query)", marker: { color: t.oracle, symbol: "diamond", size: 11 },
        hovertemplate: hover,
      });
    }
    data.routers.forEach((router, i) => {
      const colour = t.series[i % t.series.length];
      traces.push({
        x: router.hull.map((p) => p.cost), y: router.hull.map((p) => p.quality), mode: "lines",
        name: `${router.name} frontier (AIQ ${format.quality(router.aiq)})`, legendgroup: router.name,
        line: { color: colour, width: 2 }, hoverinfo: "skip",
      });
      traces.push({
        x: router.points.map((p) => p.cost), y: router.points.map((p) => p.quality), mode: "markers",
        text: router.points.map((p) => `${router.name} at cost weight ${format.weight(p.cost_weight)}`),
        name: `${router.name} swept weights`, legendgroup: router.name, showlegend: false,
        marker: { color: colour, size: 5, opacity: 0.55 }, hovertemplate: hover,
      });
    });
    if (data.operating_point) {
      const point = data.operating_point;
      traces.push({
        x: [point.cost], y: [point.quality], mode: "markers",
        text: [`operating point (cost weight ${format.weight(point.cost_weight)})`],
        name: "operating point", marker: { color: t.operating, symbol: "star", size: 15 },
        hovertemplate: hover,
      });
    }
    traces.push({
      x: data.routers.map((r) => r.points[index].cost), y: data.routers.map((r) => r.points[index].quality),
      text: data.routers.map((r) => `${r.name} at the selected weight`), mode: "markers", name: "selected weight",
      marker: { color: "rgba(0,0,0,0)", size: 18, line: { color: t.fg, width: 2 } }, hovertemplate: hover,
    });
    return traces;
  }

  // Ticks at 1, 2 and 5 (or 1 and 3, or 1) times the powers of ten, as many as the chart's width holds,
  // written as plain decimals: USD per query spans 1e-6 to 1e-1, where SI prefixes (100µ) mislead.
  function costTicks(width) {
    const costs = [...Object.values(data.single_models), ...data.routers.flatMap((r) => r.points)].map((p) => p.cost);
    if (data.oracle) costs.push(data.oracle.cost);
    const positive = costs.filter((cost) => cost > 0);
    const low = Math.min(...positive) / 1.5;
    const high = Math.max(...positive) * 1.5;
    const decades = Math.max(Math.log10(high / low), 1);
    const steps = width / decades > 260 ? [1, 2, 5] : width / decades > 130 ? [1, 3] : [1];
    const ticks = [];
    for (let power = Math.floor(Math.log10(low)); power <= Math.ceil(Math.log10(high)); power += 1) {
      for (const step of steps) {
        const tick = Number((step * 10 ** power).toPrecision(1));
        if (tick >= low && tick <= high) ticks.push(tick);
      }
    }
    return { tickvals: ticks, ticktext: ticks.map((tick) => format.usd(tick)) };
  }

  function planeLayout(t) {
    const [low, high] = data.cost_range;
    const width = document.getElementById("frontier-chart").clientWidth || 600;
    return layout(
      t,
      { title: "mean cost per query (USD, log scale)", options: { type: "log", ...costTicks(width) } },
      { title: "mean quality (0 to 1)", options: {} },
      {
        shapes: [{
          type: "rect", xref: "x", yref: "paper", x0: low, x1: high, y0: 0, y1: 1, layer: "below",
          fillcolor: t.accent, opacity: 0.07, line: { width: 0 },
        }],
      },
    );
  }

  function shareTraces(t, index) {
    return data.routers.map((router, i) => {
      const shares = router.points[index].share_per_model;
      return {
        type: "bar", x: data.models, y: data.models.map((model) => 100 * shares[model]), name: router.name,
        marker: { color: t.series[i % t.series.length] },
        hovertemplate: `${router.name}<br>%{x}: %{y:.1f}% of queries<extra></extra>`,
      };
    });
  }

  function shareLayout(t) {
    return layout(
      t,
      { title: "model", options: { type: "category", tickangle: -35 } },
      { title: "share of queries (%)", options: { range: [0, 100] } },
      {
        barmode: "group", showlegend: data.routers.length > 1,
        legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" },
      },
    );
  }

  function showReadouts(index) {
    const weight = data.cost_weights[index];
    const output = document.getElementById("selected-weight");
    output.textContent = format.weight(weight);
    output.dataset.value = String(weight);
    document.getElementById("selected-index").textContent = String(index + 1);
    const shown = { quality: format.quality, cost: format.usd, reward: format.quality, share: format.share };
    const routers = Object.fromEntries(data.routers.map((router) => [router.name, router.points[index]]));
    for (const cell of document.querySelectorAll("[data-readout]")) {
      const point = routers[cell.dataset.router];
      const kind = cell.dataset.readout;
      const value = kind === "share" ? point.share_per_model[cell.dataset.model] : point[kind];
      cell.dataset.value = String(value);
      cell.textContent = shown[kind](value);
    }
    const folder = pageFolder();
    for (const block of document.querySelectorAll("pre[data-command]")) {
      const command = block.dataset.template.replaceAll("{weight}", format.weight(weight));
      block.querySelector("code").textContent = command.replaceAll("{folder}", folder);
    }
  }

  function render() {
    const index = Number(slider.value);
    const t = theme();
    const config = { responsive: true, displaylogo: false };
    showReadouts(index);
    Plotly.react("frontier-chart", planeTraces(t, index), planeLayout(t), config);
    Plotly.react("shares-chart", shareTraces(t, index), shareLayout(t), config);
    document.body.dataset.rendered = String(index);
  }

  slider.addEventListener("input", render);
  dark.addEventListener("change", render);
  render();
})();
