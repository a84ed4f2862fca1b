// A loopback stand-in for the orchestrator's POST /outputs/:batchId/:taskId, as engine/outcomes.ts
// answers it: checks the bearer token, reserves the phase's first free candidate for pages 2…pages
// (idempotent), and answers a presigned PUT for each with the headers it signs (content type, writer,
// If-None-Match: *, as engine/outputs.ts outputAccess makes them for a fresh key) — real SigV4 URLs.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Config } from "../../../orchestrator/config.ts";
import { WRITER_METADATA } from "../../../shared/keys.ts";
import { presign } from "../../../orchestrator/engine/presign.ts";
import { ReserveRequest } from "../../../shared/contracts.ts";

export interface OutputsServer {
  urlFor(batchId: string, taskId: string): string;
  /** Registers a task: its token, page 1's key and the phase's candidates for page n. */
  task(batchId: string, taskId: string, t: { token: string; firstKey: string; candidates: (firstKey: string, page: number) => Iterable<string>; contentType: (page: number) => string }): void;
  /** Every reservation asked for, in order: `batch/task pages`. */
  asked: string[];
  /** Keys reserved per task, page 1 first. */
  reserved(batchId: string, taskId: string): string[];
  close(): Promise<void>;
}

/** The headers a fresh output's PUT URL signs (engine/outputs.ts outputAccess, no object there yet). */
export function outputHeaders(writer: string, contentType: string): Record<string, string> {
  return { "content-type": contentType, [`x-amz-meta-${WRITER_METADATA}`]: writer, "if-none-match": "*" };
}

export async function startOutputsServer(storage: () => Config): Promise<OutputsServer> {
  const tasks = new Map<string, { token: string; firstKey: string; candidates: (firstKey: string, page: number) => Iterable<string>; contentType: (page: number) => string; keys: Map<number, string> }>();
  const taken = new Set<string>();
  const asked: string[] = [];
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const m = /^\/outputs\/([^/]+)\/([^/]+)$/.exec(req.url ?? "");
    const t = m ? tasks.get(`${decodeURIComponent(m[1])}/${decodeURIComponent(m[2])}`) : undefined;
    const answer = (status: number, body: unknown) => res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    if (!m || !t) return answer(404, { error: "unknown batch or task" });
    if (req.headers.authorization !== `Bearer ${t.token}`) return answer(401, { error: "bad token" });
    const parsed = ReserveRequest.safeParse(JSON.parse(Buffer.concat(chunks).toString("utf8") || "null"));
    if (!parsed.success) return answer(400, { error: "bad body" });
    asked.push(`${m[1]}/${m[2]} ${parsed.data.pages}`);
    const outputs = [];
    for (let page = 2; page <= parsed.data.pages; page++) {
      let key = t.keys.get(page);
      if (!key) {
        for (const candidate of t.candidates(t.firstKey, page)) {
          if (taken.has(candidate)) continue;
          key = candidate;
          break;
        }
        taken.add(key!);
        t.keys.set(page, key!);
      }
      const headers = outputHeaders(`${m[1]}/${m[2]}`, t.contentType(page));
      outputs.push({ page, r2_key: key!, url: await presign(storage(), "PUT", key!, Date.now() + 600_000, Date.now(), headers), headers });
    }
    answer(200, { batch_id: m[1], task_id: m[2], attempt: 1, outputs });
  };
  const server = createServer((req, res) => void handle(req, res).catch(() => res.destroy()));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    urlFor: (b, t) => `http://127.0.0.1:${port}/outputs/${encodeURIComponent(b)}/${encodeURIComponent(t)}`,
    task(batchId, taskId, t) {
      tasks.set(`${batchId}/${taskId}`, { ...t, keys: new Map([[1, t.firstKey]]) });
      taken.add(t.firstKey);
    },
    asked,
    reserved: (b, t) => {
      const keys = tasks.get(`${b}/${t}`)?.keys ?? new Map<number, string>();
      return [...keys.entries()].sort((x, y) => x[0] - y[0]).map(([, k]) => k);
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((e) => (e ? reject(e) : resolve()));
      }),
  };
}
