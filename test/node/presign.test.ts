// The machines' storage access is a SigV4 presigned URL per object (orchestrator/engine/access.ts).
// This checks the signature with an independent implementation of AWS's algorithm (the local S3
// checks it with smithy's: local-s3.test.ts, storage-s3.test.ts): recompute it for the request the
// URL would be used for. A URL reaches only its own key and method, only with the headers it signs,
// and only until its X-Amz-Date + X-Amz-Expires. Its path is exactly its key, each segment encoded.
import { createHash, createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { attemptExpiry, presign } from "../../orchestrator/engine/presign.ts";
import type { Config } from "../../orchestrator/config.ts";

const SECRET = "test-secret-key";
const config = {
  R2_ACCESS_KEY_ID: "test-access-key",
  R2_SECRET_ACCESS_KEY: SECRET,
  R2_ACCOUNT_ID: "acct",
  R2_BUCKET: "archive",
  R2_ENDPOINT: undefined,
} as unknown as Config;

const hmac = (key: Buffer | string, data: string) => createHmac("sha256", key).update(data).digest();

/** An independent SigV4 query-signature check (AWS's algorithm), as the storage service runs it, for a request carrying `headers`. */
function verify(method: string, url: string, now: number, headers: Record<string, string> = {}): { ok: boolean; reason?: string } {
  const u = new URL(url);
  const q = u.searchParams;
  const amzDate = q.get("X-Amz-Date")!;
  const signedAt = Date.UTC(+amzDate.slice(0, 4), +amzDate.slice(4, 6) - 1, +amzDate.slice(6, 8), +amzDate.slice(9, 11), +amzDate.slice(11, 13), +amzDate.slice(13, 15));
  if (now > signedAt + Number(q.get("X-Amz-Expires")) * 1000) return { ok: false, reason: "expired" };
  const given = q.get("X-Amz-Signature");
  const params = [...q.entries()].filter(([k]) => k !== "X-Amz-Signature").sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const enc = (s: string) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const signed = q.get("X-Amz-SignedHeaders")!.split(";");
  const sent: Record<string, string> = { host: u.host, ...Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v])) };
  if (signed.some((h) => sent[h] === undefined)) return { ok: false, reason: "signature does not match" };
  const canonicalHeaders = signed.map((h) => `${h}:${sent[h]}\n`).join("");
  const canonical = [method, u.pathname, params.map(([k, v]) => `${enc(k)}=${enc(v)}`).join("&"), canonicalHeaders, q.get("X-Amz-SignedHeaders"), "UNSIGNED-PAYLOAD"].join("\n");
  const scope = q.get("X-Amz-Credential")!.split("/").slice(1).join("/");
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, createHash("sha256").update(canonical).digest("hex")].join("\n");
  const [day, region, service] = scope.split("/");
  const key = hmac(hmac(hmac(hmac(`AWS4${SECRET}`, day), region), service), "aws4_request");
  return hmac(key, toSign).toString("hex") === given ? { ok: true } : { ok: false, reason: "signature does not match" };
}

/** The same URL aimed at another key: what a machine would try to reach something else. */
const retarget = (url: string, key: string) => {
  const u = new URL(url);
  u.pathname = `/${config.R2_BUCKET}/${key}`;
  return u.toString();
};

describe("presigned machine URLs", () => {
  const now = Date.UTC(2026, 10, 26, 12, 0, 0);
  const expiresAt = attemptExpiry(now, { bootTimeoutMs: 600_000, runTimeoutMs: 900_000 });

  it("a GET of the input verifies for that key and method only", async () => {
    const url = await presign(config, "GET", "batches/b1/scans/a 1.tif", expiresAt, now);
    expect(new URL(url).host).toBe("acct.r2.cloudflarestorage.com");
    expect(verify("GET", url, now)).toEqual({ ok: true });
    expect(verify("GET", retarget(url, "batches/b1/scans/other.tif"), now)).toEqual({ ok: false, reason: "signature does not match" });
    expect(verify("PUT", url, now)).toEqual({ ok: false, reason: "signature does not match" });
    expect(verify("DELETE", url, now).ok).toBe(false);
  });

  it("a PUT of a reserved output cannot write another key", async () => {
    const url = await presign(config, "PUT", "batches/b1/scans/a.jpg", expiresAt, now);
    expect(verify("PUT", url, now).ok).toBe(true);
    expect(verify("PUT", retarget(url, "batches/b1/scans/a-p002.jpg"), now).ok).toBe(false);
    expect(verify("PUT", retarget(url, "batches/other/manifest.json"), now).ok).toBe(false);
  });

  it("expires with the attempt: create + boot + run limits + grace, then refused", async () => {
    const url = await presign(config, "GET", "batches/b1/a.tif", expiresAt, now);
    expect(Number(new URL(url).searchParams.get("X-Amz-Expires"))).toBe((expiresAt - now) / 1000);
    expect((expiresAt - now) / 60_000).toBe(31);
    expect(verify("GET", url, expiresAt - 1000).ok).toBe(true);
    expect(verify("GET", url, expiresAt + 1000)).toEqual({ ok: false, reason: "expired" });
    // Stretching the expiry breaks the signature.
    const stretched = new URL(url);
    stretched.searchParams.set("X-Amz-Expires", "604800");
    expect(verify("GET", stretched.toString(), expiresAt + 1000)).toEqual({ ok: false, reason: "signature does not match" });
  });
});

describe("a key is its own path, exactly", () => {
  const now = Date.UTC(2026, 10, 26, 12, 0, 0);
  // Worked by hand: each segment percent-encoded as RFC 3986 / SigV4 (all but A-Z a-z 0-9 - _ . ~).
  const cases: [string, string][] = [
    ["batches/b1/a b&c#d?e.tif", "/archive/batches/b1/a%20b%26c%23d%3Fe.tif"],
    ["batches/b1/%2e%2e/x.tif", "/archive/batches/b1/%252e%252e/x.tif"],
    ["batches/b1/(paren)'s*!.tif", "/archive/batches/b1/%28paren%29%27s%2A%21.tif"],
    ["batches/b1/ünï/日本.tif", "/archive/batches/b1/%C3%BCn%C3%AF/%E6%97%A5%E6%9C%AC.tif"],
    ["batches/b1/.../x.tif", "/archive/batches/b1/.../x.tif"],
    ["batches/b1/a+b;c=d.tif", "/archive/batches/b1/a%2Bb%3Bc%3Dd.tif"],
  ];
  it.each(cases)("%s is signed and sent as %s", async (key, path) => {
    const url = await presign(config, "GET", key, now + 60_000, now);
    expect(new URL(url).pathname).toBe(path);
    expect(new URL(url).pathname.split("/").slice(2).map(decodeURIComponent).join("/")).toBe(key);
    expect(verify("GET", url, now)).toEqual({ ok: true });
  });

  it.each([
    ["batches/trav-1/../../private/secret.tif", /".." segment/],
    ["batches/../../other-bucket/x.tif", /".." segment/],
    ["batches/b1/./a.tif", /"\." segment/],
    ["batches//b1/a.tif", /empty segment/],
    ["/batches/b1/a.tif", /empty segment/],
    ["batches\\b1\\a.tif", /backslash/],
    ["batches/b1/a\u0000.tif", /control character \(U\+0000\)/],
    ["batches/b1/a\n.tif", /control character \(U\+000A\)/],
    [`batches/b1/${"é".repeat(507)}`, /1025 bytes of UTF-8, more than R2's 1024/],
  ])("refuses to presign %j: it is not a canonical key", async (key, reason) => {
    await expect(presign(config, "GET", key, now + 60_000, now)).rejects.toThrow(reason);
  });

  it("a PUT signs the headers it is given (Content-Type: image/jpeg, If-None-Match): another content type, or none, is refused", async () => {
    const headers = { "content-type": "image/jpeg", "if-none-match": "*" };
    const url = await presign(config, "PUT", "batches/b1/a.jpg", now + 60_000, now, headers);
    expect(new URL(url).searchParams.get("X-Amz-SignedHeaders")).toBe("content-type;host;if-none-match");
    expect(verify("PUT", url, now, headers)).toEqual({ ok: true });
    expect(verify("PUT", url, now, { ...headers, "content-type": "text/html" }).ok).toBe(false);
    expect(verify("PUT", url, now, { "content-type": "image/jpeg" }).ok).toBe(false);
  });
});
