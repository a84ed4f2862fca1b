// Follows a batch's event stream (GET /status/:id/events, issue 11 point 1) with EventSource and
// tells the page what happened in its own terms; the page polls instead when there is no stream.

/** EventSource exists here (it does in every browser the dashboard targets; not in some embedders). */
export const canFollow = () => typeof EventSource !== "undefined";

/**
 * Opens the stream at `url`. Handlers: open(), reconnecting(), unavailable() (the route answered
 * 404 or not an event stream: the source is closed for good), progress(counts), change() (a phase
 * began, a task failed or a redrive started: re-read the status), final() (done, failed or error of
 * the run being followed: the stream is closed). Returns { close() }.
 */
export function followEvents(url, handlers) {
  let opened = false;
  // The batch's run (0 the first, N redrive N), from the stream's first progress event: a done,
  // failed or error of an earlier run is replayed history after a reset and a redrive, not the end.
  let run = 0;
  const later = (data) => {
    if (data && typeof data.run === "number" && data.run > run) run = data.run;
  };
  let source = new EventSource(url);
  const close = () => {
    source?.close();
    source = null;
  };
  source.onopen = () => {
    opened = true;
    handlers.open();
  };
  source.onerror = (e) => {
    // The stream's own `event: error` (a batch ended in ERROR) reaches onerror too: not a connection problem.
    if (e instanceof MessageEvent) return;
    // A 404 (no stream route) or a non-event-stream answer closes the source for good.
    if (source && source.readyState === EventSource.CLOSED) {
      close();
      handlers.unavailable();
    } else if (opened) handlers.reconnecting();
  };
  source.addEventListener("progress", (e) => {
    const progress = parseData(e);
    later(progress);
    if (progress) handlers.progress(progress);
  });
  for (const type of ["phase", "task_failed"]) source.addEventListener(type, () => handlers.change());
  source.addEventListener("redrive", (e) => {
    later(parseData(e));
    handlers.change();
  });
  for (const type of ["done", "failed", "error"]) {
    source.addEventListener(type, (e) => {
      // A connection error is also an "error" event, but not a MessageEvent: EventSource retries it.
      if (!(e instanceof MessageEvent)) return;
      const data = parseData(e);
      if (data && typeof data.run === "number" && data.run < run) return;
      close();
      handlers.final();
    });
  }
  return { close };
}

function parseData(e) {
  try {
    return JSON.parse(e.data);
  } catch {
    return null;
  }
}
