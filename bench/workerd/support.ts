// Shared by the workerd benches: a machine runner the bench drives, the manifest a batch is
// discovered from, and the summary statistics every figure is reported with.
import { env, exports } from "cloudflare:workers";
import { machineProcessEnv, type MachineRunner, type RunnerEvents, type RunnerMachine } from "../../local/fly-emulator/runner.ts";
import { jpegBytes, OUTPUT_HEIGHT, OUTPUT_WIDTH, successBody } from "../../test/workers/support/engine.ts";

/** Machines that start and wait: the bench decides when each one calls back. */
export class HeldRunner implements MachineRunner {
  readonly waiting: { machine: RunnerMachine; events: RunnerEvents }[] = [];
  started = 0;

  start(machine: RunnerMachine, events: RunnerEvents): void {
    this.started++;
    this.waiting.push({ machine, events });
  }

  kill(id: string): void {
    const i = this.waiting.findIndex((w) => w.machine.id === id);
    if (i >= 0) this.waiting.splice(i, 1);
  }

  /** The oldest started machine that has not called back yet, waiting up to `timeoutMs` for one. */
  async take(timeoutMs = 30_000): Promise<{ machine: RunnerMachine; events: RunnerEvents }> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const next = this.waiting.shift();
      if (next) return next;
      if (Date.now() > until) throw new Error(`no machine started within ${timeoutMs} ms (started so far: ${this.started})`);
      await new Promise((r) => setTimeout(r, 1));
    }
  }
}

/**
 * Bytes of the output a simulated machine uploads before it calls back (the engine reads the first
 * bytes of every reported output before a success counts). Small, so 10,000 tasks fit the bench's
 * R2; the makespan model charges the real JPEG's transfer time separately.
 */
export const SIM_OUTPUT_BYTES = 1024;

/** What a converting machine's upload leaves behind: its reserved output key, a JPEG of SIM_OUTPUT_BYTES with the dimensions successBody reports. */
export async function uploadOutput(taskEnv: Record<string, string>): Promise<void> {
  await env.BUCKET.put(taskEnv.OUTPUT_R2_KEY, jpegBytes(OUTPUT_WIDTH, OUTPUT_HEIGHT, SIM_OUTPUT_BYTES));
}

/** What a simulated machine reports of its task beyond the timings: its process's CPU-seconds and the megapixels converted. */
export interface SimPerformance {
  cpu_s: number;
  megapixels: number;
}

/** The success callback fly-worker sends (the tests' body, with the uploaded output's size, a 100 MP scan's timings, and `performance`). */
export function successCallback(machineEnv: Record<string, string>, performance: SimPerformance = { cpu_s: 27.6, megapixels: 100 }): Request {
  const body = {
    ...successBody(machineEnv),
    output_file_size: SIM_OUTPUT_BYTES,
    performance: { total_time_ms: 14_000, download_time_ms: 600, conversion_time_ms: 12_900, upload_time_ms: 500, ...performance },
  };
  return new Request(machineEnv.CALLBACK_URL, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${machineEnv.CALLBACK_TOKEN}` },
    body: JSON.stringify(body),
  });
}

/** Uploads a machine's output and posts its callback through the Worker's HTTP entry; returns the status code. */
export function callBack(machine: RunnerMachine, opts: { uploaded?: boolean; performance?: SimPerformance } = {}): Promise<number> {
  return callBackWith(machineProcessEnv(machine), opts);
}

/** Uploads the output of the task whose env this is (unless `uploaded`), then posts its success callback. */
export async function callBackWith(taskEnv: Record<string, string>, opts: { uploaded?: boolean; performance?: SimPerformance } = {}): Promise<number> {
  if (!opts.uploaded) await uploadOutput(taskEnv);
  const res = await exports.default.fetch(successCallback(taskEnv, opts.performance));
  await res.body?.cancel();
  return res.status;
}

/** Puts a manifest of `n` TIFFs (one directory, as the ingest pipeline writes it) in R2. */
export async function putManifest(batchId: string, n: number, fileSize = 60_000_000): Promise<string> {
  const files = Array.from({ length: n }, (_, i) => {
    const name = `scan-${String(i).padStart(6, "0")}.tif`;
    return { r2_key: `${batchId}/${name}`, logical_path: `/archive/${name}`, file_name: name, file_size: fileSize, content_type: "image/tiff", cid: `cid-${i}` };
  });
  const key = `${batchId}/manifest.json`;
  const manifest = { batch_id: batchId, directories: [{ directory_path: "/archive", processing_config: { ocr: false }, files }] };
  await env.BUCKET.put(key, JSON.stringify(manifest));
  return key;
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

export const median = (values: number[]) => percentile(values, 50);

const print = console.log.bind(console);

/** Hands the figures to bench/run.ts, which reads this line from vitest's output. */
export function report(name: string, value: unknown): void {
  print(`BENCH_JSON ${name} ${JSON.stringify(value)}`);
}

/** Progress for whoever watches the bench run. */
export function progress(line: string): void {
  print(line);
}

/**
 * Drops the engine's info lines (`[DO] {...}`, one per task event, meant for wrangler tail)
 * while a bench runs: at 100k tasks they would cost more than what is measured. The DO runs
 * in this isolate, so this console is its console. Errors (console.error) still show.
 */
export function quietEngineLogs(): () => void {
  const original = console.log;
  console.log = (...args: unknown[]) => {
    if (typeof args[0] === "string" && /^\[[A-Za-z]+\] \{/.test(args[0])) return;
    original(...args);
  };
  return () => {
    console.log = original;
  };
}

/**
 * Pool machines that convert instantly: each of a machine's POOL_CONCURRENCY loops leases, sends
 * `heartbeats` heartbeats (as a task lasting that many heartbeat periods would), uploads, calls
 * back and leases again, until told done. The scale bench counts what a task's whole life writes.
 */
export class InstantPoolRunner implements MachineRunner {
  started = 0;
  readonly #live = new Set<string>();
  readonly #heartbeats: number;
  constructor(heartbeats: number) {
    this.#heartbeats = heartbeats;
  }

  start(machine: RunnerMachine, events: RunnerEvents): void {
    this.started++;
    this.#live.add(machine.id);
    const env = machineProcessEnv(machine);
    const slots = Number(env.POOL_CONCURRENCY ?? "1");
    void Promise.all(Array.from({ length: slots }, () => this.#loop(machine.id, env))).then(() => {
      if (this.#live.delete(machine.id)) events.exit(0);
    });
  }

  kill(id: string): void {
    this.#live.delete(id);
  }

  async #loop(id: string, env: Record<string, string>): Promise<void> {
    const post = (url: string, body: unknown) =>
      exports.default.fetch(new Request(url, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${env.LEASE_TOKEN}` }, body: JSON.stringify(body) }));
    while (this.#live.has(id)) {
      const res = await post(env.LEASE_URL, { worker_id: env.WORKER_ID, machine_id: env.FLY_MACHINE_ID });
      if (res.status !== 200) return void (await res.body?.cancel());
      const answer = (await res.json()) as { kind: string; wait_ms?: number; task_id?: string; env?: Record<string, string>; lease_token?: string };
      if (answer.kind === "done") return;
      // Every answer renews the machine's lease credential (fly-worker/pool.ts uses the newest).
      if (answer.lease_token) env.LEASE_TOKEN = answer.lease_token;
      if (answer.kind === "wait") {
        await new Promise((r) => setTimeout(r, Math.min(answer.wait_ms ?? 50, 50)));
        continue;
      }
      for (let i = 0; i < this.#heartbeats; i++) {
        // A heartbeat that is refused writes nothing: the rows it costs are measured only when it counts.
        const beat = await post(`${env.LEASE_URL}/heartbeat`, { worker_id: env.WORKER_ID, machine_id: env.FLY_MACHINE_ID, task_id: answer.task_id });
        const kept = (await beat.json()) as { ok?: boolean; lease_token?: string; error?: string };
        if (beat.status !== 200 || !kept.ok) throw new Error(`heartbeat for ${answer.task_id} refused: HTTP ${beat.status} ${JSON.stringify(kept)}`);
        if (kept.lease_token) env.LEASE_TOKEN = kept.lease_token;
      }
      if ((await callBackWith({ ...answer.env!, ...env })) !== 200) throw new Error(`callback for ${answer.task_id} refused`);
    }
  }
}

/** Rows a statement wrote, by table and verb (`UPDATE tasks`), for the breakdown of a task's life. */
export type Tally = Map<string, number>;

/** Counts every row written through `sql` (a DO's SQLite handle) into `tally`, by table and verb. */
export function countRows(sql: SqlStorage, tally: Tally): void {
  const exec = sql.exec.bind(sql);
  const counted = (query: string, ...params: SqlStorageValue[]) => {
    const m = /^\s*(INSERT INTO|UPDATE|DELETE FROM)\s+(\w+)/i.exec(query);
    if (!m) return exec(query, ...params);
    // A write runs to its end here (callers may never read its cursor), and its rows are counted.
    const cursor = exec(query, ...params);
    const rows = cursor.toArray();
    const key = `${m[1].split(" ")[0].toUpperCase()} ${m[2]}`;
    if (cursor.rowsWritten > 0) tally.set(key, (tally.get(key) ?? 0) + cursor.rowsWritten);
    return { toArray: () => rows, one: () => rows[0], rowsRead: cursor.rowsRead, rowsWritten: cursor.rowsWritten, [Symbol.iterator]: () => rows[Symbol.iterator]() };
  };
  Object.defineProperty(sql, "exec", { value: counted, configurable: true });
}
