// A job's charts with plotly.js (the bundle the `plotly` Python package ships, loaded by
// index.html as window.Plotly): one point per recorded epoch, redrawn as epochs arrive.
const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d"] };
const WARNING = /^(vanishing|exploding) gradients?: (\S+) .*\(from epoch (\d+)\)/;
const WARNING_STYLE = {
  exploding: { symbol: "x", color: "#b3261e" },
  vanishing: { symbol: "triangle-down", color: "#c77700" },
};

function layout(title, yaxis = {}) {
  return {
    title: { text: title, font: { size: 15 } },
    height: 300,
    margin: { l: 64, r: 16, t: 40, b: 40 },
    xaxis: { title: { text: "epoch" }, tickformat: "d", rangemode: "tozero" },
    yaxis,
    legend: { orientation: "h", y: -0.22 },
    showlegend: true,
    uirevision: "keep", // zoom and hidden traces survive live redraws
  };
}

const line = (name, epochs, values, extra = {}) => ({
  type: "scatter", mode: "lines+markers", name, x: epochs.map((e) => e.epoch), y: values, ...extra,
});
const has = (values) => values.some((v) => v !== null && v !== undefined);
const pick = (epochs, key) => epochs.map((e) => (typeof e[key] === "number" ? e[key] : null));
const positive = (v) => (typeof v === "number" && v > 0 ? v : null);

// {kind, param, epoch, message} from a warning string of the engine (or an object of that shape).
export function parseWarning(warning) {
  if (warning && typeof warning === "object") {
    return { kind: warning.kind, param: warning.param ?? warning.name, epoch: warning.epoch,
      message: warning.message ?? JSON.stringify(warning) };
  }
  const text = String(warning);
  const match = WARNING.exec(text);
  return match ? { kind: match[1], param: match[2], epoch: Number(match[3]), message: text } : { message: text };
}

export function paramNames(epochs) {
  const names = [];
  for (const e of epochs) for (const name of Object.keys(e.grad_norms || {})) if (!names.includes(name)) names.push(name);
  return names;
}

function warningTraces(epochs, warnings) {
  const marked = warnings.map(parseWarning).filter((w) => w.param && Number.isFinite(w.epoch) && WARNING_STYLE[w.kind]);
  const all = epochs.flatMap((e) => Object.values(e.grad_norms || {}).map(positive)).filter((v) => v !== null);
  const top = all.length ? Math.max(...all) : 1;
  return Object.entries(WARNING_STYLE).map(([kind, style]) => {
    const mine = marked.filter((w) => w.kind === kind);
    const y = mine.map((w) => positive(epochs.find((e) => e.epoch === w.epoch)?.grad_norms?.[w.param]) ?? top);
    return { type: "scatter", mode: "markers", name: `${kind} warning`, x: mine.map((w) => w.epoch), y,
      text: mine.map((w) => w.message), hoverinfo: "text",
      marker: { symbol: style.symbol, size: 15, color: style.color, line: { width: 2, color: style.color } } };
  }).filter((trace) => trace.x.length);
}

function gradientChart(epochs, warnings) {
  const traces = paramNames(epochs).map((name) => line(name, epochs, epochs.map((e) => positive(e.grad_norms?.[name]))));
  const marks = warningTraces(epochs, warnings);
  const shapes = marks.flatMap((t) => t.x.map((x) => ({ type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1,
    line: { dash: "dot", width: 1, color: t.marker.color } })));
  const chart = layout("Gradient norm per parameter (L2, log scale)", { type: "log", exponentformat: "power" });
  return { traces: [...traces, ...marks], layout: { ...chart, shapes, height: 380 } };
}

export function chartSpecs(epochs, warnings) {
  const specs = {
    loss: { traces: [line("loss", epochs, pick(epochs, "loss"))], layout: layout("Loss") },
    accuracy: null,
    lr: { traces: [line("learning rate", epochs, pick(epochs, "learning_rate"))], layout: layout("Learning rate", { exponentformat: "power", rangemode: "tozero" }) },
    grad: gradientChart(epochs, warnings),
  };
  const valLoss = pick(epochs, "val_loss");
  if (has(valLoss)) specs.loss.traces.push(line("val_loss", epochs, valLoss));
  const accuracy = pick(epochs, "accuracy");
  const valAccuracy = pick(epochs, "val_accuracy");
  if (has(accuracy) || has(valAccuracy)) {
    specs.accuracy = { traces: [line("accuracy", epochs, accuracy)], layout: layout("Accuracy", { range: [0, 1.02] }) };
    if (has(valAccuracy)) specs.accuracy.traces.push(line("val_accuracy", epochs, valAccuracy));
  }
  return specs;
}

// nodes: {loss, accuracy, lr, grad} chart containers; a regression job has no accuracy chart.
export function drawCharts(nodes, epochs, warnings) {
  if (!window.Plotly) throw new Error("the chart library did not load (/ui/vendor/plotly.min.js)");
  const specs = chartSpecs(epochs, warnings);
  for (const [name, node] of Object.entries(nodes)) {
    const spec = specs[name];
    node.hidden = !spec;
    if (spec) window.Plotly.react(node, spec.traces, spec.layout, CONFIG);
  }
}
