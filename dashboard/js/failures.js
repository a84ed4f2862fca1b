// The batch page's failures: the failed tasks with their final reason, then recent failed
// attempts that were retried; each named by its file, with its machine and a copyable logs
// command (`fly logs …`, or on the local stack `npm run fanout -- logs …`: the Worker's LOGS_COMMAND).
import { api } from "./api.js";
import { $, el } from "./dom.js";
import { copyButton } from "./widgets.js";

/** Reads the failed tasks of status `s` (under `base`, /status/:id) and draws the table unless `isStopped()`. */
export async function renderFailures(view, base, s, isStopped) {
  if (!s) return;
  const rows = new Map();
  // Failed tasks first (their final reason), then recent failed attempts that were retried.
  if (s.progress.tasks_failed > 0) {
    try {
      const page = await api(`${base}/tasks?status=failed&limit=100`);
      for (const t of page.tasks) rows.set(`${t.task_id}`, { task_id: t.task_id, input_key: t.input_key, attempt: t.attempt, machine_id: t.machine_id, error: t.error, logs: t.logs, final: true });
    } catch {
      // the recent failures below still show
    }
  }
  for (const f of s.recent_failures ?? []) {
    if (!rows.has(f.task_id)) rows.set(f.task_id, { ...f, final: false });
  }
  if (isStopped()) return;
  const table = $("#failures", view);
  table.hidden = rows.size === 0;
  $("#no-failures", view).hidden = rows.size > 0;
  $("tbody", table).replaceChildren(...[...rows.values()].map(failureRow));
}

const fileName = (key) => key.slice(key.lastIndexOf("/") + 1);

function failureRow(f) {
  return el(
    "tr",
    { "data-task": f.task_id },
    // Named by its file (the task id is the orchestrator's name for it, kept beside it).
    el(
      "td",
      { title: f.input_key ?? "" },
      el("span", { "data-testid": "failure-file", text: f.input_key ? fileName(f.input_key) : f.task_id }),
      f.final ? el("span", { class: "badge bad small", text: "failed" }) : el("span", { class: "badge run small", text: "retried" }),
      f.input_key ? el("div", { class: "muted small", text: f.task_id }) : null,
    ),
    el("td", { class: "num", text: String(f.attempt) }),
    el("td", { class: "small", text: f.machine_id ?? "(no machine)" }),
    el("td", { class: "reason", "data-testid": "failure-reason", text: f.error ?? "" }),
    el("td", {}, f.logs ? el("span", { class: "cmd" }, el("code", { text: f.logs }), copyButton(f.logs)) : el("span", { class: "muted", text: "—" })),
  );
}
