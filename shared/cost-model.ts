// What a scan costs all in, beyond the machine's seconds (shared/fly-model.ts): Fly's egress of
// the outputs, R2's operations and storage, the Durable Object's rows, requests and duration,
// the Worker's requests. Each price is a constant with its source and the date it was read;
// each usage figure is one the bench measures or a named assumption. Pure (no I/O, no clock):
// sizing, /status and the benches all price through it.

/**
 * Fly bills data leaving a machine for the internet (uploads to R2 are that), per region group;
 * inbound is free. Source: https://docs.fly.io/about/pricing/ ("Outbound data to the internet":
 * $0.02/GB in North America and Europe, $0.04/GB in Asia Pacific, Oceania and South America,
 * $0.12/GB in Africa and India), read 2026-11-26. GB taken as 10^9 bytes (the page does not say).
 */
export const FLY_EGRESS = {
  source: "https://docs.fly.io/about/pricing/ (read 2026-11-26)",
  perGb: { "north-america-europe": 0.02, "asia-pacific-oceania-south-america": 0.04, "africa-india": 0.12 },
  regionGroup: {
    iad: "north-america-europe",
    ewr: "north-america-europe",
    ord: "north-america-europe",
    dfw: "north-america-europe",
    lax: "north-america-europe",
    sjc: "north-america-europe",
    yyz: "north-america-europe",
    ams: "north-america-europe",
    arn: "north-america-europe",
    lhr: "north-america-europe",
    cdg: "north-america-europe",
    fra: "north-america-europe",
    sin: "asia-pacific-oceania-south-america",
    syd: "asia-pacific-oceania-south-america",
    nrt: "asia-pacific-oceania-south-america",
    gru: "asia-pacific-oceania-south-america",
    jnb: "africa-india",
    bom: "africa-india",
  } as Record<string, "north-america-europe" | "asia-pacific-oceania-south-america" | "africa-india">,
} as const;

/** USD per byte a machine in `region` sends out (North America's rate for a region not listed). */
export function egressPerByte(region: string | null | undefined): number {
  const group = (region && FLY_EGRESS.regionGroup[region]) || "north-america-europe";
  return FLY_EGRESS.perGb[group] / 1e9;
}

/**
 * R2 Standard storage. Source: https://developers.cloudflare.com/r2/pricing/ (read 2026-11-26):
 * storage $0.015/GB-month, Class A operations (PutObject, multipart parts, List…) $4.50/million,
 * Class B (GetObject, HeadObject…) $0.36/million, egress free. Free allowances (10 GB-month,
 * 1 M Class A, 10 M Class B a month) are an account's, not a batch's: not subtracted here.
 */
export const R2_PRICES = {
  source: "https://developers.cloudflare.com/r2/pricing/ (read 2026-11-26)",
  storageGbMonth: 0.015,
  classA: 4.5 / 1e6,
  classB: 0.36 / 1e6,
} as const;

/**
 * Durable Objects (Workers Paid), SQLite storage backend. Source:
 * https://developers.cloudflare.com/durable-objects/platform/pricing/ (read 2026-11-26): requests
 * $0.15/million (RPC calls and alarm invocations each count), duration $12.50/million GB-s of the
 * 128 MB an object is allocated while active, rows written $1.00/million ("each setAlarm() is
 * billed as a single row written"; every index entry a write changes is a row, as the DO's own
 * rowsWritten counts it), rows read $0.001/million, stored data $0.20/GB-month. Included
 * monthly allowances are the account's: not subtracted.
 */
export const DO_PRICES = {
  source: "https://developers.cloudflare.com/durable-objects/platform/pricing/ (read 2026-11-26)",
  request: 0.15 / 1e6,
  gbSecond: 12.5 / 1e6,
  allocatedGb: 0.128,
  rowWritten: 1.0 / 1e6,
  rowRead: 0.001 / 1e6,
} as const;

/**
 * Seconds a batch's Durable Object is billed as active per request it serves (assumption: an
 * object idle between requests may hibernate and is then not billed, per the same page; the
 * scale bench measures a callback at ~7 ms in workerd). An open event stream keeps it billed
 * the whole time (not counted here).
 */
export const DO_ACTIVE_S_PER_REQUEST = 0.01;

/**
 * Workers Standard. Source: https://developers.cloudflare.com/workers/platform/pricing/ (read
 * 2026-11-26): $0.30 per million requests, $0.02 per million CPU milliseconds (the orchestrator's
 * few ms per request: not modelled).
 */
export const WORKERS_PRICES = {
  source: "https://developers.cloudflare.com/workers/platform/pricing/ (read 2026-11-26)",
  request: 0.3 / 1e6,
} as const;

/**
 * The network, as named assumptions (no provider publishes either figure). Per machine: what one
 * machine moves to and from R2, shared by its slots (~800 Mbit/s: third-party 1 GB download
 * benchmarks from R2 in US East, 2026; the bench's sensitivity table runs 25, 50 and 100 MB/s).
 * Per region: what all of one batch's machines in one region move at once from one bucket (R2
 * documents no per-bucket bandwidth limit, Fly none per region): a cap the sizing never plans past.
 */
export const NETWORK = {
  machineBytesPerS: 100e6,
  regionBytesPerS: 5e9,
  source: "assumption (no published figure; bench/RESULTS.md shows the sensitivity)",
} as const;

/** What a batch used, counted or modelled: every billed item beyond the machines' seconds. */
export interface Usage {
  /** USD of the machines' seconds (create to stop, at each size's price in its region). */
  machineUsd: number;
  /** Bytes the machines uploaded (the outputs), and the region they left from. */
  outputBytes: number;
  region: string | null;
  r2ClassA: number;
  r2ClassB: number;
  doRowsWritten: number;
  doRequests: number;
  /** Seconds the batch's Durable Object was billed as active (its duration charge). */
  doActiveS: number;
  workerRequests: number;
}

export interface CostBreakdown {
  machines: number;
  egress: number;
  r2_operations: number;
  durable_object: number;
  worker_requests: number;
  total: number;
}

/** The all-in cost of `u`, item by item (USD). */
export function allInCost(u: Usage): CostBreakdown {
  const egress = u.outputBytes * egressPerByte(u.region);
  const r2 = u.r2ClassA * R2_PRICES.classA + u.r2ClassB * R2_PRICES.classB;
  const durable = u.doRowsWritten * DO_PRICES.rowWritten + u.doRequests * DO_PRICES.request + u.doActiveS * DO_PRICES.allocatedGb * DO_PRICES.gbSecond;
  const workers = u.workerRequests * WORKERS_PRICES.request;
  return { machines: u.machineUsd, egress, r2_operations: r2, durable_object: durable, worker_requests: workers, total: u.machineUsd + egress + r2 + durable + workers };
}

/** USD to keep `bytes` in R2 Standard for `months` (GB = 10^9 bytes). */
export function r2StorageUsd(bytes: number, months: number): number {
  return (bytes / 1e9) * R2_PRICES.storageGbMonth * months;
}

/**
 * Durable Object rows a batch writes, as the engine writes them (counted in code; measured by the
 * makespan simulations' rows by statement — `npm run bench`, section 3, at 10 and 200 tasks in both
 * modes, 2026-12-03 — and section 1 for a pool task's life):
 * - a batch (`perBatch`): its schema (12 migration rows), meta, events, directory, file list and
 *   tally rows (9), and the alarms of discovery, sizing and finishing, each writing meta and
 *   setting the next alarm (~10);
 * - a task's whole life (`perTask`): its file (4), its task row and index entries (6), a lease and
 *   a callback rewriting the row and its state entry and the tally (5 + 2); one machine per task
 *   moves it through creating, booting and running besides (+2 task rows, +1 tally): 20; plus one
 *   row a heartbeat;
 * - a machine (`perMachine`): its worker row and index entries (3), its cost row (1), its orphan
 *   entry written and deleted (2), its row updated as it is answered, seen started and ended (5), and
 *   the ~2 alarms its create takes (the create budget allows one a second: an alarm each, with its
 *   meta write and setAlarm, ~7): 18; a pool machine's row is also marked live and retired by its
 *   leases (+2): 20. A pool machine's row is rewritten every ~30 s it lives (its check, or a lease
 *   moving the check on: `perMachineSecond`). The app-wide create budget's rows are another
 *   object's, not counted here (nor in the batch's own count the bench prices).
 */
export const DO_ROWS = { perTask: { pool: 17, single: 20 }, perHeartbeat: 1, perMachine: { pool: 20, single: 18 }, perMachineSecond: 2 / 30, perBatch: 31 } as const;

/** Alarms a batch runs (each a billed request): ~2 a machine (its create at the create limit, its answer), and ~4 a batch (discovery, sizing, finishing): measured as DO_ROWS. */
export const DO_ALARMS = { perMachine: 2, perBatch: 4 } as const;

/** What a batch's plan uses beyond its machines' seconds (the caller adds machineUsd). */
export interface PlanShape {
  mode: "single" | "pool";
  tasks: number;
  /** Machines created, and the seconds they live in all. */
  machines: number;
  machineSeconds: number;
  /** A pool machine's slots (each ends with a lease answered `done`): 1 when not given. */
  slots?: number;
  /** A pool task's lease is renewed every `heartbeatS` of its `taskS` (or `heartbeats` in all, when given: tasks of different lengths). */
  taskS: number;
  heartbeatS: number;
  heartbeats?: number;
  outputs: number;
  outputBytes: number;
}

/**
 * The plan's usage beyond its machines: R2 (the machine GETs its input once, PUTs each output
 * with one presigned PUT; the orchestrator reads the first bytes of each output: a Class B operation, as a HEAD was), requests (single-task: the callback;
 * pool: the lease, the callback, the heartbeats, and the lease each slot is answered `done`; both:
 * the alarms, DO_ALARMS) and DO rows (DO_ROWS).
 */
export function planUsage(p: PlanShape, region: string | null): Usage {
  const pool = p.mode === "pool";
  const heartbeats = pool ? (p.heartbeats ?? p.tasks * Math.floor(p.taskS / p.heartbeatS)) : 0;
  const machineRequests = pool ? p.tasks * 2 + heartbeats + (p.slots ?? 1) * p.machines : p.tasks;
  const requests = machineRequests + DO_ALARMS.perBatch + DO_ALARMS.perMachine * p.machines;
  const rows = DO_ROWS.perBatch + p.tasks * DO_ROWS.perTask[p.mode] + heartbeats * DO_ROWS.perHeartbeat + p.machines * DO_ROWS.perMachine[p.mode] + (pool ? p.machineSeconds * DO_ROWS.perMachineSecond : 0);
  return {
    machineUsd: 0,
    outputBytes: p.tasks * p.outputBytes,
    region,
    r2ClassA: p.tasks * p.outputs,
    r2ClassB: p.tasks * (1 + p.outputs),
    doRowsWritten: rows,
    doRequests: requests,
    doActiveS: requests * DO_ACTIVE_S_PER_REQUEST,
    workerRequests: machineRequests,
  };
}
