// #/batch/:id — one batch: follows its event stream when the Worker serves it and polls
// GET /status/:id every 2 s when not; reset and redrive with the admin token, each offered only
// when the Worker would accept it. What it draws lives in summary.js, failures.js and timeline.js.
import { api, enc } from "./api.js";
import { $, setLive } from "./dom.js";
import { renderFailures } from "./failures.js";
import { TERMINAL } from "./format.js";
import { canFollow, followEvents } from "./sse.js";
import { renderSummary } from "./summary.js";
import { createTimeline } from "./timeline.js";

const POLL_MS = 2000;
/** Progress events carry counts only: the whole status is re-read at most this often meanwhile. */
const FULL_REFRESH_MS = 5000;

export function showBatch(view, batchId) {
  view.append($("#batch-view").content.cloneNode(true));
  $("#batch-id", view).textContent = batchId;
  const base = `/status/${enc(batchId)}`;
  const samples = []; // { t, finished } for the throughput window
  let status = null;
  let stopped = false;
  let pollTimer = 0;
  let polling = false;
  let stream = null;
  let lastFull = 0;
  const timeline = createTimeline(view, base, () => status);

  function render() {
    if (!status) return;
    renderSummary(view, status, samples);
    // Offered only when the Worker would take it: redrive re-runs failed tasks of a finished batch;
    // reset stops a batch that has not ended DONE or FAILED (an ERROR one may be reset again).
    $("#redrive", view).hidden = !(TERMINAL.has(status.status) && status.progress.tasks_failed > 0);
    $("#reset", view).hidden = status.status === "DONE" || status.status === "FAILED";
  }

  async function refreshStatus() {
    try {
      status = await api(base);
      render();
      lastFull = Date.now();
      await renderFailures(view, base, status, () => stopped);
    } catch (error) {
      if (!stopped) {
        const err = $("#batch-error", view);
        err.hidden = false;
        err.textContent = error.status === 404 ? `No batch ${batchId} (yet): it appears once its queue message is consumed.` : `Cannot load the batch: ${error.message}`;
      }
    }
  }

  function poll() {
    if (stopped) return;
    polling = true;
    setLive("live: polling every 2 s");
    void refreshStatus().then(() => {
      if (!stopped && !(status && TERMINAL.has(status.status) && status.stage !== "run")) pollTimer = setTimeout(poll, POLL_MS);
      else {
        polling = false;
        if (status && TERMINAL.has(status.status)) setLive("finished");
      }
    });
  }

  /** The event stream (issue 11 point 1) when the Worker has it; polling otherwise. */
  function follow() {
    if (!canFollow()) return poll();
    // Until the stream says something, show what there is.
    void refreshStatus();
    // The stream opens once the page has loaded: a stream opened before the load event keeps the
    // page loading for as long as the batch runs (chromium --headless --screenshot never shoots).
    if (document.readyState === "complete") openStream();
    else window.addEventListener("load", () => !stopped && !stream && openStream(), { once: true });
  }

  function openStream() {
    stream = followEvents(`${base}/events`, {
      open: () => setLive("live: event stream"),
      reconnecting: () => setLive("live: reconnecting…"),
      unavailable: () => {
        stream = null;
        if (!stopped) poll();
      },
      progress: (progress) => {
        if (!status) return;
        status = { ...status, progress: { ...status.progress, ...progress } };
        render();
        if (Date.now() - lastFull > FULL_REFRESH_MS) void refreshStatus();
      },
      change: () => void refreshStatus(),
      final: () => {
        stream = null;
        setLive("finished");
        void refreshStatus();
        void timeline.refresh();
      },
    });
  }

  async function act(button, path, label) {
    const out = $("#action-result", view);
    button.disabled = true;
    out.className = "muted";
    out.textContent = `${label}…`;
    try {
      const body = await api(path, { method: "POST", admin: true });
      out.textContent = `${label}: ${JSON.stringify(body)}`;
      samples.length = 0;
      timeline.forget();
      // The batch's new state first (a redrive runs again), then follow it if nothing does yet.
      await refreshStatus();
      if (!stream && !polling) follow();
      void timeline.refresh();
    } catch (error) {
      out.className = "error";
      out.textContent = `${label} failed: ${error.message}`;
    } finally {
      button.disabled = false;
      render();
    }
  }

  $("#reset", view).addEventListener("click", () => {
    if (!window.confirm(`Reset ${batchId}? Its machines are destroyed and it ends in ERROR.`)) return;
    void act($("#reset", view), `/admin/reset/${enc(batchId)}`, "reset");
  });
  $("#redrive", view).addEventListener("click", () => void act($("#redrive", view), `/admin/redrive/${enc(batchId)}`, "redrive"));

  follow();
  void timeline.refresh();
  return () => {
    stopped = true;
    stream?.close();
    clearTimeout(pollTimer);
    timeline.stop();
  };
}
