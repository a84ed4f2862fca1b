// Callback tokens: CALLBACK_TOKEN = hex(HMAC-SHA256(CALLBACK_SECRET, `${batchId}/${taskId}`)).
// Web Crypto only, so the Worker, the fly-worker and the tests share one implementation.

const encoder = new TextEncoder();
type HmacKey = Awaited<ReturnType<typeof crypto.subtle.importKey>>;
const keyCache = new Map<string, Promise<HmacKey>>();

function hmacKey(secret: string): Promise<HmacKey> {
  let key = keyCache.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
    ]);
    keyCache.set(secret, key);
  }
  return key;
}

function toHex(bytes: ArrayBuffer): string {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The bearer token a machine presents for `subject` (e.g. `batchId/taskId`). */
export async function signToken(secret: string, subject: string): Promise<string> {
  const mac = await crypto.subtle.sign("HMAC", await hmacKey(secret), encoder.encode(subject));
  return toHex(mac);
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

/** Checks `Authorization: Bearer <token>` against the token for `subject`. */
export async function verifyToken(secret: string, subject: string, authorization: string | null): Promise<boolean> {
  if (!authorization?.startsWith("Bearer ")) return false;
  const expected = await signToken(secret, subject);
  return timingSafeEqualText(authorization.slice("Bearer ".length).trim(), expected);
}

export const callbackSubject = (batchId: string, taskId: string) => `${batchId}/${taskId}`;
