// The jobs list (newest first, filtered by status) and the models list.
import { get } from "../api.js";
import { datasetHref, el, fmtTime, jobHref, link, modelHref, shortId, statusBadge, table } from "../dom.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];

function statusFilter(current) {
  const select = el("select", { id: "status-filter", onchange: () => {
    location.hash = select.value ? `#/jobs?status=${encodeURIComponent(select.value)}` : "#/jobs";
  } }, el("option", { value: "", text: "every status" }), STATUSES.map((s) => el("option", { value: s, text: s })));
  select.value = current || "";
  return el("div", { class: "toolbar" }, el("label", { for: "status-filter", text: "Status:" }), select,
    el("button", { type: "button", text: "Refresh", onclick: () => window.dispatchEvent(new HashChangeEvent("hashchange")) }),
    link("#/new-job", "New job"));
}

export function progressCell(job) {
  const percent = Math.round((job.progress || 0) * 100);
  return el("span", {}, el("progress", { max: 1, value: job.progress || 0 }), ` ${percent}%`);
}

export async function jobList(root, _params, { query }) {
  const status = query.get("status");
  const path = status ? `/v1/jobs?status=${encodeURIComponent(status)}` : "/v1/jobs";
  const jobs = await get(path);
  root.append(el("h1", { text: "Jobs" }), statusFilter(status));
  if (!jobs.length) {
    root.append(el("p", { class: "muted", text: status ? `No ${status} jobs.` : "No jobs yet." }));
    return;
  }
  root.append(table([
    { label: "Job", value: (j) => link(jobHref(j.id), shortId(j.id), { class: "job-link", "data-job-id": j.id }) },
    { label: "Status", value: (j) => statusBadge(j.status) },
    { label: "Progress", value: progressCell },
    { label: "Epoch", value: (j) => `${j.epoch ?? 0} / ${j.epochs ?? "?"}`, numeric: true },
    { label: "Dataset", value: (j) => link(datasetHref(j.dataset_id), shortId(j.dataset_id)) },
    { label: "Target", value: (j) => j.target ?? "—" },
    { label: "Created", value: (j) => fmtTime(j.created_at) },
    { label: "Model", value: (j) => (j.model_id ? link(modelHref(j.model_id), shortId(j.model_id)) : "—") },
  ], jobs, { id: "jobs" }));
}

export async function modelList(root) {
  const rows = await get("/v1/models");
  root.append(el("h1", { text: "Models" }));
  if (!rows.length) {
    root.append(el("p", { class: "muted", text: "No models yet: a job that succeeds stores one." }));
    return;
  }
  root.append(table([
    { label: "Model", value: (m) => link(modelHref(m.id), shortId(m.id), { class: "model-link" }) },
    { label: "Task", value: (m) => m.task ?? "—" },
    { label: "Target", value: (m) => m.target ?? "—" },
    { label: "Job", value: (m) => (m.job_id ? link(jobHref(m.job_id), shortId(m.job_id)) : "—") },
    { label: "Created", value: (m) => fmtTime(m.created_at) },
  ], rows, { id: "models" }));
}
