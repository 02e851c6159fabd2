// One model: metrics and classes, predictions from pasted rows or a CSV file, downloads.
import { api, download, get } from "../api.js";
import { predictionRequest } from "../csv.js";
import { el, errorBox, errorList, facts, fmtNumber, fmtTime, jobHref, link, table } from "../dom.js";

const FORMATS = ["npz", "onnx"];

function downloads(model) {
  const message = el("p", { class: "field-error", id: "download-error", role: "status" });
  const buttons = FORMATS.map((format) => el("button", {
    type: "button", id: `download-${format}`, text: `Download .${format}`,
    onclick: async () => {
      message.textContent = "";
      try {
        await download(`/v1/models/${encodeURIComponent(model.id)}/download?format=${format}`, `model-${model.id}.${format}`);
      } catch (error) {
        message.textContent = `.${format}: ${error.message}`;
      }
    },
  }));
  return el("div", {}, el("div", { class: "toolbar" }, buttons), message);
}

function resultTable(model, prediction) {
  const classes = model.classes || [];
  const columns = [
    { label: "#", value: (r) => String(r.index + 1), numeric: true },
    { label: "prediction", value: (r) => (Array.isArray(r.value) ? r.value.map((v) => fmtNumber(v)).join(", ") : fmtNumber(r.value)) },
    ...(prediction.probabilities ? classes.map((label, k) => ({
      label: `P(${label})`, value: (r) => fmtNumber(r.probabilities?.[k]), numeric: true,
    })) : []),
  ];
  const rows = prediction.predictions.map((value, index) => ({ index, value, probabilities: prediction.probabilities?.[index] }));
  return table(columns, rows, { id: "predictions" });
}

function placeholder(model) {
  const features = model.features || [];
  if (!features.length) return "[[0.1, 0.2, ...], ...]   (JSON rows of input_shape)";
  return `${features.join(",")}\n${features.map(() => "…").join(",")}\n\nor JSON: [{"${features[0]}": …}, …]`;
}

function predictForm(model) {
  const rows = el("textarea", { id: "predict-rows", rows: 8, placeholder: placeholder(model), spellcheck: "false" });
  const file = el("input", { type: "file", id: "predict-file", accept: ".csv,text/csv" });
  const errors = el("div", { id: "predict-errors" });
  const output = el("div", { id: "predict-output" });
  const submit = async (event) => {
    event.preventDefault();
    errors.replaceChildren();
    output.replaceChildren();
    try {
      const text = file.files.length ? await file.files[0].text() : rows.value;
      const body = predictionRequest(text);
      const prediction = await api("POST", `/v1/models/${encodeURIComponent(model.id)}/predictions`, { json: body });
      output.append(el("p", { text: `${prediction.n} prediction(s)` }), resultTable(model, prediction));
    } catch (error) {
      errors.append(errorBox(error), error.errors?.length ? errorList(error.errors) : "");
    }
  };
  return el("form", { class: "stacked", id: "predict-form", onsubmit: submit },
    el("label", { for: "predict-rows", text: "Rows to predict: CSV with a header row (the model's feature names), or JSON" }),
    rows,
    el("label", { for: "predict-file", text: "…or a CSV file (read in the browser)" }), file,
    el("div", {}, el("button", { type: "submit", text: "Predict" })), errors, output);
}

export async function modelView(root, { id }) {
  const model = await get(`/v1/models/${encodeURIComponent(id)}`);
  document.title = `Model ${id.slice(0, 8)} · Backprop Service`;
  const metrics = Object.entries(model.metrics || {});
  root.append(
    el("h1", {}, "Model ", el("code", { text: model.id })),
    facts([
      ["task", model.task], ["target", model.target ?? "—"],
      ["job", link(jobHref(model.job_id), model.job_id)],
      ["features", (model.features || []).join(", ") || "—"],
      ["input shape", model.input_shape ? `(${model.input_shape.join(", ")})` : "—"],
      ["created", fmtTime(model.created_at)],
    ]),
    el("h2", { text: "Metrics" }),
    metrics.length ? table([{ label: "metric", value: ([k]) => k }, { label: "value", value: ([, v]) => fmtNumber(v), numeric: true }],
      metrics, { id: "metrics" }) : el("p", { class: "muted", text: "No metrics." }),
    el("h2", { text: "Classes" }),
    model.classes?.length ? el("ul", { id: "classes" }, model.classes.map((c) => el("li", { text: String(c) })))
      : el("p", { class: "muted", text: "Regression: no classes." }),
    el("h2", { text: "Predict" }), predictForm(model),
    el("h2", { text: "Download" }), downloads(model),
  );
}
