// The batch page's head: status badge, error and warnings, the cards (progress, throughput over the last
// 30 s and the ETA it gives, elapsed, mode, what runs now) and the per-phase table.
import { $, el } from "./dom.js";
import { duration, n, statusClass, TERMINAL } from "./format.js";
import { progressBar } from "./widgets.js";

const RATE_WINDOW_MS = 30_000;

/** Draws status `s`; `samples` ({ t, finished }) is the page's throughput window, added to here. */
export function renderSummary(view, s, samples) {
  const p = s.progress;
  const finished = p.tasks_completed + p.tasks_failed;
  const badge = $("#batch-status", view);
  badge.textContent = s.status;
  badge.className = `badge ${statusClass(s.status)}`;
  const err = $("#batch-error", view);
  err.hidden = !s.error;
  err.textContent = s.error ? `error: ${s.error}` : "";
  // What the batch wants an operator to know: nothing to do, pages skipped, a dead-lettered copy, …
  const warnings = Array.isArray(s.warnings) ? s.warnings : [];
  $("#warnings", view).hidden = warnings.length === 0;
  $("#warnings ul", view).replaceChildren(...warnings.map((w) => el("li", { text: w })));

  $("#m-progress", view).replaceChildren(
    el("div", { text: `${n(p.tasks_completed)} / ${n(p.tasks_total)} done${p.tasks_failed ? ` · ${n(p.tasks_failed)} failed` : ""}` }),
    progressBar(p.tasks_completed, p.tasks_failed, p.tasks_total, "overall-progress"),
  );
  const now = Date.now();
  samples.push({ t: now, finished });
  while (samples.length > 2 && now - samples[0].t > RATE_WINDOW_MS) samples.shift();
  const started = Date.parse(s.started_at);
  const end = s.completed_at ? Date.parse(s.completed_at) : now;
  const rate = throughput(s, samples, finished, (end - started) / 1000, now);
  $("#m-rate", view).textContent = `${rate.toFixed(rate < 10 ? 2 : 0)} tasks/s`;
  const remaining = p.tasks_total - finished;
  $("#m-eta", view).textContent = TERMINAL.has(s.status)
    ? "finished"
    : remaining <= 0
      ? "finishing"
      : rate > 0
        ? duration((remaining / rate) * 1000)
        : "—";
  $("#m-elapsed", view).textContent = duration(end - started);
  $("#m-mode", view).textContent = s.mode ?? "";
  const parts = [
    p.running ? `${n(p.running)} running` : "",
    p.starting ? `${n(p.starting)} starting` : "",
    p.retrying ? `${n(p.retrying)} retrying` : "",
    p.pending ? `${n(p.pending)} pending` : "",
    s.workers ? `${n(s.workers.live)} machines live` : "",
  ].filter(Boolean);
  $("#m-now", view).textContent = parts.join(" · ") || (TERMINAL.has(s.status) ? "idle" : s.stage ?? "");
  renderPhases(view, s);
}

/** Tasks/s: over the sample window (once it spans 3 s) while running; over the whole run once it ended. */
function throughput(s, samples, finished, elapsedS, now) {
  const overall = finished / Math.max(1, elapsedS);
  const first = samples[0];
  const windowRate = now - first.t >= 3000 ? (finished - first.finished) / ((now - first.t) / 1000) : overall;
  return TERMINAL.has(s.status) ? overall : windowRate;
}

/**
 * One row per phase of the batch's pipeline, in its order: those that had work with their counts and
 * machines (sizes, machine-seconds, estimated cost), the rest as not run (yet, or nothing to do). A
 * status without `phases` (an older Worker) shows one row for the batch.
 */
function renderPhases(view, s) {
  const p = s.progress;
  const finished = p.tasks_completed + p.tasks_failed;
  const worked = Array.isArray(s.phases) && s.phases.length ? s.phases : [{ name: s.phase ?? s.status, total: p.tasks_total, done: p.tasks_completed, failed: p.tasks_failed, open: p.tasks_total - finished }];
  const waiting = (Array.isArray(s.pipeline) ? s.pipeline : []).filter((name) => !worked.some((ph) => ph.name === name)).map((name) => ({ name, waiting: true }));
  const order = Array.isArray(s.pipeline) ? s.pipeline : [];
  const rank = (ph) => (order.includes(ph.name) ? order.indexOf(ph.name) : order.length);
  const rows = [...worked, ...waiting].sort((a, b) => rank(a) - rank(b));
  $("[data-testid=phases] tbody", view).replaceChildren(
    ...rows.map((ph) => {
      const name = el("td", {}, el("strong", { text: ph.name }), ph.name === s.phase && !TERMINAL.has(s.status) ? el("span", { class: "muted small", text: " current" }) : null);
      if (ph.waiting) {
        const note = TERMINAL.has(s.status) ? "nothing to do" : "not started";
        return el("tr", { "data-phase": ph.name, class: "muted" }, name, el("td", { colSpan: 7, class: "muted small", text: note }));
      }
      const m = ph.machines;
      return el(
        "tr",
        { "data-phase": ph.name },
        name,
        el("td", {}, progressBar(ph.done, ph.failed, ph.total)),
        el("td", { class: "num", text: n(ph.done) }),
        el("td", { class: "num", text: n(ph.failed) }),
        el("td", { class: "num", text: n(ph.open) }),
        el("td", { class: "num", text: n(ph.total) }),
        el("td", { class: "small", text: m ? `${n(m.ended + m.running)}${m.sizes.length ? ` × ${m.sizes.join(", ")}` : ""}` : "" }),
        el("td", { class: "num", text: m ? `$${m.estimated_cost_usd.toFixed(4)}` : "" }),
      );
    }),
  );
}
