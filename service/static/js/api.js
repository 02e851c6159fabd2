// The JSON API, with the key in the Authorization header only (never in a URL). The key
// lives in sessionStorage: this tab, until it closes or the user signs out.
const KEY_NAME = "bps.apiKey";

export class ApiError extends Error {
  constructor(status, problem) {
    super([problem.title, problem.detail].filter(Boolean).join(": ") || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
  }
}

export const apiKey = () => sessionStorage.getItem(KEY_NAME);
export const forgetKey = () => sessionStorage.removeItem(KEY_NAME);

function authHeaders(key = apiKey()) {
  return { Authorization: `Bearer ${key}` };
}

export async function problemOf(response) {
  let problem = null;
  try {
    problem = await response.json();
  } catch {
    // not JSON: a proxy's page, or a dropped connection
  }
  if (!problem || typeof problem !== "object") {
    problem = { title: response.statusText || "Error", detail: `the server answered HTTP ${response.status}`, errors: [] };
  }
  return new ApiError(response.status, problem);
}

// Checks the key with a real request before keeping it: a wrong key is refused here.
export async function signIn(key) {
  const response = await fetch("/v1/jobs?limit=1", { headers: authHeaders(key), cache: "no-store" });
  if (!response.ok) throw await problemOf(response);
  sessionStorage.setItem(KEY_NAME, key);
}

export async function send(method, path, { json, form, signal, headers = {} } = {}) {
  const init = { method, signal, cache: "no-store", headers: { ...authHeaders(), ...headers } };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form; // FormData: the browser sets the multipart boundary
  }
  return fetch(path, init);
}

export async function api(method, path, options = {}) {
  const response = await send(method, path, options);
  if (!response.ok) throw await problemOf(response);
  return response.status === 204 ? null : response.json();
}

export const get = (path, options) => api("GET", path, options);

function filenameOf(response, fallback) {
  const match = /filename="?([^";]+)"?/.exec(response.headers.get("Content-Disposition") || "");
  return match ? match[1] : fallback;
}

// Downloads need the Authorization header, so they are fetched as a blob and saved from an
// object URL rather than followed as links.
export async function download(path, fallbackName) {
  const response = await send("GET", path);
  if (!response.ok) throw await problemOf(response);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filenameOf(response, fallbackName);
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return link.download;
}
