// The batch page's machine timeline: one row per machine, a bar per attempt from create to its
// end (gaps are a pool machine's idle time). Reads GET /status/:id/tasks and one
// GET /status/:id/tasks/:taskId per started task, bounded so a 100,000-task batch stays usable;
// a finished task's attempts are read once.
import { api, enc } from "./api.js";
import { $, el } from "./dom.js";
import { duration, n, TERMINAL } from "./format.js";

const TIMELINE_REFRESH_MS = 4000;
/** Per-task detail requests per refresh: the most recently active tasks. */
const TIMELINE_MAX_TASKS = 400;
const TIMELINE_MAX_ROWS = 150;
const TASK_LIST_CAP = 5000;
const DETAIL_REQUESTS_AT_ONCE = 6;

/**
 * The timeline of the batch under `base` (/status/:id) in `view`; `getStatus()` is the page's
 * latest status (its start and end frame the axis; a terminal one stops the refreshes).
 * Returns { refresh(), forget() (drop the cached attempts), stop() }.
 */
export function createTimeline(view, base, getStatus) {
  const attemptsCache = new Map(); // task_id -> { status, attempt, attempts }
  let busy = false;
  let stopped = false;
  let timer = 0;

  async function refresh() {
    clearTimeout(timer);
    if (busy || stopped) return;
    busy = true;
    try {
      const tasks = [];
      let cursor = null;
      do {
        const page = await api(`${base}/tasks?limit=1000${cursor ? `&cursor=${cursor}` : ""}`);
        tasks.push(...page.tasks);
        cursor = page.next_cursor;
      } while (cursor && tasks.length < TASK_LIST_CAP);
      const started = tasks.filter((t) => t.attempt > 0 || t.machine_id);
      // The most recently changed tasks are the interesting ones on a large batch.
      started.sort((a, b) => (b.updated_at ?? "").localeCompare(a.updated_at ?? ""));
      const shown = started.slice(0, TIMELINE_MAX_TASKS);
      const stale = shown.filter((t) => {
        const c = attemptsCache.get(t.task_id);
        return !c || c.status !== t.status || c.attempt !== t.attempt || !(t.status === "done" || t.status === "failed");
      });
      await pool(stale, DETAIL_REQUESTS_AT_ONCE, async (t) => {
        const detail = await api(`${base}/tasks/${enc(t.task_id)}`).catch(() => null);
        if (detail) attemptsCache.set(t.task_id, { status: t.status, attempt: t.attempt, attempts: detail.attempts });
      });
      if (stopped) return;
      draw(view, getStatus(), barsOf(shown, attemptsCache), shown.length, started.length, tasks.length);
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
    forget: () => attemptsCache.clear(),
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/** One bar per started attempt of the shown tasks; an attempt still open ends now. */
function barsOf(shown, attemptsCache) {
  const now = Date.now();
  const bars = [];
  for (const t of shown) {
    const c = attemptsCache.get(t.task_id);
    if (!c) continue;
    for (const a of c.attempts) {
      if (!a.started_at) continue;
      bars.push({
        task: t.task_id,
        attempt: a.attempt,
        machine: a.machine_id ?? a.machine_name ?? "(not created)",
        start: Date.parse(a.started_at),
        end: a.ended_at ? Date.parse(a.ended_at) : now,
        outcome: a.outcome,
        error: a.error,
      });
    }
  }
  return bars;
}

function draw(view, status, bars, shownCount, startedCount, taskCount) {
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
  const notes = [`${rows.size} machine${rows.size === 1 ? "" : "s"}, ${bars.length} attempt${bars.length === 1 ? "" : "s"} over ${duration(span)}`];
  if (startedCount > shownCount) notes.push(`showing the ${shownCount} most recently active of ${n(startedCount)} started tasks`);
  if (rows.size > TIMELINE_MAX_ROWS) notes.push(`first ${TIMELINE_MAX_ROWS} machines`);
  if (taskCount >= TASK_LIST_CAP) notes.push("task list capped at 5,000");
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

/** Runs `fn` over `items`, `width` at a time. */
async function pool(items, width, fn) {
  let i = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (i < items.length) await fn(items[i++]);
    }),
  );
}
