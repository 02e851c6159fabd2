// One job: status and error, the normalised spec, and its charts, live while it runs.
import { api, get } from "../api.js";
import { drawCharts, parseWarning } from "../charts.js";
import { datasetHref, el, facts, fmtNumber, fmtTime, link, modelHref, statusBadge } from "../dom.js";
import { follow, isTerminal } from "../live.js";
import { progressCell } from "./jobs.js";

function jobFacts(job) {
  const metrics = Object.entries(job.metrics || {}).map(([k, v]) => `${k} ${fmtNumber(v)}`).join(" · ");
  return facts([
    ["status", statusBadge(job.status)],
    ["progress", progressCell(job)],
    ["epoch", `${job.epoch ?? 0} of ${job.epochs ?? "?"}`],
    job.error ? ["error", el("span", { class: "error", id: "job-error", role: "alert", text: job.error })] : null,
    ["dataset", link(datasetHref(job.dataset_id), job.dataset_id)],
    ["target", job.target ?? "—"],
    ["features", (job.features || []).join(", ") || "—"],
    ["device", job.device ?? "—"],
    ["created", fmtTime(job.created_at)],
    ["started", fmtTime(job.started_at)],
    ["finished", fmtTime(job.finished_at)],
    ["latest metrics", metrics || "—"],
    ["model", job.model_id ? link(modelHref(job.model_id), job.model_id, { id: "model-link" }) : "—"],
  ]);
}

function warningList(warnings) {
  if (!warnings || !warnings.length) return el("p", { class: "muted", id: "warnings", text: "No warnings." });
  return el("ul", { id: "warnings" }, warnings.map((w) => el("li", { class: "warning", text: parseWarning(w).message })));
}

// One button for the page's life (the summary is redrawn with every event), hidden once the job ends.
function cancelButton(jobId, onChange) {
  const button = el("button", { type: "button", id: "cancel-job", text: "Cancel job" });
  const message = el("span", { class: "error", role: "alert" });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      onChange(await api("POST", `/v1/jobs/${encodeURIComponent(jobId)}/cancel`));
    } catch (error) {
      message.textContent = error.message;
      button.disabled = false;
    }
  });
  return { node: el("div", { class: "toolbar" }, button, message), button };
}

function chartNodes() {
  const node = (id, wide) => el("div", { class: wide ? "chart wide" : "chart", id });
  return { loss: node("chart-loss"), accuracy: node("chart-accuracy"), lr: node("chart-lr"), grad: node("chart-grad", true) };
}

function appendLayout(root, job, { summary, cancel, liveError, nodes, warnings }) {
  root.append(
    el("h1", {}, "Job ", el("code", { text: job.id })), summary, cancel.node,
    el("h2", { text: "Training" }), liveError,
    el("div", { class: "charts", id: "charts" }, Object.values(nodes)),
    el("h2", { text: "Warnings" }), warnings,
    el("h2", { text: "Spec (normalised)" }), el("pre", { class: "spec", id: "spec", text: JSON.stringify(job.spec, null, 2) }),
  );
}

export async function jobView(root, { id }, { signal }) {
  const path = `/v1/jobs/${encodeURIComponent(id)}`;
  let job = await get(path, { signal });
  const epochs = new Map((await get(`${path}/epochs`, { signal })).epochs.map((e) => [e.epoch, e]));
  document.title = `Job ${id.slice(0, 8)} · Backprop Service`;

  const summary = el("div", { id: "job-summary" });
  const warnings = el("div");
  const nodes = chartNodes();
  const liveError = el("p", { class: "error", role: "alert" });
  const cancel = cancelButton(job.id, onJob);
  appendLayout(root, job, { summary, cancel, liveError, nodes, warnings });

  let frame = 0;
  const redraw = () => {
    frame = 0;
    summary.replaceChildren(jobFacts(job));
    cancel.button.hidden = isTerminal(job.status);
    warnings.replaceChildren(warningList(job.warnings));
    const ordered = [...epochs.values()].sort((a, b) => a.epoch - b.epoch);
    drawCharts(nodes, ordered, job.warnings || []);
    root.dataset.epochs = String(ordered.length);
    root.dataset.status = job.status;
  };
  const schedule = () => { if (!frame) frame = requestAnimationFrame(redraw); };
  function onJob(next) { job = { ...job, ...next }; schedule(); }
  redraw();

  if (isTerminal(job.status)) return;
  const onEpoch = (epoch) => { epochs.set(epoch.epoch, epoch); schedule(); };
  const onError = (error) => { liveError.textContent = `live updates interrupted: ${error.message}`; };
  follow(job.id, { onJob, onEpoch, onError }, signal)
    .then(async () => { // the finished job once more, in case an event was missed
      if (signal.aborted) return;
      onJob(await get(path, { signal }));
      (await get(`${path}/epochs`, { signal })).epochs.forEach(onEpoch);
    })
    .catch((error) => { if (!signal.aborted) onError(error); });
}
