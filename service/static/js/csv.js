// CSV (RFC 4180: quoted fields, doubled quotes, CRLF) and JSON rows parsed in the browser into
// a prediction request body: {"records": [...]} or {"instances": [...]}.
const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

export function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') { field += '"'; i += 1; }
      else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"' && field === "") quoted = true;
    else if (ch === ",") { row.push(field); field = ""; }
    else if (ch === "\n" || ch === "\r") {
      if (ch === "\r" && text[i + 1] === "\n") i += 1;
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
    } else field += ch;
  }
  if (quoted) throw new Error("the CSV has an unclosed quote");
  if (field !== "" || row.length) { row.push(field); rows.push(row); }
  return rows.filter((r) => r.some((value) => value.trim() !== ""));
}

export function cellValue(raw) {
  const text = raw.trim();
  if (text === "") return null;
  return NUMBER.test(text) ? Number(text) : raw;
}

// With a header row (any non-numeric cell in the first row): records by column name;
// without one: instances in the model's feature order.
export function csvRequest(text) {
  const rows = parseCsv(text);
  if (!rows.length) throw new Error("no rows: paste CSV with a header row, or JSON");
  const hasHeader = rows[0].some((cell) => typeof cellValue(cell) === "string" && cell.trim() !== "");
  if (!hasHeader) return { instances: rows.map((r) => r.map(cellValue)) };
  const header = rows[0].map((name) => name.trim());
  const records = rows.slice(1).map((r, n) => {
    if (r.length !== header.length) {
      throw new Error(`row ${n + 2} has ${r.length} values; the header has ${header.length}`);
    }
    return Object.fromEntries(header.map((name, i) => [name, cellValue(r[i])]));
  });
  if (!records.length) throw new Error("the CSV has a header row but no data rows");
  return { records };
}

function jsonRequest(value) {
  if (Array.isArray(value) && value.length && value.every((r) => r && typeof r === "object" && !Array.isArray(r))) {
    return { records: value };
  }
  if (Array.isArray(value)) return { instances: value };
  if (value && typeof value === "object" && ("records" in value || "instances" in value)) return value;
  throw new Error('JSON must be a list of rows, a list of {"column": value} objects, or {"records"|"instances": [...]}');
}

export function predictionRequest(text) {
  const trimmed = text.trim();
  if (!trimmed) throw new Error("nothing to predict: paste rows or choose a CSV file");
  if (trimmed.startsWith("[") || trimmed.startsWith("{")) {
    let value;
    try {
      value = JSON.parse(trimmed);
    } catch (error) {
      throw new Error(`the rows are not valid JSON: ${error.message}`);
    }
    return jsonRequest(value);
  }
  return csvRequest(text);
}
