// #/fleet — the Fly app's fleet (GET /fleet), refreshed every 3 s: machines, vCPUs and memory live
// against the fleet's limits (and what Fly's quota refusals lowered them to), every running batch
// with its priority, demand, share and holdings, the batches waiting for room in order, and the
// Fly API tokens of each action.
import { api, enc } from "./api.js";
import { $, el, setLive } from "./dom.js";
import { n } from "./format.js";

const FLEET_REFRESH_MS = 3000;

export function showFleet(view) {
  view.append($("#fleet-view").content.cloneNode(true));
  let stopped = false;
  let timer = 0;

  async function load() {
    clearTimeout(timer);
    try {
      const f = await api("/fleet");
      if (stopped) return;
      render(view, f);
      $("#fleet-error", view).hidden = true;
      setLive(`updated ${new Date().toLocaleTimeString()}`);
    } catch (error) {
      if (stopped) return;
      $("#fleet-error", view).hidden = false;
      $("#fleet-error", view).textContent = `Cannot load the fleet: ${error.message}`;
    }
    if (!stopped) timer = setTimeout(load, FLEET_REFRESH_MS);
  }
  void load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function render(view, f) {
  $("#fleet-app", view).textContent = f.app;
  const limits = f.limits.effective;
  $("#fleet-usage", view).replaceChildren(
    usageCard("machines", f.live.machines, limits.machines, f.limits.configured.machines, ""),
    usageCard("vCPUs", f.live.vcpus, limits.vcpus, f.limits.configured.vcpus, ""),
    usageCard("memory", f.live.memory_mb, limits.memory_mb, f.limits.configured.memory_mb, " MB"),
  );
  const learned = $("#fleet-learned", view);
  learned.hidden = !f.limits.learned;
  learned.textContent = f.limits.learned ?? "";
  $("#fleet-batches tbody", view).replaceChildren(...f.batches.map((b) => batchRow(b, f.waiting.length)));
  $("#fleet-empty", view).hidden = f.batches.length > 0;
  $("#fleet-waiting", view).textContent = f.waiting.length > 0 ? `Waiting for room, in order: ${f.waiting.join(", ")}` : "No batch is waiting for room.";
  $("#fleet-tokens tbody", view).replaceChildren(
    ...Object.entries(f.api_tokens).map(([action, t]) =>
      el(
        "tr",
        { "data-action": action },
        el("td", { text: action }),
        el("td", { class: "num", text: t.tokens.toFixed(1) }),
        el("td", { class: "num", text: String(t.burst) }),
        el("td", { class: "num", text: `${t.per_second}/s` }),
        el("td", { class: "small", text: t.blocked_until ? `held back until ${t.blocked_until}` : "" }),
      ),
    ),
  );
}

/** A card: what is live of a resource against its limit, with a bar; the configured limit when Fly's quota lowered it. */
function usageCard(name, used, limit, configured, unit) {
  const pct = limit > 0 ? Math.min(100, (100 * used) / limit) : 0;
  return el(
    "div",
    { class: "card", "data-testid": `fleet-${name}` },
    el("div", { class: "k", text: name }),
    el("div", { class: "v", text: `${n(used)} / ${n(limit)}${unit}` }),
    el("div", { class: "progress", title: `${pct.toFixed(0)}% of the limit` }, el("span", { class: pct >= 100 ? "p-failed" : "p-done", style: `width:${pct.toFixed(2)}%` })),
    configured !== limit ? el("div", { class: "small muted", text: `configured ${n(configured)}${unit}` }) : null,
  );
}

function batchRow(b, waitingCount) {
  const state = b.waiting ? `waiting for room (${b.position ?? "?"} of ${waitingCount})` : b.stale ? "not seen for 5 min" : "running";
  return el(
    "tr",
    { "data-batch": b.batch_id },
    el("td", {}, el("a", { href: `#/batch/${enc(b.batch_id)}`, text: b.batch_id })),
    el("td", { class: "num", text: String(b.priority) }),
    el("td", { class: "num", text: n(b.demand) }),
    el("td", { class: "num", text: n(b.share) }),
    el("td", { class: "num", text: n(b.live.machines) }),
    el("td", { class: "num", text: n(b.live.vcpus) }),
    el("td", { class: "num", text: n(b.live.memory_mb) }),
    el("td", { class: b.waiting ? "small error-text" : "small", "data-testid": "fleet-state", text: state }),
  );
}
