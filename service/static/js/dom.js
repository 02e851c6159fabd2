// DOM building without HTML parsing: every string becomes a text node or an attribute value,
// so user data (dataset and column names, labels, errors) can never become markup.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "class") node.className = value;
    else if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name.startsWith("on")) throw new Error(`refusing a string event handler attribute ${name}`);
    else if (name in node && typeof value !== "string") node[name] = value; // value, checked, disabled, hidden
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export const link = (href, text, props = {}) => el("a", { href, ...props }, text);
export const jobHref = (id) => `#/jobs/${encodeURIComponent(id)}`;
export const modelHref = (id) => `#/models/${encodeURIComponent(id)}`;
export const datasetHref = (id) => `#/datasets/${encodeURIComponent(id)}`;
export const shortId = (id) => (id ? String(id).slice(0, 8) : "");

export function fmtNumber(value, digits = 4) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  return Math.abs(value) >= 1e-3 && Math.abs(value) < 1e6 ? String(Number(value.toPrecision(digits))) : value.toExponential(digits - 1);
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function fmtBytes(n) {
  if (typeof n !== "number") return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function statusBadge(status) {
  return el("span", { class: `status ${status}`, "data-status": status, text: status });
}

// columns: [{label, value: (row) => Node|string, numeric?}]
export function table(columns, rows, props = {}) {
  const head = el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col", text: c.label }))));
  const body = el("tbody", {}, rows.map((row) => el("tr", {},
    columns.map((c) => el("td", { class: c.numeric ? "num" : null }, c.value(row))))));
  return el("table", props, head, body);
}

export function facts(pairs) {
  return el("dl", { class: "facts" }, pairs.filter(Boolean).map(([term, value]) => [el("dt", { text: term }), el("dd", {}, value)]));
}

export function errorBox(error) {
  return el("p", { class: "error", role: "alert", text: error instanceof Error ? error.message : String(error) });
}

// "spec.layers.0.units: must be positive" for each {loc, msg} of a problem.
export function errorList(errors, props = {}) {
  return el("ul", { class: "errors", ...props }, errors.map((e) => el("li", {
    text: `${(e.loc || []).filter((p) => p !== "body").join(".") || "request"}: ${e.msg}`,
  })));
}
