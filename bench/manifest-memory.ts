// Memory and responsiveness of manifest discovery at 300,000 entries (issue 13 point 3): starts
// the local stack (wrangler dev + local S3 + Fly emulator), uploads a generated manifest, submits
// it, samples workerd's RSS every 100 ms and times GET /status every 250 ms until the batch is
// DONE. The files are not TIFFs, so no task is planned and no machine is created. Finalisation
// writes the 300,000-line file list to the local S3 as an NDJSON object and POSTs its key, counts
// and checksum to a receiver here (WORKER_URL): the bench prints the POST's size (target < 64 KB),
// the object's size and parts, and checks its lines and composite checksum.
// Besides process RSS it samples the Worker isolate's V8 heap through workerd's inspector (the
// figure a Worker's 128 MB limit applies to) and the size of the Durable Object's SQLite files.
//   node bench/manifest-memory.ts            (MANIFEST_ENTRIES=300000 by default)
// Targets: RSS growth < 64 MB, every /status answer < 1 s. Both memory figures are printed: RSS
// is the whole workerd process (V8 heap pages committed for garbage not yet collected, SQLite's
// page cache, malloc's high-water mark); the isolate's heap is what a Worker's 128 MB limit counts.
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, readlinkSync, statSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { availableParallelism, loadavg } from "node:os";
import { join } from "node:path";
import { GetObjectCommand } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { FinalisedBatch, MAX_FINALISATION_BODY_BYTES } from "../shared/finalisation.ts";
import { startStack, type Stack } from "../local/stack.ts";
import { localS3Client } from "../test/node/support/s3.ts";

const ENTRIES = Number(process.env.MANIFEST_ENTRIES ?? 300_000);
const PER_DIRECTORY = 10_000;
const BATCH_ID = `mem-${Date.now()}`;
const MANIFEST_KEY = `batches/${BATCH_ID}/manifest.json`;
const TIMEOUT_MS = Number(process.env.MANIFEST_BENCH_TIMEOUT_MS ?? 20 * 60_000);
const MB = 1024 * 1024;

/** A manifest shaped like the ingest pipeline's: ~135 bytes per entry, 40 MB at 300,000. */
function manifestText(): string {
  const parts: string[] = [`{"batch_id":${JSON.stringify(BATCH_ID)},"directories":[`];
  for (let d = 0; d * PER_DIRECTORY < ENTRIES; d++) {
    if (d > 0) parts.push(",");
    parts.push(`{"directory_path":"/scans/box-${d}","processing_config":{"ocr":true,"dpi":600},"files":[`);
    const n = Math.min(PER_DIRECTORY, ENTRIES - d * PER_DIRECTORY);
    for (let i = 0; i < n; i++) {
      const name = `page-${String(i).padStart(6, "0")}.txt`;
      const entry = {
        r2_key: `batches/${BATCH_ID}/box-${d}/${name}`,
        logical_path: `/scans/box-${d}/${name}`,
        file_name: name,
        file_size: 1000 + i,
        content_type: "text/plain",
        cid: `bafy${String(d * PER_DIRECTORY + i).padStart(10, "0")}`,
      };
      parts.push(i > 0 ? `,${JSON.stringify(entry)}` : JSON.stringify(entry));
    }
    parts.push("]}");
  }
  parts.push("]}");
  return parts.join("");
}

/** workerd processes started below this process (wrangler dev's children), not other users'. */
function ourWorkerdPids(): number[] {
  const parent = new Map<number, number>();
  const names = new Map<number, string>();
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      names.set(pid, stat.slice(stat.indexOf("(") + 1, close));
      parent.set(pid, Number(stat.slice(close + 2).split(" ")[1]));
    } catch {
      // gone meanwhile
    }
  }
  const ours = (pid: number): boolean => {
    for (let p = parent.get(pid); p !== undefined && p > 1; p = parent.get(p)) if (p === process.pid) return true;
    return false;
  };
  return [...names].filter(([pid, name]) => name === "workerd" && ours(pid)).map(([pid]) => pid);
}

/** The TCP ports `pid` listens on (from /proc/net/tcp and its socket inodes). */
function listeningPorts(pid: number): number[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = readlinkSync(`/proc/${pid}/fd/${fd}`).match(/^socket:\[(\d+)\]$/);
      if (m) inodes.add(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  const ports: number[] = [];
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[3] === "0A" && inodes.has(f[9])) ports.push(parseInt(f[1].split(":")[1], 16));
  }
  return ports;
}

/**
 * wrangler dev's inspector proxy (the WebSocket a DevTools client would open): it holds the one
 * session workerd allows per isolate and shares it, where a direct connection to workerd's
 * --inspector-addr would close wrangler's session and be closed by its reconnect in turn.
 */
async function isolateInspector(pids: number[]): Promise<string | null> {
  for (const pid of pids) {
    for (const port of listeningPorts(pid)) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/json/list`, { signal: AbortSignal.timeout(2000) });
        if (!res.ok) continue;
        const targets = (await res.json()) as { description?: string; webSocketDebuggerUrl?: string }[];
        const proxy = targets.find((t) => t.description === "workers" && t.webSocketDebuggerUrl);
        if (proxy?.webSocketDebuggerUrl) return proxy.webSocketDebuggerUrl;
      } catch {
        // not the inspector proxy
      }
    }
  }
  return null;
}

interface Heap {
  /** V8 heap in use by live and not-yet-collected objects, and what V8 has reserved for it. */
  used: number;
  total: number;
}

/** A DevTools protocol session on the isolate: heap usage and a forced full GC. */
class Inspector {
  private next = 0;
  private readonly waiting = new Map<number, (result: unknown) => void>();
  private readonly ws: WebSocket;
  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.onmessage = (m) => {
      const d = JSON.parse(String(m.data)) as { id?: number; result?: unknown; error?: { message: string } };
      if (d.id === undefined) return; // events, heap snapshot chunks
      this.waiting.get(d.id)?.(d.error ? new Error(d.error.message) : d.result);
      this.waiting.delete(d.id);
    };
    ws.onclose = () => {
      for (const answer of this.waiting.values()) answer(new Error("the inspector closed the session"));
      this.waiting.clear();
    };
  }
  static async open(url: string): Promise<Inspector> {
    // wrangler's proxy refuses a WebSocket without an Origin (as a browser's DevTools sends).
    const ws = new WebSocket(url, { headers: { origin: "https://devtools.devprod.cloudflare.dev" } } as unknown as string[]);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error(`could not open the inspector at ${url}`));
    });
    return new Inspector(ws);
  }
  private async call<T>(method: string, params: object = {}, timeoutMs = 30_000): Promise<T> {
    const id = ++this.next;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const result = await new Promise((resolve) => {
      this.waiting.set(id, resolve);
      timer = setTimeout(() => resolve(new Error(`${method}: no answer within ${timeoutMs} ms`)), timeoutMs);
      this.ws.send(JSON.stringify({ id, method, params }));
    });
    clearTimeout(timer);
    this.waiting.delete(id);
    if (result instanceof Error) throw result;
    return result as T;
  }
  async heap(): Promise<Heap> {
    const r = await this.call<{ usedSize: number; totalSize: number }>("Runtime.getHeapUsage");
    return { used: r.usedSize, total: r.totalSize };
  }
  /**
   * The heap after a full collection: what is retained, not what V8 has not collected yet.
   * workerd never answers HeapProfiler.collectGarbage; a heap snapshot collects first.
   */
  async retained(): Promise<Heap> {
    await this.call("HeapProfiler.takeHeapSnapshot", { reportProgress: false }, 120_000);
    return this.heap();
  }
  close(): void {
    this.ws.close();
  }
}
const heapMb = (h: Heap) => `used ${(h.used / MB).toFixed(1)} MB of ${(h.total / MB).toFixed(1)} MB`;

/** Bytes of the Durable Objects' SQLite files (database and WAL) under wrangler's persist dir. */
function sqliteBytes(dir: string): { db: number; wal: number } {
  const sizes = { db: 0, wal: 0 };
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith(".sqlite")) sizes.db += statSync(path).size;
      else if (entry.name.endsWith(".sqlite-wal")) sizes.wal += statSync(path).size;
    }
  };
  try {
    walk(join(dir, "v3", "do"));
  } catch {
    // not created yet
  }
  return sizes;
}

interface Rss {
  total: number;
  /** Anonymous memory (heaps) vs file pages mapped in (e.g. SQLite) vs shared memory. */
  anon: number;
  file: number;
  shmem: number;
}

function rssOf(pids: number[]): Rss {
  const rss: Rss = { total: 0, anon: 0, file: 0, shmem: 0 };
  for (const pid of pids) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      const kb = (name: string) => Number(status.match(new RegExp(`^${name}:\\s+(\\d+) kB`, "m"))?.[1] ?? 0) * 1024;
      rss.total += kb("VmRSS");
      rss.anon += kb("RssAnon");
      rss.file += kb("RssFile");
      rss.shmem += kb("RssShmem");
    } catch {
      // gone
    }
  }
  return rss;
}
const mb = (r: Rss) => `${(r.total / MB).toFixed(1)} MB (anon ${(r.anon / MB).toFixed(1)}, file ${(r.file / MB).toFixed(1)}, shmem ${(r.shmem / MB).toFixed(1)})`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The downstream: records each finalisation POST (path, Idempotency-Key, body) and answers 200. */
async function downstream(): Promise<{ url: string; posts: { path: string; key: string; body: string }[]; server: Server }> {
  const posts: { path: string; key: string; body: string }[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      posts.push({ path: req.url ?? "", key: String(req.headers["idempotency-key"] ?? ""), body: Buffer.concat(chunks).toString("utf8") });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(Number(process.env.BENCH_DOWNSTREAM_PORT ?? 0), "127.0.0.1", resolve));
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("the downstream did not listen");
  return { url: `http://127.0.0.1:${address.port}`, posts, server };
}

/** Reads the file list object as a stream: its lines, and its composite checksum (SHA-256 per part_bytes piece, then of the digests). */
async function checkFileList(s3: ReturnType<typeof localS3Client>, bucket: string, key: string, partBytes: number) {
  const object = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  let lines = 0;
  let bytes = 0;
  let inPart = 0;
  let part = createHash("sha256");
  const digests: Buffer[] = [];
  for await (const chunk of object.Body as AsyncIterable<Uint8Array>) {
    for (let at = 0; at < chunk.byteLength; ) {
      const take = Math.min(chunk.byteLength - at, partBytes - inPart);
      const piece = chunk.subarray(at, at + take);
      part.update(piece);
      for (const b of piece) if (b === 0x0a) lines++;
      inPart += take;
      at += take;
      if (inPart === partBytes) {
        digests.push(part.digest());
        part = createHash("sha256");
        inPart = 0;
      }
    }
    bytes += chunk.byteLength;
  }
  if (inPart > 0 || digests.length === 0) digests.push(part.digest());
  const checksum = `${createHash("sha256").update(Buffer.concat(digests)).digest("base64")}-${digests.length}`;
  return { lines, bytes, checksum };
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const text = manifestText();
  const bytes = Buffer.byteLength(text);
  console.log(`manifest: ${ENTRIES.toLocaleString("en")} entries, ${(bytes / MB).toFixed(1)} MB`);

  let stack: Stack | undefined;
  const receiver = await downstream();
  // Interrupted, the stack still stops: wrangler dev runs detached and would outlive this process.
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => void (stack?.stop() ?? Promise.resolve()).finally(() => process.exit(130)));
  }
  try {
    stack = await startStack({
      stateDir: join(process.cwd(), ".local", "bench-manifest"),
      fresh: true,
      // FANOUT_PORT, FANOUT_S3_PORT, FANOUT_FLY_PORT as for npm start (0 or unset: free ports).
      ports: { orchestrator: Number(process.env.FANOUT_PORT ?? 0), s3: Number(process.env.FANOUT_S3_PORT ?? 0), emulator: Number(process.env.FANOUT_FLY_PORT ?? 0) },
      vars: { MAX_CONCURRENT_MACHINES: "1", WORKER_URL: receiver.url },
    });
    const s3 = localS3Client(stack.s3);
    await new Upload({ client: s3, params: { Bucket: stack.bucket, Key: MANIFEST_KEY, Body: Buffer.from(text), ContentType: "application/json" }, partSize: 8 * MB }).done();

    const pids = ourWorkerdPids();
    if (pids.length === 0) throw new Error("found no workerd process under this one");
    // Warm up: the Worker and a Durable Object class loaded, as they would be in service.
    for (let i = 0; i < 5; i++) await (await fetch(`${stack.orchestratorUrl}/status/warm-up-${i}`)).body?.cancel();
    await sleep(2000);
    // /status at rest: what this machine's load alone costs an answer, for comparison.
    const atRest: number[] = [];
    for (let i = 0; i < 20; i++) {
      const start = performance.now();
      await (await fetch(`${stack.orchestratorUrl}/status/warm-up-${i % 5}`)).body?.cancel();
      atRest.push(performance.now() - start);
      await sleep(250);
    }
    atRest.sort((a, b) => a - b);
    console.log(`GET /status at rest (no batch running): p50 ${atRest[10].toFixed(0)} ms, slowest ${atRest[19].toFixed(0)} ms; load average ${loadavg()[0].toFixed(1)} on ${availableParallelism()} cores`);
    // The inspector first: its session and a heap snapshot cost workerd memory of their own,
    // which belongs in the baseline, not in discovery's growth.
    const inspectorUrl = await isolateInspector(pids);
    if (inspectorUrl === null) throw new Error("found no inspector for the Worker's isolate (wrangler dev's inspector proxy)");
    const inspector = await Inspector.open(inspectorUrl);
    const heapAtRest = await inspector.retained();
    await sleep(1000);
    const baseline = rssOf(pids);
    console.log(`workerd pids ${pids.join(",")}: RSS at rest ${mb(baseline)}`);
    console.log(`isolate heap at rest (after a full GC) ${heapMb(heapAtRest)} (inspector ${inspectorUrl})`);
    const persistDir = join(stack.stateDir, "wrangler");
    const sqliteAtRest = sqliteBytes(persistDir);

    let peak = baseline;
    let discoveryPeak = baseline;
    let discovering = true;
    const sampler = setInterval(() => {
      const rss = rssOf(pids);
      if (rss.total > peak.total) peak = rss;
      if (discovering && rss.total > discoveryPeak.total) discoveryPeak = rss;
    }, 100);
    // The isolate's heap, sampled apart from RSS: an answer waits for the isolate's lock.
    let heapPeak = heapAtRest;
    let heapPeakAfter = heapAtRest;
    let sqlitePeak = sqliteAtRest;
    let sampling = true;
    let heapSamples = 0;
    const heapMisses: string[] = [];
    const heapSampler = (async () => {
      while (sampling) {
        const h = await inspector.heap().catch((error: unknown) => {
          heapMisses.push(error instanceof Error ? error.message : String(error));
          return null;
        });
        if (h !== null) heapSamples++;
        if (h !== null && discovering && h.used > heapPeak.used) heapPeak = h;
        if (h !== null && !discovering && h.used > heapPeakAfter.used) heapPeakAfter = h;
        if (discovering) {
          const f = sqliteBytes(persistDir);
          if (f.db + f.wal > sqlitePeak.db + sqlitePeak.wal) sqlitePeak = f;
        }
        await sleep(100);
      }
    })();

    const submitted = performance.now();
    const res = await fetch(`${stack.orchestratorUrl}/admin/batches`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.adminToken}`, "content-type": "application/json" },
      body: JSON.stringify({ batch_id: BATCH_ID, manifest_r2_key: MANIFEST_KEY }),
    });
    if (res.status !== 202) throw new Error(`submit answered ${res.status}: ${await res.text()}`);

    const latencies: number[] = [];
    let slowest = { ms: 0, at: 0 };
    let last: { status: string; stage?: string; files_total?: number; error?: string | null } | undefined;
    let discoveredAt: number | undefined;
    let finalisingAt: number | undefined;
    while (performance.now() - submitted < TIMEOUT_MS) {
      const start = performance.now();
      const r = await fetch(`${stack.orchestratorUrl}/status/${BATCH_ID}`);
      const body = (await r.json().catch(() => ({}))) as typeof last;
      const ms = performance.now() - start;
      if (r.status === 200) {
        latencies.push(ms);
        if (ms > slowest.ms) slowest = { ms, at: (start - submitted) / 1000 };
        last = body;
        if (discovering && last?.stage && last.stage !== "discover") {
          discovering = false;
          discoveredAt = (performance.now() - submitted) / 1000;
        }
        if (finalisingAt === undefined && last?.stage === "finalise") finalisingAt = (performance.now() - submitted) / 1000;
        if (last?.status === "DONE" || last?.status === "ERROR") break;
      }
      await sleep(Math.max(0, 250 - ms));
    }
    clearInterval(sampler);
    sampling = false;
    await heapSampler;
    const rssAtEnd = rssOf(pids);
    const heapAtEnd = await inspector.retained();
    inspector.close();
    if (last?.status !== "DONE") throw new Error(`batch did not finish: ${JSON.stringify(last)}`);

    latencies.sort((a, b) => a - b);
    const p = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
    const growth = (discoveryPeak.total - baseline.total) / MB;
    console.log(`files discovered: ${last.files_total?.toLocaleString("en")} in ${discoveredAt?.toFixed(1)} s; batch DONE in ${((performance.now() - submitted) / 1000).toFixed(1)} s`);
    console.log(`workerd RSS at rest ${mb(baseline)}`);
    console.log(`workerd RSS peak during discovery ${mb(discoveryPeak)}`);
    console.log(`workerd RSS peak to DONE ${mb(peak)}`);
    console.log(`peak RSS growth during discovery: ${growth.toFixed(1)} MB (target < 64 MB) ${growth < 64 ? "OK" : "OVER"}`);
    console.log(`peak RSS growth to DONE: ${((peak.total - baseline.total) / MB).toFixed(1)} MB; RSS at DONE ${mb(rssAtEnd)}`);
    const heapGrowth = (heapPeak.used - heapAtRest.used) / MB;
    if (heapMisses.length > 0) console.log(`isolate heap: ${heapMisses.length} samples missed (first: ${heapMisses[0]})`);
    console.log(`isolate heap: ${heapSamples} samples`);
    console.log(`isolate heap peak during discovery ${heapMb(heapPeak)}: growth ${heapGrowth.toFixed(1)} MB (target < 64 MB) ${heapGrowth < 64 ? "OK" : "OVER"}`);
    console.log(`isolate heap peak after discovery (planning, finalisation) ${heapMb(heapPeakAfter)}: growth ${((heapPeakAfter.used - heapAtRest.used) / MB).toFixed(1)} MB`);
    console.log(`isolate heap at DONE after a full GC ${heapMb(heapAtEnd)}: retained ${((heapAtEnd.used - heapAtRest.used) / MB).toFixed(1)} MB`);
    console.log(
      `DO SQLite files: at rest ${((sqliteAtRest.db + sqliteAtRest.wal) / MB).toFixed(1)} MB, peak during discovery ${(sqlitePeak.db / MB).toFixed(1)} MB db + ${(sqlitePeak.wal / MB).toFixed(1)} MB WAL`,
    );
    console.log(
      `GET /status: ${latencies.length} answers, p50 ${p(0.5).toFixed(0)} ms, p99 ${p(0.99).toFixed(0)} ms, slowest ${slowest.ms.toFixed(0)} ms at ${slowest.at.toFixed(1)} s (target < 1000 ms) ${slowest.ms < 1000 ? "OK" : "OVER"}`,
    );
    // Finalisation: the POST names the file list object; the object holds every file.
    const doneAt = (performance.now() - submitted) / 1000;
    if (receiver.posts.length === 0) throw new Error("finalisation never POSTed downstream");
    const post = receiver.posts.at(-1)!;
    const posted = FinalisedBatch.parse(JSON.parse(post.body));
    const postBytes = Buffer.byteLength(post.body);
    console.log(
      `finalisation: ${receiver.posts.length} POST(s) to ${post.path}, Idempotency-Key ${post.key}, body ${postBytes} bytes (target < ${MAX_FINALISATION_BODY_BYTES}) ${postBytes < MAX_FINALISATION_BODY_BYTES ? "OK" : "OVER"}; stage finalise to DONE ${finalisingAt !== undefined ? (doneAt - finalisingAt).toFixed(1) : "?"} s`,
    );
    const list = posted.file_list;
    const checked = await checkFileList(s3, stack.bucket, list.key, list.checksum.part_bytes);
    const parts = Number(list.checksum.value.split("-").pop());
    console.log(
      `file list ${list.key}: ${list.entries.toLocaleString("en")} entries, ${(list.bytes / MB).toFixed(1)} MB in ${parts} parts of ${(list.checksum.part_bytes / MB).toFixed(0)} MiB; read back: ${checked.lines.toLocaleString("en")} lines, ${(checked.bytes / MB).toFixed(1)} MB, checksum ${checked.checksum === list.checksum.value ? "matches" : `DIFFERS (${checked.checksum} vs ${list.checksum.value})`}`,
    );
    if (checked.lines !== ENTRIES || list.entries !== ENTRIES || checked.checksum !== list.checksum.value || postBytes >= MAX_FINALISATION_BODY_BYTES) {
      throw new Error("the file list or the POST is not what finalisation promised");
    }
    console.log(`wall ${((performance.now() - t0) / 1000).toFixed(0)} s; load average ${loadavg()[0].toFixed(1)} on ${availableParallelism()} cores`);
  } finally {
    await stack?.stop();
    receiver.server.close();
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exit(1);
});
