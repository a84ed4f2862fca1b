// The tokens the page sends: the admin token (reset, redrive) and, when the Worker's reads need
// one (GET /health says `reads: "token"`), the read token (the admin token works for reads too).
// Each is asked once per tab in the page's dialog, kept in sessionStorage (never localStorage),
// and only ever sent as an Authorization header (api.js, event-stream.js).
import { $ } from "./dom.js";

const KEYS = { admin: "fanout.adminToken", read: "fanout.readToken" };
const ASK = {
  admin: { title: "Admin token", note: "Needed for reset and redrive.", label: "ADMIN_TOKEN" },
  read: { title: "Read token", note: "This orchestrator shows batches only with its read token (or the admin token).", label: "READ_TOKEN" },
};

/** One dialog at a time: a second ask while one is open waits for the same answer. */
const asking = new Map();

function ask(kind) {
  const open = asking.get(kind);
  if (open) return open;
  const dialog = $("#token-dialog");
  const input = $("#token-input");
  $("#token-title").textContent = ASK[kind].title;
  $("#token-why").textContent = ASK[kind].note;
  $("#token-name").textContent = ASK[kind].label;
  dialog.dataset.kind = kind;
  input.value = "";
  const answer = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        asking.delete(kind);
        const token = input.value.trim();
        input.value = "";
        if (dialog.returnValue !== "ok" || !token) return resolve(null);
        sessionStorage.setItem(KEYS[kind], token);
        showForget();
        resolve(token);
      },
      { once: true },
    );
    dialog.showModal();
  });
  asking.set(kind, answer);
  return answer;
}

/** The kept admin token, or the one the dialog is given; null when it is cancelled or left empty. */
export function adminToken() {
  const kept = sessionStorage.getItem(KEYS.admin);
  return kept ? Promise.resolve(kept) : ask("admin");
}

/** The Worker refused the token (401): the next admin call asks again. */
export function dropAdminToken() {
  sessionStorage.removeItem(KEYS.admin);
  showForget();
}

let reads = null;

/** Whether the Worker's reads need a token: GET /health's `reads`, asked once per page load. */
export async function readsNeedToken() {
  reads ??= fetch("/health", { cache: "no-store" })
    .then((r) => r.json())
    .then((body) => body && body.reads === "token")
    .catch(() => false);
  return reads;
}

/** What to send on a read: the read token (or a kept admin token) when reads need one, asked for once; null when they are open or none is given. */
export async function readToken() {
  if (!(await readsNeedToken())) return null;
  return sessionStorage.getItem(KEYS.read) ?? sessionStorage.getItem(KEYS.admin) ?? ask("read");
}

/** The Worker refused a read (401): reads need a token after all, and the kept one is wrong. */
export function dropReadToken() {
  reads = Promise.resolve(true);
  sessionStorage.removeItem(KEYS.read);
  showForget();
}

/** The header's "forget tokens" button, shown while a token is kept. */
export function showForget() {
  $("#forget-token").hidden = !sessionStorage.getItem(KEYS.admin) && !sessionStorage.getItem(KEYS.read);
}

export function wireForgetButton() {
  $("#forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(KEYS.admin);
    sessionStorage.removeItem(KEYS.read);
    showForget();
  });
  showForget();
}
