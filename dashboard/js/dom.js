// DOM helpers every page uses: query, build an element, and the header's "live" note.

export const $ = (sel, root = document) => root.querySelector(sel);

/** An element with attributes (`class`, `text`, data-*, title, href, style; anything else as a property) and children. */
export const el = (tag, attrs = {}, ...children) => {
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

/** The header's note on how the page is kept current (event stream, polling, finished). */
export function setLive(text) {
  $("#live").textContent = text;
}
