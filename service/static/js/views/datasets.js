// Datasets: the list (with an upload form) and one dataset with its column profile.
import { api, get } from "../api.js";
import { datasetHref, el, facts, fmtBytes, fmtNumber, fmtTime, link, table } from "../dom.js";

function uploadForm() {
  const file = el("input", { type: "file", id: "upload-file", accept: ".csv,.parquet,.pq,.npz", required: true });
  const name = el("input", { type: "text", id: "upload-name", placeholder: "name (optional)" });
  const message = el("p", { class: "field-error", role: "status" });
  const submit = async (event) => {
    event.preventDefault();
    if (!file.files.length) return;
    const form = new FormData();
    form.append("file", file.files[0]);
    if (name.value.trim()) form.append("name", name.value.trim());
    message.textContent = "uploading…";
    try {
      const dataset = await api("POST", "/v1/datasets", { form });
      location.hash = datasetHref(dataset.id);
    } catch (error) {
      message.textContent = error.message;
    }
  };
  return el("form", { class: "toolbar", id: "upload-form", onsubmit: submit },
    el("label", { for: "upload-file", text: "Upload CSV, Parquet or .npz:" }), file, name,
    el("button", { type: "submit", text: "Upload" }), message);
}

export async function datasetList(root) {
  const datasets = await get("/v1/datasets");
  root.append(el("h1", { text: "Datasets" }), uploadForm());
  if (!datasets.length) {
    root.append(el("p", { class: "muted", text: "No datasets yet." }));
    return;
  }
  root.append(table([
    { label: "Name", value: (d) => link(datasetHref(d.id), d.name || d.id, { class: "dataset-link" }) },
    { label: "Format", value: (d) => d.format },
    { label: "Rows", value: (d) => fmtNumber(d.n_rows), numeric: true },
    { label: "Columns", value: (d) => fmtNumber(d.columns ? d.columns.length : d.n_columns), numeric: true },
    { label: "Size", value: (d) => fmtBytes(d.size_bytes), numeric: true },
    { label: "Uploaded", value: (d) => fmtTime(d.created_at) },
  ], datasets, { id: "datasets" }));
}

const PROFILE = ["dtype", "missing", "min", "max", "mean", "std", "n_unique"];

export async function datasetView(root, { id }) {
  const dataset = await get(`/v1/datasets/${encodeURIComponent(id)}`);
  document.title = `${dataset.name} · Backprop Service`;
  root.append(
    el("h1", {}, "Dataset ", el("span", { class: "dataset-name", text: dataset.name })),
    facts([
      ["id", dataset.id], ["format", dataset.format], ["rows", fmtNumber(dataset.n_rows)],
      ["size", fmtBytes(dataset.size_bytes)], ["uploaded", fmtTime(dataset.created_at)],
      dataset.shapes && Object.keys(dataset.shapes).length
        ? ["shapes", Object.entries(dataset.shapes).map(([k, v]) => `${k}: (${v.join(", ")})`).join("  ")] : null,
    ]),
    el("p", {}, link(`#/new-job?dataset=${encodeURIComponent(dataset.id)}`, "Train a network on this dataset")),
  );
  const columns = dataset.columns || [];
  if (!columns.length) {
    root.append(el("p", { class: "muted", text: "No column profile (an .npz dataset has arrays, not columns)." }));
    return;
  }
  root.append(el("h2", { text: "Column profile" }), table([
    { label: "Column", value: (c) => c.name },
    ...PROFILE.map((key) => ({ label: key, value: (c) => fmtNumber(c[key]), numeric: key !== "dtype" })),
  ], columns, { id: "profile" }));
}
