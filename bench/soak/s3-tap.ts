// A pass-through proxy in front of the local S3 that records every object write by key: the
// soak's proof that no output was written twice and nothing outside the batch was written.
// Signatures keep working through it: it forwards the Host the client signed (the local S3 checks
// every signature, host included).
import { listenLoopback, pipeThrough } from "../../local/forward.ts";

export interface ObjectWrite {
  key: string;
  /** The credential that wrote it: a presigned URL's X-Amz-Signature, or "header-signed". */
  credential: string;
  /** When the URL was signed (X-Amz-Date), which tells one attempt's URL from another's. */
  signedAt: string | null;
  status: number;
  at: number;
}

export interface S3Tap {
  endpoint: string;
  /** Successful writes (2xx): single PUTs and completed multipart uploads, in order. */
  writes(): ObjectWrite[];
  /** Every request seen, by method. */
  requests(): Record<string, number>;
  stop(): Promise<void>;
}

export async function startS3Tap(upstream: string, bucket: string): Promise<S3Tap> {
  const target = new URL(upstream);
  const writes: ObjectWrite[] = [];
  const byMethod: Record<string, number> = {};
  const server = await listenLoopback(
    (req, res) => {
      const url = new URL(req.url ?? "/", "http://tap");
      const method = req.method ?? "GET";
      byMethod[method] = (byMethod[method] ?? 0) + 1;
      const prefix = `/${encodeURIComponent(bucket)}/`;
      const key = url.pathname.startsWith(prefix) ? url.pathname.slice(prefix.length).split("/").map(decodeURIComponent).join("/") : null;
      // A write is a PUT of a whole object or the POST completing a multipart upload; parts and copies are not.
      const isWrite =
        key !== null &&
        ((method === "PUT" && !url.searchParams.has("partNumber") && !req.headers["x-amz-copy-source"]) ||
          (method === "POST" && url.searchParams.has("uploadId")));
      pipeThrough(req, res, target, {
        unreachable: "s3 tap: upstream unreachable",
        keepHost: true,
        onAnswer: (status) => {
          if (!isWrite || status < 200 || status >= 300) return;
          writes.push({
            key: key!,
            credential: url.searchParams.get("X-Amz-Signature") ?? "header-signed",
            signedAt: url.searchParams.get("X-Amz-Date"),
            status,
            at: Date.now(),
          });
        },
      });
    },
    { keepAliveTimeoutMs: 65_000 },
  );
  return {
    endpoint: server.url,
    writes: () => [...writes],
    requests: () => ({ ...byMethod }),
    stop: () => server.close(),
  };
}
