// SigV4 verification for the local S3, as R2 checks it: header-signed and presigned requests,
// the method, the path exactly as sent (no `.`/`..` normalisation), every signed header and query
// parameter, the payload hash mode, the date, X-Amz-Expires and the credentials. The canonical
// request, string to sign and signing key come from @smithy/signature-v4 (the AWS SDK's signer);
// only reading the request apart and the refusals are ours.
//
// R2's rules: https://developers.cloudflare.com/r2/api/s3/presigned-urls/ (presigned GET, PUT,
// HEAD, DELETE; expiry 1 s to 7 days), https://developers.cloudflare.com/r2/api/s3/api/ (region
// `auto`, with `us-east-1` and empty as aliases), https://developers.cloudflare.com/r2/api/error-codes/
// (Unauthorized 401, SignatureDoesNotMatch 403, ExpiredRequest 403 since cloudflare-docs#32436).
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import { ALGORITHM_IDENTIFIER, createScope, getCanonicalHeaders, getSigningKey, SignatureV4Base, UNSIGNED_PAYLOAD } from "@smithy/signature-v4";
import type { Checksum, HttpRequest, SourceData } from "@smithy/types";

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

/** A refusal as S3 and R2 send it: the status, and the XML error's Code, Message and extra elements. */
export interface S3Refusal {
  status: number;
  code: string;
  message: string;
  extra?: Record<string, string>;
}

/** How the body is bound to the signature. */
export type PayloadMode = { kind: "unsigned" } | { kind: "sha256"; hex: string } | { kind: "streaming-unsigned" };

export type Verdict = { ok: true; presigned: boolean; payload: PayloadMode } | { ok: false; refusal: S3Refusal };

export interface IncomingSigned {
  method: string;
  /** The request target exactly as received (path and query, still percent-encoded). */
  url: string;
  headers: IncomingHttpHeaders;
}

/** SigV4 presigned URLs live 1 s to 7 days (R2 and S3 alike). */
export const MAX_PRESIGN_SECONDS = 604_800;
/** S3 refuses a header-signed request whose date is more than 15 minutes off the server's clock. */
export const MAX_SKEW_MS = 15 * 60_000;
/** R2's access key ids are 32 hex characters, its secrets 64 (the SHA-256 of an API token). */
const R2_ACCESS_KEY = /^[0-9a-f]{32}$/;
const R2_SECRET = /^[0-9a-f]{64}$/;
/** R2's bucket region is `auto`; an empty region and `us-east-1` alias to it. */
const REGIONS = new Set(["auto", "us-east-1", ""]);
const EMPTY_SHA256 = createHash("sha256").update("").digest("hex");

/** Checks that credentials look like R2's (so the local stack is configured as production is). */
export function credentialsProblem(c: S3Credentials): string | null {
  if (!R2_ACCESS_KEY.test(c.accessKeyId)) return "the access key id must be 32 lowercase hex characters, as R2's are";
  if (!R2_SECRET.test(c.secretAccessKey)) return "the secret access key must be 64 lowercase hex characters, as R2's are";
  return null;
}

/** SHA-256 (keyed: HMAC) in the shape smithy's signer takes. */
class Sha256 implements Checksum {
  readonly #secret: SourceData | undefined;
  #chunks: Buffer[] = [];
  constructor(secret?: SourceData) {
    this.#secret = secret;
  }
  update(data: Uint8Array): void {
    this.#chunks.push(Buffer.from(data));
  }
  async digest(): Promise<Uint8Array> {
    const data = Buffer.concat(this.#chunks);
    if (this.#secret === undefined) return createHash("sha256").update(data).digest();
    return createHmac("sha256", toBuffer(this.#secret)).update(data).digest();
  }
  reset(): void {
    this.#chunks = [];
  }
}
function toBuffer(data: SourceData): Buffer {
  if (typeof data === "string") return Buffer.from(data, "utf8");
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Buffer.from(data);
}

/** smithy's canonical request and string to sign, for a request as it was received. */
class Recompute extends SignatureV4Base {
  readonly #credentials: S3Credentials;
  constructor(credentials: S3Credentials) {
    // uriEscapePath false: the canonical path is given as S3 computes it (no dot-segment removal).
    super({ service: "s3", region: "auto", credentials, sha256: Sha256, uriEscapePath: false, applyChecksum: false });
    this.#credentials = credentials;
  }

  async signature(request: HttpRequest, signed: string[], payloadHash: string, longDate: string, region: string) {
    const shortDate = longDate.slice(0, 8);
    const canonicalHeaders = getCanonicalHeaders(request, undefined, new Set(signed));
    const canonicalRequest = this.createCanonicalRequest(request, canonicalHeaders, payloadHash);
    const stringToSign = await this.createStringToSign(longDate, createScope(shortDate, region, "s3"), canonicalRequest, ALGORITHM_IDENTIFIER);
    const key = await getSigningKey(Sha256, this.#credentials, shortDate, region, "s3");
    const signature = createHmac("sha256", key).update(stringToSign, "utf8").digest("hex");
    return { signature, canonicalRequest, stringToSign };
  }
}

/** RFC 3986 percent-encoding as SigV4 specifies it (every byte but A-Z a-z 0-9 - _ . ~). */
export function uriEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

const refuse = (status: number, code: string, message: string, extra?: Record<string, string>): Verdict => ({
  ok: false,
  refusal: { status, code, message, ...(extra ? { extra } : {}) },
});
const malformed = (presigned: boolean, message: string) =>
  presigned ? refuse(400, "AuthorizationQueryParametersError", message) : refuse(400, "AuthorizationHeaderMalformed", `The authorization header is malformed; ${message}`);

/** The query as name → value(s), decoded as S3 decodes it (`+` is a space). */
function parseQuery(raw: string): Record<string, string | string[]> | null {
  const query: Record<string, string | string[]> = {};
  for (const part of raw.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    let name: string, value: string;
    try {
      name = decodeURIComponent((eq < 0 ? part : part.slice(0, eq)).replace(/\+/g, " "));
      value = eq < 0 ? "" : decodeURIComponent(part.slice(eq + 1).replace(/\+/g, " "));
    } catch {
      return null;
    }
    const seen = query[name];
    query[name] = seen === undefined ? value : Array.isArray(seen) ? [...seen, value] : [seen, value];
  }
  return query;
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(",") : v;
}

function parseAmzDate(s: string | undefined): number | null {
  const m = s?.match(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/);
  if (!m) return null;
  const t = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
  return new Date(t).toISOString().replace(/[:-]|\.\d{3}/g, "") === s ? t : null;
}

const isoSeconds = (t: number) => new Date(t).toISOString().replace(/\.\d{3}Z$/, "Z");

interface Auth {
  presigned: boolean;
  credential: string;
  signedHeaders: string;
  signature: string;
  date: string | undefined;
  payloadHash: string;
  expires?: string;
}

/** Reads the SigV4 fields from the Authorization header or the query; a refusal when they are absent or malformed. */
function readAuth(headers: IncomingHttpHeaders, query: Record<string, string | string[]>): Auth | Verdict {
  const authorization = header(headers, "authorization");
  const q = (name: string) => {
    const v = query[name];
    return Array.isArray(v) ? v[0] : v;
  };
  const presigned = q("X-Amz-Signature") !== undefined || q("X-Amz-Algorithm") !== undefined || q("X-Amz-Credential") !== undefined;
  if (q("Signature") !== undefined || q("AWSAccessKeyId") !== undefined || authorization?.startsWith("AWS ")) {
    return refuse(401, "Unauthorized", "SigV2 authorization is not supported. Please use SigV4 instead.");
  }
  if (authorization !== undefined && presigned) return refuse(400, "InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified");
  if (presigned) {
    const [algorithm, credential, date, expires, signedHeaders, signature] = ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"].map(q);
    if ([algorithm, credential, date, expires, signedHeaders, signature].some((v) => v === undefined)) {
      return malformed(true, "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.");
    }
    if (algorithm !== ALGORITHM_IDENTIFIER) return malformed(true, `X-Amz-Algorithm only supports "${ALGORITHM_IDENTIFIER}"`);
    const payloadHash = q("X-Amz-Content-Sha256") ?? header(headers, "x-amz-content-sha256") ?? UNSIGNED_PAYLOAD;
    return { presigned, credential: credential!, signedHeaders: signedHeaders!, signature: signature!, date, expires, payloadHash };
  }
  if (authorization === undefined) {
    return refuse(401, "Unauthorized", "Missing authentication: sign the request with AWS Signature Version 4 (an Authorization header or a presigned URL)");
  }
  if (!authorization.startsWith(`${ALGORITHM_IDENTIFIER} `)) return refuse(400, "InvalidArgument", "Unsupported Authorization Type");
  const fields = new Map<string, string>();
  for (const part of authorization.slice(ALGORITHM_IDENTIFIER.length + 1).split(",")) {
    const eq = part.indexOf("=");
    if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const [credential, signedHeaders, signature] = ["Credential", "SignedHeaders", "Signature"].map((f) => fields.get(f));
  if (credential === undefined || signedHeaders === undefined || signature === undefined) {
    return malformed(false, "it must name Credential, SignedHeaders and Signature");
  }
  const payloadHash = header(headers, "x-amz-content-sha256");
  if (payloadHash === undefined) return refuse(400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256");
  return { presigned, credential, signedHeaders, signature, date: header(headers, "x-amz-date"), payloadHash };
}

function payloadMode(hash: string): PayloadMode | Verdict {
  if (hash === UNSIGNED_PAYLOAD) return { kind: "unsigned" };
  if (hash === "STREAMING-UNSIGNED-PAYLOAD-TRAILER") return { kind: "streaming-unsigned" };
  if (/^[0-9a-f]{64}$/.test(hash)) return { kind: "sha256", hex: hash };
  // R2 does not implement signed chunks (soto-project/soto#643: "STREAMING-AWS4-HMAC-SHA256-PAYLOAD not implemented").
  if (hash.startsWith("STREAMING-AWS4-HMAC-SHA256-PAYLOAD")) return refuse(501, "NotImplemented", `${hash} not implemented`);
  return refuse(400, "InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, or a valid sha256 value.");
}

/**
 * Verifies a request's SigV4 signature against the store's one key pair. `now` is the server's
 * clock. The request's body hash (payload mode `sha256`) is for the caller to check once read.
 */
export async function verifySigV4(req: IncomingSigned, credentials: S3Credentials, now = Date.now()): Promise<Verdict> {
  const q = req.url.indexOf("?");
  const rawPath = q < 0 ? req.url : req.url.slice(0, q);
  let canonicalPath: string;
  try {
    // The path exactly as sent, decoded once and encoded as SigV4 says; `.` and `..` stay.
    canonicalPath = uriEncode(decodeURIComponent(rawPath)).replace(/%2F/g, "/");
  } catch {
    return refuse(400, "InvalidURI", "Couldn't parse the specified URI.");
  }
  const query = parseQuery(q < 0 ? "" : req.url.slice(q + 1));
  if (query === null) return refuse(400, "InvalidArgument", "The query string is not validly percent-encoded");
  const auth = readAuth(req.headers, query);
  if ("ok" in auth) return auth;
  const { presigned } = auth;

  const parts = auth.credential.split("/");
  if (parts.length !== 5) return malformed(presigned, `the Credential ${JSON.stringify(auth.credential)} must be <access key>/<date>/<region>/s3/aws4_request`);
  const [accessKeyId, day, region, service, terminator] = parts;
  if (accessKeyId.length !== credentials.accessKeyId.length) {
    return refuse(400, "InvalidArgument", `Credential access key has length ${accessKeyId.length}, should be ${credentials.accessKeyId.length}`);
  }
  if (accessKeyId !== credentials.accessKeyId) return refuse(401, "Unauthorized", `The access key id ${accessKeyId} is not known to this store`);
  const signedAt = parseAmzDate(auth.date);
  if (signedAt === null) return refuse(403, "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header");
  if (day !== auth.date!.slice(0, 8)) return malformed(presigned, "Invalid credential date. Date is not the same as X-Amz-Date.");
  if (!REGIONS.has(region)) return malformed(presigned, `the region '${region}' is wrong; expecting 'auto'`);
  if (service !== "s3" || terminator !== "aws4_request") return malformed(presigned, `the Credential scope must end in /s3/aws4_request, not /${service}/${terminator}`);

  const signed = auth.signedHeaders.split(";");
  if (!signed.includes("host")) return malformed(presigned, "SignedHeaders must include host");
  const unsigned = Object.keys(req.headers).filter((h) => h.startsWith("x-amz-") && !signed.includes(h));
  if (unsigned.length > 0) {
    return refuse(403, "AccessDenied", "There were headers present in the request which were not signed", { HeadersNotSigned: unsigned.join(", ") });
  }
  const mode = payloadMode(auth.payloadHash);
  if ("ok" in mode) return mode;

  const headers: Record<string, string> = {};
  for (const name of signed) {
    const value = header(req.headers, name);
    if (value === undefined) return refuse(403, "SignatureDoesNotMatch", `The request does not carry the signed header ${name}`);
    headers[name] = value;
  }
  const request: HttpRequest = { method: req.method, protocol: "http:", hostname: "", path: canonicalPath, query, headers };
  const expected = await new Recompute(credentials).signature(request, signed, auth.payloadHash, auth.date!, region);
  const given = Buffer.from(auth.signature, "utf8");
  const want = Buffer.from(expected.signature, "utf8");
  if (given.length !== want.length || !timingSafeEqual(given, want)) {
    return refuse(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your key and signing method.", {
      StringToSign: expected.stringToSign,
      CanonicalRequest: expected.canonicalRequest,
    });
  }

  if (presigned) {
    if (!/^[0-9]+$/.test(auth.expires!)) return malformed(true, "X-Amz-Expires should be a number");
    const seconds = Number(auth.expires);
    if (seconds < 1) return malformed(true, "X-Amz-Expires must be at least 1 second");
    if (seconds > MAX_PRESIGN_SECONDS) return malformed(true, `X-Amz-Expires must be less than a week (in seconds) that is ${MAX_PRESIGN_SECONDS}`);
    if (signedAt > now + MAX_SKEW_MS) return refuse(403, "AccessDenied", "Request is not valid yet", { ServerTime: isoSeconds(now) });
    if (now > signedAt + seconds * 1000) {
      return refuse(403, "ExpiredRequest", "Request has expired", { "X-Amz-Expires": auth.expires!, Expires: isoSeconds(signedAt + seconds * 1000), ServerTime: isoSeconds(now) });
    }
  } else if (Math.abs(now - signedAt) > MAX_SKEW_MS) {
    return refuse(403, "RequestTimeTooSkewed", "The difference between the request time and the server's time is too large.", {
      RequestTime: isoSeconds(signedAt),
      ServerTime: isoSeconds(now),
    });
  }
  return { ok: true, presigned, payload: mode };
}

export { EMPTY_SHA256 };

/** The XML body of a refusal, as S3 and R2 write it. */
export function refusalXml(r: S3Refusal, resource: string, requestId: string): string {
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  const extra = Object.entries(r.extra ?? {})
    .map(([k, v]) => `<${k}>${esc(v)}</${k}>`)
    .join("");
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${r.code}</Code><Message>${esc(r.message)}</Message>${extra}<Resource>${esc(resource)}</Resource><RequestId>${requestId}</RequestId></Error>`;
}
