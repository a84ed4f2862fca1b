// #/ — the batch list (GET /batches, newest first), refreshed every 3 s, filtered by status;
// "more" reads one more page of 50 on each refresh.
import { api, enc } from "./api.js";
import { $, el, setLive } from "./dom.js";
import { n, statusClass, time } from "./format.js";
import { progressBar } from "./widgets.js";

const LIST_REFRESH_MS = 3000;
const PAGE_SIZE = "50";

export function showList(view) {
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
        const q = new URLSearchParams({ limit: PAGE_SIZE });
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
