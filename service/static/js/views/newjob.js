// The new-job form: dataset, target, features, input shape and a spec editor prefilled with
// a working example; a 422's errors go next to the field they name, the spec's beside the editor.
import { ApiError, api, get } from "../api.js";
import { el, errorList, jobHref } from "../dom.js";

export const EXAMPLE_SPEC = {
  layers: [
    { type: "dense", units: 32, activation: "relu" },
    { type: "dense", activation: "softmax" },
  ],
  loss: "cross_entropy",
  optimizer: { type: "adam", learning_rate: 0.01 },
  epochs: 30,
  batch_size: 32,
  validation_split: 0.2,
};
const FIELDS = ["dataset_id", "target", "features", "input_shape"];

function fieldRow(label, input, name) {
  return el("div", {}, el("label", { for: input.id, text: label }), input,
    el("p", { class: "field-error", id: `error-${name}`, role: "alert" }));
}

async function fillColumns(datasetId, target, datalist, signal) {
  datalist.replaceChildren();
  if (!datasetId) return;
  const dataset = await get(`/v1/datasets/${encodeURIComponent(datasetId)}`, { signal });
  const names = (dataset.columns || []).map((c) => c.name);
  datalist.replaceChildren(...names.map((name) => el("option", { value: name })));
  if (names.length && (!target.value || target.dataset.auto === "1")) {
    target.value = names[names.length - 1];
    target.dataset.auto = "1";
  }
}

function requestBody(form) {
  const body = { dataset_id: form.dataset.value, spec: JSON.parse(form.spec.value) };
  if (form.target.value.trim()) body.target = form.target.value.trim();
  const features = form.features.value.split(",").map((s) => s.trim()).filter(Boolean);
  if (features.length) body.features = features;
  const shape = form.shape.value.split(",").map((s) => s.trim()).filter(Boolean);
  if (shape.length) body.input_shape = shape.map(Number);
  return body;
}

function showErrors(root, error) {
  const byField = new Map();
  for (const item of error.errors.length ? error.errors : [{ loc: ["spec"], msg: error.message }]) {
    const parts = (item.loc || [])[0] === "body" ? item.loc.slice(1) : item.loc || [];
    const field = FIELDS.includes(parts[0]) ? parts[0] : "spec";
    byField.set(field, [...(byField.get(field) || []), item]);
  }
  for (const [field, items] of byField) {
    const slot = root.querySelector(`#error-${field}`);
    slot.replaceChildren(el("p", { text: error.message }), errorList(items));
  }
}

function formInputs(datasets) {
  const form = {
    dataset: el("select", { id: "job-dataset", required: true }, el("option", { value: "", text: "choose a dataset" }),
      datasets.map((d) => el("option", { value: d.id, text: `${d.name} (${d.n_rows} rows)` }))),
    target: el("input", { type: "text", id: "job-target", list: "job-columns", placeholder: "label column (CSV/Parquet)" }),
    features: el("input", { type: "text", id: "job-features", placeholder: "default: every other column" }),
    shape: el("input", { type: "text", id: "job-shape", placeholder: "e.g. 1,8,8 (conv) or T,F (recurrent)" }),
    spec: el("textarea", { id: "job-spec", rows: 22, spellcheck: "false" }),
  };
  form.spec.value = JSON.stringify(EXAMPLE_SPEC, null, 2);
  form.target.addEventListener("input", () => { form.target.dataset.auto = "0"; });
  return form;
}

// The submit handler: the job's page on 202, the errors next to their fields otherwise.
function submitHandler(root, form) {
  return async (event) => {
    event.preventDefault();
    root.querySelectorAll(".field-error").forEach((slot) => slot.replaceChildren());
    let body;
    try {
      body = requestBody(form);
    } catch (error) {
      root.querySelector("#error-spec").replaceChildren(el("p", { text: `the spec is not valid JSON: ${error.message}` }));
      return;
    }
    try {
      const job = await api("POST", "/v1/jobs", { json: body });
      location.hash = jobHref(job.id);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showErrors(root, error);
    }
  };
}

export async function newJob(root, _params, { query, signal }) {
  const datasets = await get("/v1/datasets", { signal });
  const form = formInputs(datasets);
  const datalist = el("datalist", { id: "job-columns" });
  const onDataset = () => fillColumns(form.dataset.value, form.target, datalist, signal).catch(() => {});
  form.dataset.addEventListener("change", onDataset);

  const onsubmit = submitHandler(root, form);
  root.append(el("h1", { text: "New job" }), el("form", { class: "stacked", id: "new-job", onsubmit },
    fieldRow("Dataset", form.dataset, "dataset_id"),
    fieldRow("Target column", form.target, "target"), datalist,
    fieldRow("Features (optional, comma-separated)", form.features, "features"),
    fieldRow("Input shape (optional)", form.shape, "input_shape"),
    el("label", { for: "job-spec", text: "Network spec (JSON; CONTRACT §3)" }),
    el("div", { class: "editor" }, form.spec, el("div", { class: "field-error", id: "error-spec", role: "alert" })),
    el("div", {}, el("button", { type: "submit", id: "submit-job", text: "Submit job" }))));

  const preselected = query.get("dataset");
  if (preselected && datasets.some((d) => d.id === preselected)) form.dataset.value = preselected;
  else if (datasets.length) form.dataset.value = datasets[0].id;
  await onDataset();
}
