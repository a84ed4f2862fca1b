// Small pieces more than one page draws: the done/failed progress bar and a copy-to-clipboard button.
import { el } from "./dom.js";
import { n } from "./format.js";

export function progressBar(done, failed, total, testid) {
  const pct = (x) => (total > 0 ? `${((100 * x) / total).toFixed(2)}%` : "0%");
  return el(
    "div",
    { class: "progress", "data-testid": testid, title: `${n(done)} done, ${n(failed)} failed of ${n(total)}` },
    el("span", { class: "p-done", style: `width:${pct(done)}` }),
    el("span", { class: "p-failed", style: `width:${pct(failed)}` }),
  );
}

/** A button after a <code> element that copies `text`. */
export function copyButton(text) {
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
