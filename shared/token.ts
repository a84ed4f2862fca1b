// Machine credentials: an HMAC (CALLBACK_SECRET) over what the credential is for and when it
// expires. A callback token names batch, task and attempt; a lease token names batch and pool
// machine. Web Crypto only, so the Worker, the fly-worker and the tests share one implementation.

const encoder = new TextEncoder();
type HmacKey = Awaited<ReturnType<typeof crypto.subtle.importKey>>;
const keyCache = new Map<string, Promise<HmacKey>>();

function hmacKey(secret: string): Promise<HmacKey> {
  let key = keyCache.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    keyCache.set(secret, key);
  }
  return key;
}

function toHex(bytes: ArrayBuffer): string {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function mac(secret: string, subject: string): Promise<string> {
  return toHex(await crypto.subtle.sign("HMAC", await hmacKey(secret), encoder.encode(subject)));
}

/** Constant-time comparison of two strings of any length. */
export function timingSafeEqualText(a: string, b: string): boolean {
  const ab = encoder.encode(a);
  const bb = encoder.encode(b);
  let diff = ab.length ^ bb.length;
  const n = Math.max(ab.length, bb.length);
  for (let i = 0; i < n; i++) diff |= (ab[i] ?? 0) ^ (bb[i] ?? 0);
  return diff === 0;
}

/** What a machine credential grants: one attempt of one task, or one pool machine's leases. */
export type Grant =
  | { kind: "callback"; batchId: string; taskId: string; attempt: number }
  | { kind: "lease"; batchId: string; workerId: string };

// JSON of the fields: unambiguous whatever characters ids hold.
const subject = (g: Grant, expiresAt: number) =>
  JSON.stringify(g.kind === "callback" ? ["callback", g.batchId, g.taskId, g.attempt, expiresAt] : ["lease", g.batchId, g.workerId, expiresAt]);

/**
 * `v2.<attempt|0>.<expires_at ms>.<hex mac>`. The attempt and expiry travel in clear so the
 * orchestrator can say which attempt called; the mac binds them to the grant.
 */
export async function signGrant(secret: string, grant: Grant, expiresAt: number): Promise<string> {
  const attempt = grant.kind === "callback" ? grant.attempt : 0;
  return `v2.${attempt}.${expiresAt}.${await mac(secret, subject(grant, expiresAt))}`;
}

export type Verified = { ok: true; attempt: number; expiresAt: number } | { ok: false; reason: string };

const TOKEN = /^v2\.([0-9]{1,6})\.([0-9]{1,15})\.([0-9a-f]{64})$/;

/**
 * Checks `Authorization: Bearer <token>` for a callback of `taskId` (any attempt: the token says
 * which) or for pool machine `workerId`. Expired tokens are refused.
 */
export async function verifyGrant(
  secret: string,
  want: { kind: "callback"; batchId: string; taskId: string } | { kind: "lease"; batchId: string; workerId: string },
  authorization: string | null,
  now: number = Date.now(),
): Promise<Verified> {
  if (!authorization?.startsWith("Bearer ")) return { ok: false, reason: "no bearer token" };
  const m = TOKEN.exec(authorization.slice("Bearer ".length).trim());
  if (!m) return { ok: false, reason: "malformed token" };
  const attempt = Number(m[1]);
  const expiresAt = Number(m[2]);
  const grant: Grant = want.kind === "callback" ? { ...want, attempt } : want;
  if (!timingSafeEqualText(m[3], await mac(secret, subject(grant, expiresAt)))) return { ok: false, reason: "bad signature" };
  if (now > expiresAt) return { ok: false, reason: "token expired" };
  if (want.kind === "callback" && attempt < 1) return { ok: false, reason: "no attempt" };
  return { ok: true, attempt, expiresAt };
}

/** A bare HMAC of `subject` (tests' opaque tokens); machine credentials use signGrant. */
export async function signToken(secret: string, subjectText: string): Promise<string> {
  return mac(secret, subjectText);
}

/** Checks `Authorization: Bearer <token>` against signToken(secret, subject). */
export async function verifyToken(secret: string, subjectText: string, authorization: string | null): Promise<boolean> {
  if (!authorization?.startsWith("Bearer ")) return false;
  return timingSafeEqualText(authorization.slice("Bearer ".length).trim(), await mac(secret, subjectText));
}

export const callbackSubject = (batchId: string, taskId: string) => `${batchId}/${taskId}`;
