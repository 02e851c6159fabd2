// A job's progress as it happens: the server-sent events of GET /v1/jobs/{id}/events, read
// with fetch() (EventSource cannot send the Authorization header); polling GET /v1/jobs/{id}
// and its /epochs every second where the stream is not available.
import { apiKey, get } from "./api.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const POLL_MS = 1000;
const MAX_RECONNECTS = 5;

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
});

// Yields {event, data, id} for each event of a text/event-stream body.
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { event: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (event.data.length) yield { event: event.event, data: event.data.join("\n"), id: event.id };
        event = { event: "message", data: [], id: null };
        continue;
      }
      if (line.startsWith(":")) continue; // a comment (keep-alive)
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "data") event.data.push(text);
      else if (field === "event") event.event = text;
      else if (field === "id") event.id = text;
    }
  }
}

// Returns "done" when the job ended, "unavailable" when the server has no stream (or it
// broke too often): the caller then polls.
async function stream(jobId, handlers, signal) {
  let lastEventId = null;
  for (let attempt = 0; attempt <= MAX_RECONNECTS && !signal.aborted; attempt += 1) {
    const headers = { Authorization: `Bearer ${apiKey()}`, Accept: "text/event-stream" };
    if (lastEventId) headers["Last-Event-ID"] = lastEventId;
    let response;
    try {
      response = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/events`, { headers, signal, cache: "no-store" });
    } catch {
      if (signal.aborted) return "done";
      await sleep(POLL_MS, signal);
      continue;
    }
    const type = response.headers.get("Content-Type") || "";
    if (!response.ok || !type.startsWith("text/event-stream") || !response.body) return "unavailable";
    try {
      for await (const message of sseEvents(response.body)) {
        attempt = 0; // only reconnects in a row without an event count against the limit
        if (message.id) lastEventId = message.id;
        const payload = JSON.parse(message.data);
        if (message.event === "epoch") handlers.onEpoch(payload);
        else if (message.event === "status") {
          handlers.onJob(payload);
          if (TERMINAL.has(payload.status)) return "done";
        }
      }
    } catch {
      if (signal.aborted) return "done";
    }
    await sleep(200, signal); // the stream ended before the terminal status: resume after lastEventId
  }
  return signal.aborted ? "done" : "unavailable";
}

async function poll(jobId, handlers, signal) {
  const path = `/v1/jobs/${encodeURIComponent(jobId)}`;
  while (!signal.aborted) {
    try {
      // the job first: once it reads terminal, the epochs read after it are complete
      const job = await get(path, { signal });
      const epochs = await get(`${path}/epochs`, { signal });
      epochs.epochs.forEach(handlers.onEpoch);
      handlers.onJob(job);
      if (TERMINAL.has(job.status)) return;
    } catch (error) {
      if (signal.aborted) return;
      handlers.onError(error);
    }
    await sleep(POLL_MS, signal);
  }
}

export async function follow(jobId, handlers, signal) {
  if ((await stream(jobId, handlers, signal)) === "unavailable" && !signal.aborted) await poll(jobId, handlers, signal);
}

export const isTerminal = (status) => TERMINAL.has(status);
