// Request forwarding for every local HTTP proxy: the callback proxy of the fault tests
// (local/callback-proxy.ts), the soak's callback faults and its S3 tap (bench/soak/). Each
// listens on a free loopback port and sends what it receives on to the real service.
//
// Two ways to forward. Callbacks are small JSON a proxy may hold, replay or rewrite, so they are
// read whole and sent on with fetch, carrying only their content type and credential. S3 traffic
// is streamed with node:http, every header kept: bodies are whole scans, and the AWS SDK sends
// `Expect: 100-continue` on large uploads, which fetch (undici) refuses to send.
import { createServer, request, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface LoopbackServer {
  /** e.g. http://127.0.0.1:41234 */
  url: string;
  /** Drops open connections (a machine may hold one) and resolves once the server is closed. */
  close(): Promise<void>;
}

/**
 * Serves `handler` on a free loopback port. An async handler that fails answers 500 (or ends a
 * response already begun), so a proxy's client never hangs on it.
 */
export async function listenLoopback(
  handler: (req: IncomingMessage, res: ServerResponse) => unknown,
  options: { keepAliveTimeoutMs?: number } = {},
): Promise<LoopbackServer> {
  const server = createServer((req, res) => {
    const done = handler(req, res);
    if (done instanceof Promise) {
      done.catch(() => {
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
    }
  });
  if (options.keepAliveTimeoutMs !== undefined) server.keepAliveTimeout = options.keepAliveTimeoutMs;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A request as a buffering proxy holds it: what it sends on, once or again. */
export interface Forwarded {
  method: string;
  /** Path and query, e.g. /callback/b1/tiff-000001 */
  path: string;
  headers: Record<string, string>;
  body: Buffer;
}

/** Reads a request whole. It carries on only its content type and credential, nothing else of the client's. */
export async function readForwarded(req: IncomingMessage): Promise<Forwarded> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const headers: Record<string, string> = {};
  if (req.headers["content-type"]) headers["content-type"] = req.headers["content-type"];
  if (req.headers.authorization) headers.authorization = req.headers.authorization;
  return { method: req.method ?? "GET", path: req.url ?? "/", headers, body: Buffer.concat(chunks) };
}

/** Sends a held request on to `target` (GET and HEAD without a body); with `timeoutMs`, gives up after it. */
export function forward(target: string, held: Forwarded, timeoutMs?: number): Promise<Response> {
  const { method, path, headers, body } = held;
  return fetch(`${target}${path}`, {
    method,
    headers,
    body: method === "GET" || method === "HEAD" ? undefined : body,
    signal: timeoutMs === undefined ? undefined : AbortSignal.timeout(timeoutMs),
  });
}

/**
 * Forwards a held request and answers the client with the upstream's status, content type and
 * body. Resolves to the status, or null when the upstream could not be reached (the client got a 502).
 */
export async function relay(res: ServerResponse, target: string, held: Forwarded, timeoutMs?: number): Promise<number | null> {
  try {
    const answer = await forward(target, held, timeoutMs);
    const text = await answer.text();
    res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/json" });
    res.end(text);
    return answer.status;
  } catch (error) {
    badGateway(res, "callback proxy: orchestrator unreachable", error);
    return null;
  }
}

/** Hop-by-hop headers are this hop's own: forwarding the upstream's `keep-alive: timeout=72` made
 * clients reuse sockets this server had closed after its 5 s (ECONNRESET on downloads). */
const HOP_BY_HOP = ["connection", "keep-alive", "transfer-encoding"];

/**
 * Streams a request to `upstream` and the answer back, every header kept (Host rewritten to the
 * upstream's, unless `keepHost`: a SigV4 signature covers the Host the client connected to).
 * `onAnswer` sees the upstream's status before the body flows.
 */
export function pipeThrough(
  req: IncomingMessage,
  res: ServerResponse,
  upstream: URL,
  options: { unreachable: string; keepHost?: boolean; onAnswer?: (status: number) => void },
): void {
  const upstreamReq = request(
    {
      host: upstream.hostname,
      port: upstream.port,
      method: req.method ?? "GET",
      path: req.url,
      headers: options.keepHost ? req.headers : { ...req.headers, host: upstream.host },
    },
    (upstreamRes) => {
      const status = upstreamRes.statusCode ?? 0;
      options.onAnswer?.(status);
      const headers = { ...upstreamRes.headers };
      for (const h of HOP_BY_HOP) delete headers[h];
      res.writeHead(status, headers);
      upstreamRes.pipe(res);
    },
  );
  upstreamReq.on("error", (error) => badGateway(res, options.unreachable, error));
  req.pipe(upstreamReq);
}

/** 502 with a JSON body saying which proxy could not reach what, and why. */
function badGateway(res: ServerResponse, what: string, error: unknown): void {
  if (!res.headersSent) res.writeHead(502, { "content-type": "application/json" });
  res.end(JSON.stringify({ error: `${what}: ${error instanceof Error ? error.message : String(error)}` }));
}
