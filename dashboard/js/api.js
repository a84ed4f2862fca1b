// The Worker's HTTP API, as the CLI reads it: JSON answers, never cached; an answer that is not
// 2xx becomes an ApiError that says the method, path, status and the Worker's `error` text.
import { adminToken, dropAdminToken, dropReadToken, readToken } from "./tokens.js";

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export const enc = encodeURIComponent;

/**
 * `admin: true` sends the admin token (asking for it once per tab) as `Authorization: Bearer`;
 * a read sends the read token when the Worker's reads need one, and asks again once if it is refused.
 */
export async function api(path, { method = "GET", admin = false } = {}, retried = false) {
  const headers = {};
  if (admin) {
    const token = await adminToken();
    if (!token) throw new ApiError("no admin token given", 0);
    headers.authorization = `Bearer ${token}`;
  } else {
    const token = await readToken();
    if (token) headers.authorization = `Bearer ${token}`;
  }
  const res = await fetch(path, { method, headers, cache: "no-store" });
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: reported below
  }
  if (!res.ok) {
    if (res.status === 401 && admin) dropAdminToken();
    if (res.status === 401 && !admin) {
      dropReadToken();
      if (!retried) return api(path, { method, admin }, true);
    }
    const said = body && typeof body.error === "string" ? body.error : text.slice(0, 200) || res.statusText;
    throw new ApiError(`${method} ${path}: ${res.status} ${said}`, res.status);
  }
  return body;
}
