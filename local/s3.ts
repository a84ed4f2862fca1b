// A local S3 endpoint for R2 data, as strict as R2 where it matters to fanout: fauxqs stores the
// objects; hooks in front of its routes refuse what R2 refuses — a request without a valid SigV4
// signature from the one key pair (local/s3-auth.ts), a body that does not match its signed hash,
// a key over 1,024 bytes, a conditional PUT whose condition fails. Used by `npm start`, the demo,
// the fly-worker tests and the e2e tests. Bound to loopback (fauxqs' own startFauxqs() listens on
// 0.0.0.0, so its Fastify app is built and bound here instead).
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { Transform } from "node:stream";
// Before fauxqs: it loads node:sqlite, whose ExperimentalWarning would open every run that starts a local S3.
import "./quiet-warnings.ts";
import { buildApp } from "fauxqs";
import { MAX_KEY_BYTES } from "../shared/keys.ts";
import { credentialsProblem, EMPTY_SHA256, refusalXml, verifySigV4, type PayloadMode, type S3Credentials, type S3Refusal } from "./s3-auth.ts";

export type { S3Credentials } from "./s3-auth.ts";

export interface LocalS3Options {
  /** TCP port; 0 (default) picks a free one. */
  port?: number;
  /** Interface to bind; loopback unless you mean to expose it. */
  host?: string;
  /** Buckets to create (kept if they already exist). Default: ["fanout"]. */
  buckets?: string[];
  /** Keep objects as files under this directory across restarts; in memory when unset. */
  persistDir?: string;
  /** The one key pair the store accepts. Default: LOCAL_S3_CREDENTIALS from the environment, else a fresh pair. */
  credentials?: S3Credentials;
}

export interface LocalS3 {
  /** e.g. http://127.0.0.1:43121 — give it to clients as R2_ENDPOINT (path-style). */
  endpoint: string;
  port: number;
  buckets: string[];
  /** The only credentials the store accepts (R2-shaped: 32 and 64 hex characters). */
  credentials: S3Credentials;
  stop(): Promise<void>;
  /** Resolves when the server stops listening, whoever stopped it. */
  closed: Promise<void>;
}

/** A fresh R2-shaped key pair: a 32-hex access key id and a 64-hex secret. */
export function generateS3Credentials(): S3Credentials {
  return { accessKeyId: randomBytes(16).toString("hex"), secretAccessKey: randomBytes(32).toString("hex") };
}

/** `LOCAL_S3_CREDENTIALS=<access key id>:<secret>` (R2-shaped), or null when unset. Throws naming what is wrong. */
export function credentialsFromEnv(value: string | undefined): S3Credentials | null {
  if (value === undefined || value === "") return null;
  const colon = value.indexOf(":");
  if (colon < 0) throw new Error("LOCAL_S3_CREDENTIALS must be <access key id>:<secret access key>");
  const credentials = { accessKeyId: value.slice(0, colon), secretAccessKey: value.slice(colon + 1) };
  const problem = credentialsProblem(credentials);
  if (problem) throw new Error(`LOCAL_S3_CREDENTIALS: ${problem}`);
  return credentials;
}

interface FileS3PersistenceLike {
  loadS3(store: unknown): void;
  close(): void;
}

/** The part of fauxqs' S3Store the conditional-write check reads. */
interface S3StoreLike {
  persistence?: unknown;
  createBucket(name: string): void;
  headObject(bucket: string, key: string): { etag: string };
}

/** fauxqs exports neither its stores nor a persistence API for a custom-bound server; its internals are loaded by path. */
async function loadStores(dir: string | undefined) {
  const base = import.meta.resolve("fauxqs"); // .../fauxqs/dist/app.js
  const load = async <T>(path: string, name: string): Promise<T> => {
    const module: Record<string, unknown> = await import(new URL(path, base).href);
    const value = module[name];
    if (typeof value !== "function") throw new Error(`fauxqs layout changed: ${path} has no ${name}; update local/s3.ts`);
    return value as T;
  };
  type Ctor<T> = new (...args: unknown[]) => T;
  const S3Store = await load<Ctor<S3StoreLike>>("./s3/s3Store.js", "S3Store");
  const s3Store = new S3Store();
  if (dir === undefined) return { s3Store, persistence: undefined };
  const FileS3Persistence = await load<Ctor<FileS3PersistenceLike>>("./s3/fileS3Persistence.js", "FileS3Persistence");
  mkdirSync(dir, { recursive: true });
  const persistence = new FileS3Persistence(dir);
  persistence.loadS3(s3Store);
  s3Store.persistence = persistence;
  return { s3Store, persistence };
}

type App = ReturnType<typeof buildApp>;

export async function startLocalS3(options: LocalS3Options = {}): Promise<LocalS3> {
  const host = options.host ?? "127.0.0.1";
  const buckets = options.buckets ?? ["fanout"];
  const credentials = options.credentials ?? credentialsFromEnv(process.env.LOCAL_S3_CREDENTIALS) ?? generateS3Credentials();
  const problem = credentialsProblem(credentials);
  if (problem) throw new Error(`local S3 credentials: ${problem}`);
  const { s3Store, persistence } = await loadStores(options.persistDir);
  type Stores = NonNullable<Parameters<typeof buildApp>[0]>["stores"];
  const app = buildApp({ logger: false, stores: { s3Store } as Stores });
  if (persistence) app.addHook("preClose", () => persistence.close());
  enforceR2Rules(app, s3Store, credentials);
  await app.listen({ host, port: options.port ?? 0 });
  const address = app.server.address();
  if (address === null || typeof address === "string") throw new Error(`local S3 did not bind a TCP port (got ${String(address)})`);
  try {
    for (const bucket of buckets) s3Store.createBucket(bucket); // kept when it already exists (persisted)
  } catch (error) {
    await app.close();
    throw new Error(`local S3 could not create a bucket of ${buckets.join(", ")}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  const urlHost = host.includes(":") ? `[${host}]` : host;
  const closed = new Promise<void>((resolve) => app.server.once("close", () => resolve()));
  return {
    endpoint: `http://${urlHost}:${address.port}`,
    port: address.port,
    buckets,
    credentials: { ...credentials },
    closed,
    stop: async () => {
      await app.close();
    },
  };
}

/** Bucket and key of an object request, from the routed params (what fauxqs stores under). */
function target(params: unknown): { bucket: string; key: string } | null {
  const p = params as { bucket?: string; "*"?: string } | undefined;
  return p?.bucket !== undefined && p["*"] ? { bucket: p.bucket, key: p["*"] } : null;
}

/** Every request passes R2's checks before fauxqs sees it. */
function enforceR2Rules(app: App, store: S3StoreLike, credentials: S3Credentials): void {
  const payloads = new WeakMap<object, PayloadMode>();
  const digests = new WeakMap<object, string>();
  interface Reply {
    code(n: number): Reply;
    header(k: string, v: string): Reply;
    send(b?: string): Reply;
  }
  const send = <R extends Reply>(reply: R, method: string, url: string, r: S3Refusal): R => {
    const requestId = randomUUID().replaceAll("-", "").slice(0, 16).toUpperCase();
    reply.code(r.status).header("x-amz-request-id", requestId);
    // A HEAD answer has no body: the status is all a client sees (as from S3 and R2).
    if (method === "HEAD") reply.send();
    else reply.header("content-type", "application/xml").send(refusalXml(r, url.split("?")[0], requestId));
    return reply;
  };

  app.addHook("onRequest", async (request, reply) => {
    const verdict = await verifySigV4({ method: request.method, url: request.originalUrl, headers: request.headers }, credentials);
    if (!verdict.ok) return send(reply, request.method, request.originalUrl, verdict.refusal);
    const object = target(request.params);
    const bytes = object ? Buffer.byteLength(object.key, "utf8") : 0;
    if (bytes > MAX_KEY_BYTES) {
      return send(reply, request.method, request.originalUrl, {
        status: 400,
        code: "KeyTooLongError",
        message: "Your key is too long",
        extra: { Size: String(bytes), MaxSizeAllowed: String(MAX_KEY_BYTES) },
      });
    }
    payloads.set(request, verdict.payload);
  });

  // A body signed by its hash is hashed as it streams in; the hash is compared before the handler runs.
  app.addHook("preParsing", async (request, _reply, payload) => {
    if (payloads.get(request)?.kind !== "sha256") return payload;
    const hash = createHash("sha256");
    let received = 0;
    const tap = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        hash.update(chunk);
        received += chunk.length;
        Object.assign(tap, { receivedEncodedLength: received });
        done(null, chunk);
      },
      flush(done) {
        digests.set(request, hash.digest("hex"));
        done();
      },
    });
    payload.on("error", (error) => tap.destroy(error));
    return payload.pipe(tap);
  });

  // Synchronous, so the existence check and fauxqs' write happen in the same turn of the event loop.
  app.addHook("preHandler", (request, reply, done) => {
    const mode = payloads.get(request);
    if (mode?.kind === "sha256" && (digests.get(request) ?? EMPTY_SHA256) !== mode.hex) {
      send(reply, request.method, request.originalUrl, {
        status: 400,
        code: "XAmzContentSHA256Mismatch",
        message: "The provided 'x-amz-content-sha256' header does not match what was computed.",
        extra: { ClientComputedContentSHA256: mode.hex, S3ComputedContentSHA256: digests.get(request) ?? EMPTY_SHA256 },
      });
      return;
    }
    const failed = conditionFailed(request.method, request.params, request.query, request.headers, store);
    if (failed) {
      send(reply, request.method, request.originalUrl, {
        status: 412,
        code: "PreconditionFailed",
        message: "At least one of the pre-conditions you specified did not hold",
        extra: { Condition: failed },
      });
      return;
    }
    done();
  });
}

/**
 * PutObject's conditional headers as R2 documents them
 * (developers.cloudflare.com/r2/api/s3/conditional-operations/): If-None-Match `*` or ETags
 * (fails when the current object matches; succeeds when there is none), If-Match `*` or ETags
 * (fails when there is no object or it matches none). The header that failed, or null.
 */
function conditionFailed(method: string, params: unknown, query: unknown, headers: Record<string, string | string[] | undefined>, store: S3StoreLike): string | null {
  const object = target(params);
  const q = (query ?? {}) as Record<string, unknown>;
  if (method !== "PUT" || !object || "uploadId" in q || "renameObject" in q || headers["x-amz-copy-source"] !== undefined) return null;
  const ifNoneMatch = headers["if-none-match"];
  const ifMatch = headers["if-match"];
  if (ifNoneMatch === undefined && ifMatch === undefined) return null;
  let etag: string | null = null;
  try {
    etag = store.headObject(object.bucket, object.key).etag;
  } catch {
    etag = null; // no such key (or bucket: fauxqs answers that itself)
  }
  const matches = (list: string | string[]) => {
    const values = String(list).split(",").map((v) => v.trim().replace(/^W\//, ""));
    return etag !== null && (values.includes("*") || values.includes(etag));
  };
  if (ifNoneMatch !== undefined && matches(ifNoneMatch)) return "If-None-Match";
  if (ifMatch !== undefined && !matches(ifMatch)) return "If-Match";
  return null;
}
