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

/**
 * What a machine credential grants: one attempt of one task, or one pool machine's leases. `epoch`
 * is the batch's epoch when it was minted (0 until the first reset or redrive): the batch refuses a
 * credential of an earlier epoch, so a reset or redrive ends every outstanding attempt's powers.
 */
export type Grant =
  | { kind: "callback"; batchId: string; taskId: string; attempt: number; epoch?: number }
  | { kind: "lease"; batchId: string; workerId: string; epoch?: number };

// JSON of the fields: unambiguous whatever characters ids hold.
const subject = (g: Grant, epoch: number, expiresAt: number) =>
  JSON.stringify(g.kind === "callback" ? ["callback", g.batchId, g.taskId, g.attempt, epoch, expiresAt] : ["lease", g.batchId, g.workerId, epoch, expiresAt]);

/**
 * `v3.<epoch>.<attempt|0>.<expires_at ms>.<hex mac>`. Epoch, attempt and expiry travel in clear so
 * the orchestrator can say which attempt called and whether the batch has moved on since; the mac
 * binds them to the grant. Numbers are written in their one canonical form (no leading zeros).
 */
export async function signGrant(secret: string, grant: Grant, expiresAt: number): Promise<string> {
  const attempt = grant.kind === "callback" ? grant.attempt : 0;
  const epoch = grant.epoch ?? 0;
  for (const [name, n] of [["attempt", attempt], ["epoch", epoch], ["expires_at", expiresAt]] as const) {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`signGrant: ${name} must be a non-negative integer, not ${n}`);
  }
  return `v3.${epoch}.${attempt}.${expiresAt}.${await mac(secret, subject(grant, epoch, expiresAt))}`;
}

export type Verified = { ok: true; attempt: number; epoch: number; expiresAt: number } | { ok: false; reason: string };

// One canonical form per number: `0` or a digit 1-9 first (a leading zero would make two tokens of one grant).
const NUMBER = "(0|[1-9][0-9]{0,14})";
const TOKEN = new RegExp(`^v3\\.${NUMBER}\\.${NUMBER}\\.${NUMBER}\\.([0-9a-f]{64})$`);

/**
 * The credential of an `Authorization` header: `Bearer <token>`, the scheme in any case (RFC 9110
 * §11.1: auth-scheme is case-insensitive), one or more spaces, the token; null when it is not one.
 */
export function bearerToken(authorization: string | null | undefined): string | null {
  const m = /^bearer[ \t]+([^\s]+)[ \t]*$/i.exec(authorization ?? "");
  return m ? m[1] : null;
}

/**
 * Checks `Authorization: Bearer <token>` for a callback of `taskId` (any attempt: the token says
 * which) or for pool machine `workerId`. Expired tokens are refused; the epoch is the caller's to check.
 */
export async function verifyGrant(
  secret: string,
  want: { kind: "callback"; batchId: string; taskId: string } | { kind: "lease"; batchId: string; workerId: string },
  authorization: string | null,
  now: number = Date.now(),
): Promise<Verified> {
  const token = bearerToken(authorization);
  if (token === null) return { ok: false, reason: "no bearer token" };
  const m = TOKEN.exec(token);
  if (!m) return { ok: false, reason: "malformed token" };
  const epoch = Number(m[1]);
  const attempt = Number(m[2]);
  const expiresAt = Number(m[3]);
  const grant: Grant = want.kind === "callback" ? { ...want, attempt } : want;
  if (!timingSafeEqualText(m[4], await mac(secret, subject(grant, epoch, expiresAt)))) return { ok: false, reason: "bad signature" };
  if (now > expiresAt) return { ok: false, reason: "token expired" };
  if (want.kind === "callback" && attempt < 1) return { ok: false, reason: "no attempt" };
  if (want.kind === "lease" && attempt !== 0) return { ok: false, reason: "not a lease token" };
  return { ok: true, attempt, epoch, expiresAt };
}

/** A bare HMAC of `subject` (tests' opaque tokens); machine credentials use signGrant. */
export async function signToken(secret: string, subjectText: string): Promise<string> {
  return mac(secret, subjectText);
}

/** Checks `Authorization: Bearer <token>` against signToken(secret, subject). */
export async function verifyToken(secret: string, subjectText: string, authorization: string | null): Promise<boolean> {
  const token = bearerToken(authorization);
  return token !== null && timingSafeEqualText(token, await mac(secret, subjectText));
}

export const callbackSubject = (batchId: string, taskId: string) => `${batchId}/${taskId}`;
