// A local S3 endpoint for R2 data (fauxqs), bound to loopback only. Used by `npm start`,
// the fly-worker tests and e2e tests. fauxqs' own startFauxqs() listens on 0.0.0.0, so the
// Fastify app is built and bound here instead.
import { mkdirSync } from "node:fs";
// First: fauxqs loads node:sqlite, whose ExperimentalWarning would open every run that starts a local S3.
import "./quiet-warnings.ts";
import { buildApp } from "fauxqs";

export interface LocalS3Options {
  /** TCP port; 0 (default) picks a free one. */
  port?: number;
  /** Interface to bind; loopback unless you mean to expose it. */
  host?: string;
  /** Buckets to create (kept if they already exist). Default: ["fanout"]. */
  buckets?: string[];
  /** Keep objects as files under this directory across restarts; in memory when unset. */
  persistDir?: string;
}

export interface LocalS3 {
  /** e.g. http://127.0.0.1:43121 — give it to clients as R2_ENDPOINT (path-style). */
  endpoint: string;
  port: number;
  buckets: string[];
  /** Any non-empty credentials work: fauxqs does not check signatures. */
  credentials: { accessKeyId: string; secretAccessKey: string };
  stop(): Promise<void>;
  /** Resolves when the server stops listening, whoever stopped it. */
  closed: Promise<void>;
}

export const LOCAL_S3_CREDENTIALS = { accessKeyId: "local-access-key", secretAccessKey: "local-secret-key" } as const;

interface FileS3PersistenceLike {
  loadS3(store: unknown): void;
  close(): void;
}

/** fauxqs exports no persistence API for a custom-bound server; its internals are loaded by path. */
async function persistentStores(dir: string) {
  const base = import.meta.resolve("fauxqs"); // .../fauxqs/dist/app.js
  const load = async <T>(path: string, name: string): Promise<T> => {
    const module: Record<string, unknown> = await import(new URL(path, base).href);
    const value = module[name];
    if (typeof value !== "function") throw new Error(`fauxqs layout changed: ${path} has no ${name}; persistDir needs updating in local/s3.ts`);
    return value as T;
  };
  type Ctor<T> = new (...args: unknown[]) => T;
  const S3Store = await load<Ctor<{ persistence?: unknown }>>("./s3/s3Store.js", "S3Store");
  const SqsStore = await load<Ctor<object>>("./sqs/sqsStore.js", "SqsStore");
  const SnsStore = await load<Ctor<object>>("./sns/snsStore.js", "SnsStore");
  const FileS3Persistence = await load<Ctor<FileS3PersistenceLike>>("./s3/fileS3Persistence.js", "FileS3Persistence");
  mkdirSync(dir, { recursive: true });
  const persistence = new FileS3Persistence(dir);
  const s3Store = new S3Store();
  persistence.loadS3(s3Store);
  s3Store.persistence = persistence;
  return { stores: { s3Store, sqsStore: new SqsStore(), snsStore: new SnsStore() }, persistence };
}

export async function startLocalS3(options: LocalS3Options = {}): Promise<LocalS3> {
  const host = options.host ?? "127.0.0.1";
  const buckets = options.buckets ?? ["fanout"];
  const persistent = options.persistDir ? await persistentStores(options.persistDir) : undefined;
  type Stores = NonNullable<Parameters<typeof buildApp>[0]>["stores"];
  const app = buildApp({ logger: false, stores: persistent?.stores as Stores });
  if (persistent) app.addHook("preClose", () => persistent.persistence.close());
  await app.listen({ host, port: options.port ?? 0 });
  const address = app.server.address();
  if (address === null || typeof address === "string") throw new Error(`local S3 did not bind a TCP port (got ${String(address)})`);
  for (const bucket of buckets) {
    const response = await app.inject({ method: "PUT", url: `/${encodeURIComponent(bucket)}` });
    // 409 = it already exists (a persisted bucket from an earlier run).
    if (response.statusCode >= 300 && response.statusCode !== 409) {
      await app.close();
      throw new Error(`local S3 could not create bucket "${bucket}": HTTP ${response.statusCode} ${response.body.slice(0, 200)}`);
    }
  }
  const urlHost = host.includes(":") ? `[${host}]` : host;
  const closed = new Promise<void>((resolve) => app.server.once("close", () => resolve()));
  return {
    endpoint: `http://${urlHost}:${address.port}`,
    port: address.port,
    buckets,
    credentials: { ...LOCAL_S3_CREDENTIALS },
    closed,
    stop: async () => {
      await app.close();
    },
  };
}
