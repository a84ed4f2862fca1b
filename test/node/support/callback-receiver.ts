// A real HTTP server on loopback that plays the orchestrator's callback endpoint: records
// every request and answers with a scripted status (e.g. 503 twice, then 200).
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface ReceivedCallback {
  method: string;
  /** Path and query, e.g. /callback/batch-1/tiff-000001 */
  path: string;
  authorization: string | undefined;
  contentType: string | undefined;
  /** Parsed JSON body, or the raw text when it is not JSON. */
  body: unknown;
  receivedAt: number;
}

/** How to answer one request: a status code, or "drop" to destroy the socket unanswered. */
export type ScriptedResponse = number | "drop";

export interface CallbackReceiver {
  /** Base URL, e.g. http://127.0.0.1:40111 */
  baseUrl: string;
  /** The orchestrator-shaped callback URL for a task. */
  urlFor(batchId: string, taskId: string): string;
  received: ReceivedCallback[];
  /** Answers the next requests in order with these; afterwards `fallback` (default 200). */
  script(responses: ScriptedResponse[], fallback?: ScriptedResponse): void;
  /** Like script(), for one task's callback path only (safe with concurrent tests). */
  scriptFor(batchId: string, taskId: string, responses: ScriptedResponse[], fallback?: ScriptedResponse): void;
  /** Requests whose path matches `/callback/:batchId/:taskId`. */
  forTask(batchId: string, taskId: string): ReceivedCallback[];
  /** Resolves with the first request for the task (waits up to `timeoutMs`). */
  waitFor(batchId: string, taskId: string, timeoutMs?: number): Promise<ReceivedCallback>;
  reset(): void;
  close(): Promise<void>;
}

export async function startCallbackReceiver(): Promise<CallbackReceiver> {
  const received: ReceivedCallback[] = [];
  let queue: ScriptedResponse[] = [];
  let fallback: ScriptedResponse = 200;
  const perTask = new Map<string, { queue: ScriptedResponse[]; fallback: ScriptedResponse }>();
  const pathFor = (batchId: string, taskId: string) => `/callback/${encodeURIComponent(batchId)}/${encodeURIComponent(taskId)}`;
  const waiters = new Set<() => void>();

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON: kept as text so the test can show what arrived
    }
    received.push({
      method: req.method ?? "",
      path: req.url ?? "",
      authorization: req.headers.authorization,
      contentType: req.headers["content-type"],
      body,
      receivedAt: Date.now(),
    });
    for (const wake of waiters) wake();
    const own = perTask.get(req.url ?? "");
    const answer = own ? (own.queue.shift() ?? own.fallback) : (queue.shift() ?? fallback);
    if (answer === "drop") {
      req.socket.destroy();
      return;
    }
    res.writeHead(answer, { "content-type": "application/json" });
    res.end(JSON.stringify(answer < 300 ? { ok: true } : { error: `scripted ${answer}` }));
  };
  const server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const baseUrl = `http://127.0.0.1:${port}`;
  const forTask = (batchId: string, taskId: string) => received.filter((r) => r.path === pathFor(batchId, taskId));

  return {
    baseUrl,
    urlFor: (batchId, taskId) => `${baseUrl}${pathFor(batchId, taskId)}`,
    received,
    script(responses, fb = 200) {
      queue = [...responses];
      fallback = fb;
    },
    scriptFor(batchId, taskId, responses, fb = 200) {
      perTask.set(pathFor(batchId, taskId), { queue: [...responses], fallback: fb });
    },
    forTask,
    waitFor(batchId, taskId, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = forTask(batchId, taskId)[0];
          if (!hit) return false;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(hit);
          return true;
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no callback for ${batchId}/${taskId} within ${timeoutMs} ms (got ${received.length} for other tasks)`));
        }, timeoutMs);
        if (!check()) waiters.add(check);
      });
    },
    reset() {
      received.length = 0;
      queue = [];
      fallback = 200;
      perTask.clear();
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((error) => (error ? reject(error) : resolve()));
      }),
  };
}
