// The batch page's machine timeline: one row per machine, a bar per attempt from create to its
// end (gaps are a pool machine's idle time). One request per refresh, GET /status/:id/timeline:
// the open attempts and the latest ended ones, read by the Durable Object from two indexes, so a
// 100,000-task batch costs what a small one does (it used to take the task list and a request per
// started task, ~200 per refresh).
import { api } from "./api.js";
import { $, el } from "./dom.js";
import { duration, n, TERMINAL } from "./format.js";

const TIMELINE_REFRESH_MS = 4000;
/** Ended attempts per refresh (the open ones come too): the most recently ended. */
const TIMELINE_LIMIT = 400;
const TIMELINE_MAX_ROWS = 150;

/**
 * The timeline of the batch under `base` (/status/:id) in `view`; `getStatus()` is the page's
 * latest status (its start and end frame the axis; a terminal one stops the refreshes).
 * Returns { refresh(), forget(), stop() }.
 */
export function createTimeline(view, base, getStatus) {
  let busy = false;
  let stopped = false;
  let timer = 0;

  async function refresh() {
    clearTimeout(timer);
    if (busy || stopped) return;
    busy = true;
    try {
      const page = await api(`${base}/timeline?limit=${TIMELINE_LIMIT}`);
      if (stopped) return;
      draw(view, getStatus(), barsOf(page.attempts), page.ended >= page.limit);
    } catch (error) {
      $("#timeline-note", view).textContent = `timeline unavailable: ${error.message}`;
    } finally {
      busy = false;
    }
    const status = getStatus();
    if (!stopped && !(status && TERMINAL.has(status.status))) timer = setTimeout(refresh, TIMELINE_REFRESH_MS);
  }

  return {
    refresh,
    // Nothing is cached between refreshes: each reads the timeline whole.
    forget: () => {},
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/** One bar per attempt; an attempt still open ends now. */
function barsOf(attempts) {
  const now = Date.now();
  return attempts
    .filter((a) => a.started_at)
    .map((a) => ({
      task: a.task_id,
      attempt: a.attempt,
      machine: a.machine ?? "(not created)",
      start: Date.parse(a.started_at),
      end: a.ended_at ? Date.parse(a.ended_at) : now,
      outcome: a.outcome,
      error: a.error,
    }));
}

function draw(view, status, bars, truncated) {
  const now = Date.now();
  const box = $("#timeline", view);
  if (bars.length === 0) {
    box.replaceChildren(el("p", { class: "muted", text: "No machine has started yet." }));
    $("#timeline-note", view).textContent = "";
    return;
  }
  const t0 = Math.min(Date.parse(status?.started_at ?? "") || Infinity, ...bars.map((b) => b.start));
  const t1 = Math.max(...bars.map((b) => b.end), status?.completed_at ? Date.parse(status.completed_at) : now);
  const span = Math.max(1, t1 - t0);
  const rows = new Map();
  for (const b of bars) {
    if (!rows.has(b.machine)) rows.set(b.machine, []);
    rows.get(b.machine).push(b);
  }
  const ordered = [...rows.entries()].sort((a, b) => Math.min(...a[1].map((x) => x.start)) - Math.min(...b[1].map((x) => x.start)));
  const axis = el("div", { class: "tl-row tl-axis" }, el("div", { class: "tl-label", text: "machine" }), el("div", { class: "tl-track" }, ...ticks(t0, span)));
  box.replaceChildren(axis, ...ordered.slice(0, TIMELINE_MAX_ROWS).map(([machine, list]) => machineRow(machine, list, t0, span)));
  const notes = [`${rows.size} machine${rows.size === 1 ? "" : "s"}, ${n(bars.length)} attempt${bars.length === 1 ? "" : "s"} over ${duration(span)}`];
  if (truncated) notes.push(`the running attempts and the ${n(TIMELINE_LIMIT)} that ended last`);
  if (rows.size > TIMELINE_MAX_ROWS) notes.push(`first ${TIMELINE_MAX_ROWS} machines`);
  $("#timeline-note", view).textContent = notes.join(" · ");
}

function machineRow(machine, list, t0, span) {
  return el(
    "div",
    { class: "tl-row", "data-machine": machine },
    el("div", { class: "tl-label small", text: machine, title: machine }),
    el(
      "div",
      { class: "tl-track" },
      ...list.map((b) => {
        const cls = b.outcome === "done" || b.outcome === "open" || b.outcome === "cancelled" ? b.outcome : "failed";
        const left = ((b.start - t0) / span) * 100;
        const width = Math.max(0.3, ((b.end - b.start) / span) * 100);
        return el("span", {
          class: `tl-bar ${cls}`,
          "data-task": b.task,
          style: `left:${left.toFixed(3)}%;width:${width.toFixed(3)}%`,
          title: `${b.task} attempt ${b.attempt} · ${b.outcome} · ${duration(b.end - b.start)}${b.error ? ` · ${b.error}` : ""}`,
        });
      }),
    ),
  );
}

function ticks(t0, span) {
  const out = [];
  for (let i = 0; i <= 4; i++) {
    const at = (span * i) / 4;
    out.push(el("span", { class: "tl-tick small", style: `left:${i * 25}%`, text: span < 20_000 ? `+${(at / 1000).toFixed(1)}s` : `+${duration(at)}` }));
  }
  return out;
}
