// A pass-through proxy between machines and the orchestrator that delivers a seeded fraction
// of callbacks twice — the duplicate a machine sends when its first answer was lost. Used by
// the fault tests; the duplicate is a byte-for-byte replay through the real HTTP path.
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { seededRandom } from "./fly-emulator/core.ts";

export interface CallbackProxyOptions {
  /** Where callbacks really go, e.g. http://127.0.0.1:8787 */
  target: string;
  /** Fraction of callbacks delivered a second time (after the first answer). */
  duplicateRate: number;
  seed?: number;
  /** Delay before the duplicate; default 200 ms. */
  duplicateDelayMs?: number;
}

export interface DuplicateRecord {
  path: string;
  firstStatus: number;
  duplicateStatus: number | null;
  /** The orchestrator's `outcome` for the duplicate ("ignored" when it was recognised). */
  duplicateOutcome: string | null;
}

export interface CallbackProxy {
  url: string;
  /** Callbacks received from machines. */
  received(): number;
  duplicates(): DuplicateRecord[];
  /** Resolves when every duplicate in flight has been delivered. */
  settled(): Promise<void>;
  stop(): Promise<void>;
}

export async function startCallbackProxy(options: CallbackProxyOptions): Promise<CallbackProxy> {
  const target = options.target.replace(/\/+$/, "");
  const random = seededRandom(options.seed ?? 7);
  const duplicates: DuplicateRecord[] = [];
  const inFlight = new Set<Promise<void>>();
  let received = 0;

  const forward = async (req: IncomingMessage, path: string, body: Buffer) =>
    fetch(`${target}${path}`, {
      method: req.method,
      headers: {
        ...(req.headers["content-type"] ? { "content-type": req.headers["content-type"] } : {}),
        ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
      },
      body: req.method === "GET" || req.method === "HEAD" ? undefined : body,
    });

  const server = createServer((req, res) => {
    void (async () => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const body = Buffer.concat(chunks);
      const path = req.url ?? "/";
      const isCallback = req.method === "POST" && path.startsWith("/callback/");
      if (isCallback) received++;
      let first: Response;
      try {
        first = await forward(req, path, body);
      } catch (error) {
        res.writeHead(502, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: `callback proxy: orchestrator unreachable: ${error instanceof Error ? error.message : String(error)}` }));
        return;
      }
      const text = await first.text();
      res.writeHead(first.status, { "content-type": first.headers.get("content-type") ?? "application/json" });
      res.end(text);
      if (!isCallback || !first.ok || random() >= options.duplicateRate) return;
      const record: DuplicateRecord = { path, firstStatus: first.status, duplicateStatus: null, duplicateOutcome: null };
      duplicates.push(record);
      const replay = (async () => {
        await new Promise((r) => setTimeout(r, options.duplicateDelayMs ?? 200));
        try {
          const again = await forward(req, path, body);
          record.duplicateStatus = again.status;
          const json = (await again.json().catch(() => null)) as { outcome?: unknown } | null;
          record.duplicateOutcome = typeof json?.outcome === "string" ? json.outcome : null;
        } catch {
          record.duplicateStatus = 0;
        }
      })();
      inFlight.add(replay);
      void replay.finally(() => inFlight.delete(replay));
    })().catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received: () => received,
    duplicates: () => [...duplicates],
    settled: async () => {
      while (inFlight.size > 0) await Promise.all([...inFlight]);
    },
    stop: async () => {
      await Promise.all([...inFlight]);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
