// The fanout dashboard: plain ES modules, no build step, served by the Worker's `assets`.
// Reads the same HTTP API as the CLI: GET /batches, /status/:id (+ /events when the Worker has
// it, polling every 2 s when not), /status/:id/tasks[/:taskId]; reset and redrive with the admin
// token, which lives in sessionStorage and is only ever sent as an Authorization header.
/* global document, window, location, fetch, sessionStorage, navigator, EventSource, MessageEvent, setTimeout, clearTimeout, URLSearchParams */

const POLL_MS = 2000;
const LIST_REFRESH_MS = 3000;
const TIMELINE_REFRESH_MS = 4000;
/** Per-task detail requests for the timeline: bounded so a 100,000-task batch stays usable. */
const TIMELINE_MAX_TASKS = 400;
const TIMELINE_MAX_ROWS = 150;
const RATE_WINDOW_MS = 30_000;
const TERMINAL = new Set(["DONE", "ERROR", "FAILED"]);
const TOKEN_KEY = "fanout.adminToken";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-") || k === "title" || k === "href" || k === "style") node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
};

// ---- API -------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method = "GET", admin = false } = {}) {
  const headers = {};
  if (admin) headers.authorization = `Bearer ${await adminToken()}`;
  const res = await fetch(path, { method, headers, cache: "no-store" });
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: reported below
  }
  if (!res.ok) {
    if (res.status === 401 && admin) sessionStorage.removeItem(TOKEN_KEY);
    const said = body && typeof body.error === "string" ? body.error : text.slice(0, 200) || res.statusText;
    throw new ApiError(`${method} ${path}: ${res.status} ${said}`, res.status);
  }
  return body;
}

const enc = encodeURIComponent;

// ---- admin token: asked once per tab -----------------------------------------------------------

function adminToken() {
  const kept = sessionStorage.getItem(TOKEN_KEY);
  if (kept) return Promise.resolve(kept);
  const dialog = $("#token-dialog");
  const input = $("#token-input");
  input.value = "";
  return new Promise((resolve, reject) => {
    dialog.addEventListener(
      "close",
      () => {
        const token = input.value.trim();
        input.value = "";
        if (dialog.returnValue !== "ok" || !token) return reject(new ApiError("no admin token given", 0));
        sessionStorage.setItem(TOKEN_KEY, token);
        showForget();
        resolve(token);
      },
      { once: true },
    );
    dialog.showModal();
  });
}

function showForget() {
  $("#forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
}

// ---- formatting --------------------------------------------------------------------------------

const n = (x) => Number(x).toLocaleString("en-US");
function duration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return "—";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}
const time = (iso) => (iso ? new Date(iso).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "");
const statusClass = (s) => (s === "DONE" ? "ok" : s === "ERROR" || s === "FAILED" ? "bad" : "run");

function progressBar(done, failed, total, testid) {
  const pct = (x) => (total > 0 ? `${((100 * x) / total).toFixed(2)}%` : "0%");
  return el(
    "div",
    { class: "progress", "data-testid": testid, title: `${n(done)} done, ${n(failed)} failed of ${n(total)}` },
    el("span", { class: "p-done", style: `width:${pct(done)}` }),
    el("span", { class: "p-failed", style: `width:${pct(failed)}` }),
  );
}

function copyButton(text) {
  const b = el("button", { class: "copy", text: "copy", title: "copy to clipboard" });
  b.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      b.textContent = "copied";
    } catch {
      // Clipboard needs a secure context: select the text instead so ⌘C / Ctrl+C works.
      const code = b.previousElementSibling;
      if (code) window.getSelection()?.selectAllChildren(code);
      b.textContent = "selected";
    }
    setTimeout(() => (b.textContent = "copy"), 1500);
  });
  return b;
}

// ---- router --------------------------------------------------------------------------------------

let teardown = () => {};

function route() {
  teardown();
  teardown = () => {};
  const view = $("#view");
  view.replaceChildren();
  const m = location.hash.match(/^#\/batch\/(.+)$/);
  if (m) teardown = showBatch(view, decodeURIComponent(m[1]));
  else teardown = showList(view);
}

// ---- the batch list ------------------------------------------------------------------------------

function showList(view) {
  view.append($("#list-view").content.cloneNode(true));
  const filter = $("#status-filter", view);
  filter.value = new URLSearchParams(location.search).get("status") ?? "";
  let pages = 1;
  let stopped = false;
  let timer = 0;

  async function load() {
    clearTimeout(timer);
    const body = $("tbody", view);
    try {
      const rows = [];
      let cursor = null;
      let next = null;
      for (let i = 0; i < pages; i++) {
        const q = new URLSearchParams({ limit: "50" });
        if (filter.value) q.set("status", filter.value);
        if (cursor) q.set("cursor", cursor);
        const page = await api(`/batches?${q}`);
        rows.push(...page.batches);
        next = page.next_cursor;
        cursor = next;
        if (!cursor) break;
      }
      if (stopped) return;
      body.replaceChildren(...rows.map(listRow));
      $("#list-empty", view).hidden = rows.length > 0;
      $("#more", view).hidden = !next;
      $("#list-error", view).hidden = true;
      setLive(`updated ${new Date().toLocaleTimeString()}`);
    } catch (error) {
      if (stopped) return;
      $("#list-error", view).hidden = false;
      $("#list-error", view).textContent = `Cannot load the batch list: ${error.message}`;
    }
    if (!stopped) timer = setTimeout(load, LIST_REFRESH_MS);
  }

  filter.addEventListener("change", () => {
    pages = 1;
    void load();
  });
  $("#more", view).addEventListener("click", () => {
    pages++;
    void load();
  });
  void load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function listRow(b) {
  const p = b.progress;
  return el(
    "tr",
    { "data-batch": b.batch_id },
    el("td", {}, el("a", { href: `#/batch/${enc(b.batch_id)}`, text: b.batch_id })),
    el("td", {}, el("span", { class: `badge ${statusClass(b.status)}`, text: b.status })),
    el("td", {}, progressBar(p.tasks_completed, p.tasks_failed, p.tasks_total)),
    el("td", { class: "num", text: n(p.tasks_completed) }),
    el("td", { class: "num", text: n(p.tasks_failed) }),
    el("td", { class: "num", text: n(p.tasks_total) }),
    el("td", { text: b.mode }),
    el("td", { class: "small", text: time(b.started_at) }),
    el("td", { class: "small", text: time(b.completed_at) }),
    el("td", { class: "small error-text", text: b.error ?? "" }),
  );
}

// ---- one batch -----------------------------------------------------------------------------------

function showBatch(view, batchId) {
  view.append($("#batch-view").content.cloneNode(true));
  $("#batch-id", view).textContent = batchId;
  const base = `/status/${enc(batchId)}`;
  const samples = []; // { t, finished } for the throughput window
  let status = null;
  let stopped = false;
  let pollTimer = 0;
  let timelineTimer = 0;
  let source = null;
  let lastFull = 0;
  const attemptsCache = new Map(); // task_id -> { status, attempt, attempts }
  let timelineBusy = false;

  function render() {
    if (!status) return;
    const s = status;
    const p = s.progress;
    const finished = p.tasks_completed + p.tasks_failed;
    const badge = $("#batch-status", view);
    badge.textContent = s.status;
    badge.className = `badge ${statusClass(s.status)}`;
    const err = $("#batch-error", view);
    err.hidden = !s.error;
    err.textContent = s.error ? `error: ${s.error}` : "";

    $("#m-progress", view).replaceChildren(
      el("div", { text: `${n(p.tasks_completed)} / ${n(p.tasks_total)} done${p.tasks_failed ? ` · ${n(p.tasks_failed)} failed` : ""}` }),
      progressBar(p.tasks_completed, p.tasks_failed, p.tasks_total, "overall-progress"),
    );
    const now = Date.now();
    samples.push({ t: now, finished });
    while (samples.length > 2 && now - samples[0].t > RATE_WINDOW_MS) samples.shift();
    const started = Date.parse(s.started_at);
    const end = s.completed_at ? Date.parse(s.completed_at) : now;
    const overall = finished / Math.max(1, (end - started) / 1000);
    const first = samples[0];
    const windowRate = now - first.t >= 3000 ? (finished - first.finished) / ((now - first.t) / 1000) : overall;
    const rate = TERMINAL.has(s.status) ? overall : windowRate;
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

    const phases = Array.isArray(s.phases) && s.phases.length ? s.phases : [{ name: s.phase ?? s.status, total: p.tasks_total, done: p.tasks_completed, failed: p.tasks_failed, open: p.tasks_total - finished }];
    $("[data-testid=phases] tbody", view).replaceChildren(
      ...phases.map((ph) =>
        el(
          "tr",
          { "data-phase": ph.name },
          el("td", {}, el("strong", { text: ph.name }), ph.name === s.phase && !TERMINAL.has(s.status) ? el("span", { class: "muted small", text: " current" }) : null),
          el("td", {}, progressBar(ph.done, ph.failed, ph.total)),
          el("td", { class: "num", text: n(ph.done) }),
          el("td", { class: "num", text: n(ph.failed) }),
          el("td", { class: "num", text: n(ph.open) }),
          el("td", { class: "num", text: n(ph.total) }),
        ),
      ),
    );
    $("#redrive", view).disabled = !TERMINAL.has(s.status);
    $("#reset", view).disabled = s.status === "DONE";
  }

  async function renderFailures() {
    const s = status;
    if (!s) return;
    const rows = new Map();
    // Failed tasks first (their final reason), then recent failed attempts that were retried.
    if (s.progress.tasks_failed > 0) {
      try {
        const page = await api(`${base}/tasks?status=failed&limit=100`);
        for (const t of page.tasks) rows.set(`${t.task_id}`, { task_id: t.task_id, attempt: t.attempt, machine_id: t.machine_id, error: t.error, logs: t.logs, final: true });
      } catch {
        // the recent failures below still show
      }
    }
    for (const f of s.recent_failures ?? []) {
      if (!rows.has(f.task_id)) rows.set(f.task_id, { ...f, final: false });
    }
    if (stopped) return;
    const table = $("#failures", view);
    table.hidden = rows.size === 0;
    $("#no-failures", view).hidden = rows.size > 0;
    $("tbody", table).replaceChildren(
      ...[...rows.values()].map((f) =>
        el(
          "tr",
          { "data-task": f.task_id },
          el("td", {}, el("span", { text: f.task_id }), f.final ? el("span", { class: "badge bad small", text: "failed" }) : el("span", { class: "badge run small", text: "retried" })),
          el("td", { class: "num", text: String(f.attempt) }),
          el("td", { class: "small", text: f.machine_id ?? "(no machine)" }),
          el("td", { class: "reason", "data-testid": "failure-reason", text: f.error ?? "" }),
          el("td", {}, f.logs ? el("span", { class: "cmd" }, el("code", { text: f.logs }), copyButton(f.logs)) : el("span", { class: "muted", text: "—" })),
        ),
      ),
    );
  }

  async function refreshStatus() {
    try {
      status = await api(base);
      render();
      lastFull = Date.now();
      await renderFailures();
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
    setLive("live: polling every 2 s");
    void refreshStatus().then(() => {
      if (!stopped && !(status && TERMINAL.has(status.status) && status.stage !== "run")) pollTimer = setTimeout(poll, POLL_MS);
      else if (status && TERMINAL.has(status.status)) setLive("finished");
    });
  }

  /** The event stream (issue 11 point 1) when the Worker has it; polling otherwise. */
  function follow() {
    if (typeof EventSource === "undefined") return poll();
    let opened = false;
    source = new EventSource(`${base}/events`);
    source.onopen = () => {
      opened = true;
      setLive("live: event stream");
    };
    source.onerror = () => {
      // A 404 (no stream route) or a non-event-stream answer closes the source for good.
      if (source && source.readyState === EventSource.CLOSED) {
        source.close();
        source = null;
        if (!stopped) poll();
      } else if (opened) setLive("live: reconnecting…");
    };
    source.addEventListener("progress", (e) => {
      const progress = parseData(e);
      if (!progress || !status) return;
      status = { ...status, progress: { ...status.progress, ...progress } };
      render();
      // Progress events carry counts only: re-read the rest now and then.
      if (Date.now() - lastFull > 5000) void refreshStatus();
    });
    for (const type of ["phase", "task_failed"]) source.addEventListener(type, () => void refreshStatus());
    for (const type of ["done", "failed", "error"]) {
      source.addEventListener(type, (e) => {
        // A connection error is also an "error" event, but not a MessageEvent: EventSource retries it.
        if (!(e instanceof MessageEvent)) return;
        source?.close();
        source = null;
        setLive("finished");
        void refreshStatus();
        void refreshTimeline();
      });
    }
    // Until the stream says something, show what there is.
    void refreshStatus();
  }

  // ---- machine timeline ----

  async function refreshTimeline() {
    clearTimeout(timelineTimer);
    if (timelineBusy || stopped) return;
    timelineBusy = true;
    try {
      const tasks = [];
      let cursor = null;
      do {
        const page = await api(`${base}/tasks?limit=1000${cursor ? `&cursor=${cursor}` : ""}`);
        tasks.push(...page.tasks);
        cursor = page.next_cursor;
      } while (cursor && tasks.length < 5000);
      const started = tasks.filter((t) => t.attempt > 0 || t.machine_id);
      // The most recently changed tasks are the interesting ones on a large batch.
      started.sort((a, b) => (b.updated_at ?? "").localeCompare(a.updated_at ?? ""));
      const shown = started.slice(0, TIMELINE_MAX_TASKS);
      const stale = shown.filter((t) => {
        const c = attemptsCache.get(t.task_id);
        return !c || c.status !== t.status || c.attempt !== t.attempt || !(t.status === "done" || t.status === "failed");
      });
      await pool(stale, 6, async (t) => {
        const detail = await api(`${base}/tasks/${enc(t.task_id)}`).catch(() => null);
        if (detail) attemptsCache.set(t.task_id, { status: t.status, attempt: t.attempt, attempts: detail.attempts });
      });
      if (stopped) return;
      drawTimeline(shown, started.length, tasks.length);
    } catch (error) {
      $("#timeline-note", view).textContent = `timeline unavailable: ${error.message}`;
    } finally {
      timelineBusy = false;
    }
    if (!stopped && !(status && TERMINAL.has(status.status))) timelineTimer = setTimeout(refreshTimeline, TIMELINE_REFRESH_MS);
  }

  function drawTimeline(shown, startedCount, taskCount) {
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
    box.replaceChildren(
      axis,
      ...ordered.slice(0, TIMELINE_MAX_ROWS).map(([machine, list]) =>
        el(
          "div",
          { class: "tl-row", "data-machine": machine },
          el("div", { class: "tl-label small", text: machine, title: machine }),
          el(
            "div",
            { class: "tl-track" },
            ...list.map((b) => {
              const cls = b.outcome === "done" ? "done" : b.outcome === "open" ? "open" : "failed";
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
        ),
      ),
    );
    const notes = [`${rows.size} machine${rows.size === 1 ? "" : "s"}, ${bars.length} attempt${bars.length === 1 ? "" : "s"} over ${duration(span)}`];
    if (startedCount > shown.length) notes.push(`showing the ${shown.length} most recently active of ${n(startedCount)} started tasks`);
    if (rows.size > TIMELINE_MAX_ROWS) notes.push(`first ${TIMELINE_MAX_ROWS} machines`);
    if (taskCount >= 5000) notes.push("task list capped at 5,000");
    $("#timeline-note", view).textContent = notes.join(" · ");
  }

  // ---- actions ----

  async function act(button, path, label) {
    const out = $("#action-result", view);
    button.disabled = true;
    out.className = "muted";
    out.textContent = `${label}…`;
    try {
      const body = await api(path, { method: "POST", admin: true });
      out.textContent = `${label}: ${JSON.stringify(body)}`;
      samples.length = 0;
      attemptsCache.clear();
      if (!source) {
        clearTimeout(pollTimer);
        poll();
      }
      void refreshTimeline();
      if (!source) follow();
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
  void refreshTimeline();
  return () => {
    stopped = true;
    source?.close();
    clearTimeout(pollTimer);
    clearTimeout(timelineTimer);
  };
}

function parseData(e) {
  try {
    return JSON.parse(e.data);
  } catch {
    return null;
  }
}

function ticks(t0, span) {
  const out = [];
  for (let i = 0; i <= 4; i++) {
    const at = (span * i) / 4;
    out.push(el("span", { class: "tl-tick small", style: `left:${i * 25}%`, text: span < 20_000 ? `+${(at / 1000).toFixed(1)}s` : `+${duration(at)}` }));
  }
  return out;
}

async function pool(items, width, fn) {
  let i = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (i < items.length) await fn(items[i++]);
    }),
  );
}

function setLive(text) {
  $("#live").textContent = text;
}

// ---- start -----------------------------------------------------------------------------------------

$("#forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showForget();
});
showForget();
window.addEventListener("hashchange", route);
route();
