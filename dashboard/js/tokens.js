// The admin token: asked once per tab in the page's dialog, kept in sessionStorage (never
// localStorage), and only ever sent as an Authorization header (api.js).
import { $ } from "./dom.js";

const TOKEN_KEY = "fanout.adminToken";

/** The kept token, or the one the dialog is given; null when it is cancelled or left empty. */
export function adminToken() {
  const kept = sessionStorage.getItem(TOKEN_KEY);
  if (kept) return Promise.resolve(kept);
  const dialog = $("#token-dialog");
  const input = $("#token-input");
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const token = input.value.trim();
        input.value = "";
        if (dialog.returnValue !== "ok" || !token) return resolve(null);
        sessionStorage.setItem(TOKEN_KEY, token);
        showForget();
        resolve(token);
      },
      { once: true },
    );
    dialog.showModal();
  });
}

/** The Worker refused the token (401): the next admin call asks again. */
export function dropAdminToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** The header's "forget admin token" button, shown while a token is kept. */
export function showForget() {
  $("#forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
}

export function wireForgetButton() {
  $("#forget-token").addEventListener("click", () => {
    dropAdminToken();
    showForget();
  });
  showForget();
}
