// The page's router: #/datasets, #/datasets/{id}, #/jobs[?status=], #/jobs/{id}, #/models,
// #/models/{id}, #/new-job[?dataset=]. Ids stay in the fragment: the server never sees them,
// and each view asks the API, which answers 404 for another tenant's id.
import { ApiError, apiKey, forgetKey, signIn } from "./api.js";
import { el, errorBox } from "./dom.js";
import { datasetList, datasetView } from "./views/datasets.js";
import { jobView } from "./views/job.js";
import { jobList, modelList } from "./views/jobs.js";
import { modelView } from "./views/model.js";
import { newJob } from "./views/newjob.js";

const ROUTES = [
  [/^\/datasets$/, datasetList, "nav-datasets"],
  [/^\/datasets\/([^/]+)$/, datasetView, "nav-datasets"],
  [/^\/jobs$/, jobList, "nav-jobs"],
  [/^\/jobs\/([^/]+)$/, jobView, "nav-jobs"],
  [/^\/models$/, modelList, "nav-models"],
  [/^\/models\/([^/]+)$/, modelView, "nav-models"],
  [/^\/new-job$/, newJob, "nav-new-job"],
];

const $ = (id) => document.getElementById(id);
let current = null; // the AbortController of the view on screen

function showSignIn(message = "") {
  $("nav").hidden = true;
  $("view").replaceChildren();
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
  $("api-key").focus();
}

function signOut(message = "") {
  current?.abort();
  forgetKey();
  showSignIn(message);
}

async function render() {
  if (!apiKey()) return showSignIn();
  current?.abort();
  current = new AbortController();
  const { signal } = current;
  const [rawPath, search = ""] = (location.hash.slice(1) || "/jobs").split("?");
  let path = rawPath;
  try {
    path = decodeURIComponent(rawPath);
  } catch {
    // a malformed escape: no route matches it
  }
  const route = ROUTES.find(([pattern]) => pattern.test(path));
  if (!route) {
    location.hash = "#/jobs";
    return undefined;
  }
  const [pattern, view, navId] = route;
  const [, id] = pattern.exec(path);
  $("sign-in").hidden = true;
  $("nav").hidden = false;
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.id === navId));
  document.title = "Backprop Service";
  const root = el("section", { id: "page", "data-route": navId });
  $("view").replaceChildren(root);
  try {
    await view(root, { id }, { signal, query: new URLSearchParams(search) });
    if (!signal.aborted) root.dataset.ready = "1";
  } catch (error) {
    if (signal.aborted) return undefined;
    if (error instanceof ApiError && error.status === 401) return signOut(`Signed out: ${error.message}`);
    root.append(errorBox(error));
    root.dataset.ready = "1";
  }
  return undefined;
}

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  $("sign-in-error").textContent = "";
  try {
    await signIn(key);
  } catch (error) {
    const reason = error instanceof ApiError && error.status === 401 ? "That API key was refused" : "Could not sign in";
    $("sign-in-error").textContent = `${reason}: ${error.message}`;
    return;
  }
  $("api-key").value = "";
  render();
});
$("sign-out").addEventListener("click", () => signOut("Signed out."));
window.addEventListener("hashchange", render);
render();
