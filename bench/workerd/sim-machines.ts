// The machines of the simulations (makespan.bench-run.ts: one batch; fleet.bench-run.ts: batches at
// once in one fleet; steps.ts fires a batch's alarm by hand): each runs Fly's CPU model (shared/fly-model.ts
// MachineModel) in virtual time — its tasks share its CPUs, quota and network; a task is round
// trips, download, CPU, upload — and speaks to the real engine through the Worker's fetch, as
// fly-worker does: a single-task machine calls back once; a pool machine runs POOL_CONCURRENCY
// lease loops that take turns downloading (the GET alone: its round trip and the input), heartbeat,
// call back and lease again; a pool task's other round trips (lease, output presign, PUT) are its slot's own time. Each callback
// reports the task's CPU-seconds and megapixels, as fly-worker's do, so the engine can learn.
import { exports } from "cloudflare:workers";
import { vi } from "vitest";
import { ManualClock } from "../../local/fly-emulator/clock.ts";
import { machineProcessEnv, type MachineRunner, type RunnerEvents, type RunnerMachine } from "../../local/fly-emulator/runner.ts";
import { LeaseResponse } from "../../shared/contracts.ts";
import { type Guest, MachineModel, type Stage } from "../../shared/fly-model.ts";
import { callBack, callBackWith } from "./support.ts";

/** One task as a machine runs it: lease/API and storage round trips, download, conversion, upload. */
export interface TaskShape {
  /** CPU-seconds the conversion really takes (the engine starts from its own estimate and learns this). */
  cpuS: number;
  megapixels: number;
  inBytes: number;
  outBytes: number;
  netBytesPerS: number;
  /** A task's request round trips, all four together (bench/run.ts RTT_S: 4 × ~50 ms); see roundTripS. */
  rttS: number;
}
/** What the machine's callback reports of the task: its CPU-seconds and megapixels (fly-worker/cpu.ts). */
const perfOf = (t: TaskShape) => ({ cpu_s: t.cpuS, megapixels: t.megapixels });

/**
 * One of a task's four request round trips (rttS / 4). A pool task's four, as fly-worker runs them:
 * the lease POST (fly-worker/pool.ts:51, sent at :159), before the task; the input's GET
 * (fly-worker/storage.ts:70, its presigned INPUT_URL comes with the lease: orchestrator/engine/access.ts:64),
 * the only one inside the machine's one-at-a-time download turn (fly-worker/pool.ts:36 limitDownloads(1),
 * fly-worker/task.ts:48-55 whenDownloadFree wraps storage.download alone); after the conversion, the
 * output's presign (POST OUTPUTS_URL, fly-worker/storage.ts:102 via :144) and its PUT (:161). A single-task
 * machine has no lease: its four are the GET, the presign, the PUT and the callback (fly-worker/run.ts:115).
 * The pool slot's callback (the same run.ts:115, awaited before it leases again) is not timed: the
 * simulated engine answers it at once, as before (a fifth ~50 ms a pool task that neither the
 * simulation nor the sizing model counts).
 */
export const roundTripS = (t: Pick<TaskShape, "rttS">) => t.rttS / 4;

/** Single-task mode: the task's four round trips, download, conversion, upload, one after the other. */
const stagesOf = (t: TaskShape): Stage[] => [
  { kind: "wait", s: t.rttS },
  { kind: "net", bytes: t.inBytes },
  ...convertAndUploadOf(t),
];
/** A pool task's lease round trip (fly-worker/pool.ts:159): the slot's own time, before its download turn. */
const leaseOf = (t: TaskShape): Stage[] => [{ kind: "wait", s: roundTripS(t) }];
/** A pool task's download turn, which a machine's slots take one at a time: the GET's round trip and the input's bytes (fly-worker/storage.ts:70, :88). */
const downloadOf = (t: TaskShape): Stage[] => [
  { kind: "wait", s: roundTripS(t) },
  { kind: "net", bytes: t.inBytes },
];
/** After the download, the slot's own time: the conversion, the output's presign and PUT round trips, the upload's bytes. */
const afterDownloadOf = (t: TaskShape): Stage[] => [
  { kind: "cpu", cpuS: t.cpuS, parallelism: 1 },
  { kind: "wait", s: 2 * roundTripS(t) },
  { kind: "net", bytes: t.outBytes },
];
const convertAndUploadOf = (t: TaskShape): Stage[] => [
  { kind: "cpu", cpuS: t.cpuS, parallelism: 1 },
  { kind: "net", bytes: t.outBytes },
];

/** What the replaced system ran: one shared-cpu-2x 1 GB machine per scan, in ord (DESIGN.md "Machines on Fly"). */
export const BASELINE = { guest: { cpu_kind: "shared", cpus: 2, memory_mb: 1024 } as Guest, region: "ord" };

/** The guest a machine runs as: its create request's, or the baseline's. */
export function guestOf(machine: RunnerMachine, baseline: boolean): Guest {
  if (baseline) return BASELINE.guest;
  const g = machine.guest;
  return { cpu_kind: g.cpu_kind === "performance" ? "performance" : "shared", cpus: g.cpus, memory_mb: g.memory_mb };
}

export const START = Date.UTC(2100, 0, 1);
export const CREATE = { perSecond: 1, burst: 3 }; // Fly's documented create limit per app

/** The emulator's manual clock, with the isolate's Date following it (the DO reads Date.now()). */
export class SimClock extends ManualClock {
  constructor() {
    super(START);
  }
  override set(now: number): void {
    super.set(now);
    vi.setSystemTime(now);
  }
}

/** Machines whose HTTP work (callbacks, leases) the simulation awaits before time moves on. */
export interface SimRunner extends MachineRunner {
  settle(): Promise<boolean>;
}

/** Tracks the async work a timer started, so the simulation can wait for it at this instant. */
class InFlight {
  readonly #set = new Set<Promise<void>>();
  add(p: Promise<void>): void {
    this.#set.add(p);
    void p.finally(() => this.#set.delete(p));
  }
  async settle(): Promise<boolean> {
    if (this.#set.size === 0) return false;
    while (this.#set.size > 0) await Promise.all([...this.#set]);
    return true;
  }
}

/** Single-task mode: each machine runs its one task on Fly's CPU model, calls back, exits. */
export class TimedRunner implements SimRunner {
  readonly #inFlight = new InFlight();
  readonly #clock: SimClock;
  readonly #task: TaskShape;
  readonly #baseline: boolean;
  readonly #timers = new Map<string, unknown>();
  /** CPU-seconds spent and seconds run throttled, over all machines. */
  readonly cpu = { spentS: 0, throttledS: 0 };
  constructor(clock: SimClock, task: TaskShape, baseline: boolean) {
    this.#clock = clock;
    this.#task = task;
    this.#baseline = baseline;
  }
  start(machine: RunnerMachine, events: RunnerEvents): void {
    const now = (this.#clock.now() - START) / 1000;
    const model = new MachineModel(guestOf(machine, this.#baseline), { netBytesPerS: this.#task.netBytesPerS, nowS: now });
    model.add("task", stagesOf(this.#task), now);
    let endS = now;
    for (let t = model.nextEventS(); t !== null; t = model.nextEventS()) {
      model.advance(t);
      endS = t;
      model.takeFinished();
    }
    this.cpu.spentS += model.cpuSpentS;
    this.cpu.throttledS += model.throttledS;
    const timer = this.#clock.setTimeout(() => {
      this.#timers.delete(machine.id);
      this.#inFlight.add(callBack(machine, { performance: perfOf(this.#task) }).then((code) => events.exit(code === 200 ? 0 : 2)));
    }, Math.round((endS - now) * 1000));
    this.#timers.set(machine.id, timer);
  }
  kill(id: string): void {
    this.#clock.clearTimeout(this.#timers.get(id));
    this.#timers.delete(id);
  }
  settle(): Promise<boolean> {
    return this.#inFlight.settle();
  }
}

type TaskLease = Extract<LeaseResponse, { kind: "task" }>;

/** Why a lease loop ended: told `done`, idle for IDLE_TIMEOUT_MS, or refused by the lease endpoint. */
type LoopEnd = "done" | "idle" | "refused";

interface PoolMachine {
  env: Record<string, string>;
  events: RunnerEvents;
  idleTimeoutMs: number;
  bootedAt: number;
  /** Timers of all its loops (lease retries, conversions, heartbeats): a kill clears them all. */
  timers: Set<unknown>;
  /** Lease loops still running; the machine exits when the last one ends. */
  loops: number;
  /** The first non-zero code a loop ended with (fly-worker's exit code), else 0. */
  code: number;
  lastTaskEnd: number | null;
  /** Tasks in flight now, and the most it ever had at once (did all its slots work together?). */
  busy: number;
  peakBusy: number;
  exited: boolean;
  /** Fly's CPU model of this machine; its tasks by id, each with what to do when it ends. */
  model: MachineModel;
  tasks: Map<string, () => Promise<void>>;
  modelTimer: unknown;
  /** Downloads wait for the one in progress (fly-worker's pool runs one at a time). */
  downloading: boolean;
  downloadQueue: string[];
}

/** One of a machine's POOL_CONCURRENCY lease loops, with its own idle clock and heartbeat. */
interface PoolSlot {
  machine: PoolMachine;
  idleSince: number;
  heartbeat: unknown;
}

/**
 * Pool mode: each machine runs fly-worker/pool.ts in virtual time — POOL_CONCURRENCY lease
 * loops side by side, each leasing via the Worker's POST /lease/:batchId (its signed
 * LEASE_TOKEN), downloading when no other loop of the machine is (fly-worker takes turns),
 * converting for the measured time while heartbeating every heartbeat_ms, calling
 * back and leasing again; a loop ends on `done`, after IDLE_TIMEOUT_MS of `wait` answers (never
 * sleeping past its idle deadline) or a refused lease, and the machine exits when all have ended.
 */
export class SimPoolRunner implements SimRunner {
  /** Per machine: exits by the reason its last loop ended. Per loop: slot_*. */
  readonly stats = {
    leases: 0,
    tasks: 0,
    waits: 0,
    heartbeats: 0,
    leases_lost: 0,
    exit_done: 0,
    exit_idle: 0,
    exit_refused: 0,
    slot_done: 0,
    slot_idle: 0,
    slot_refused: 0,
  };
  /** Per machine: virtual time from its last callback to its exit (or its kill by the engine). */
  readonly tailMs: number[] = [];
  readonly #inFlight = new InFlight();
  readonly #clock: SimClock;
  readonly #task: TaskShape;
  readonly #machines = new Map<string, PoolMachine>();
  constructor(clock: SimClock, task: TaskShape) {
    this.#clock = clock;
    this.#task = task;
  }

  /** CPU-seconds spent and seconds run throttled, over all machines. */
  cpu(): { spentS: number; throttledS: number } {
    let spentS = 0;
    let throttledS = 0;
    for (const m of this.#machines.values()) {
      m.model.advance(Math.max((this.#clock.now() - START) / 1000, 0));
      spentS += m.model.cpuSpentS;
      throttledS += m.model.throttledS;
    }
    return { spentS, throttledS };
  }

  /** (Re)arms the machine's one timer at its model's next event: a stage ends or the balance runs out. */
  #arm(m: PoolMachine): void {
    if (m.modelTimer !== undefined) {
      this.#clock.clearTimeout(m.modelTimer);
      m.timers.delete(m.modelTimer);
      m.modelTimer = undefined;
    }
    const at = m.model.nextEventS();
    if (at === null || m.exited) return;
    const handle = this.#clock.setTimeout(() => {
      m.timers.delete(handle);
      m.modelTimer = undefined;
      if (m.exited) return;
      m.model.advance((this.#clock.now() - START) / 1000);
      for (const id of m.model.takeFinished()) {
        const then = m.tasks.get(id)!;
        m.tasks.delete(id);
        this.#inFlight.add(
          then().catch((error: unknown) => {
            m.events.log(`simulated pool loop crashed: ${error instanceof Error ? error.message : String(error)}`, "stderr");
            this.#exit(m, 70);
          }),
        );
      }
      this.#arm(m);
    }, Math.max(0, Math.ceil(at * 1000 + START - this.#clock.now())));
    m.modelTimer = handle;
    m.timers.add(handle);
  }

  start(machine: RunnerMachine, events: RunnerEvents): void {
    const env = machineProcessEnv(machine);
    const slots = Number(env.POOL_CONCURRENCY ?? "1");
    const m: PoolMachine = {
      env,
      events,
      idleTimeoutMs: Number(env.IDLE_TIMEOUT_MS),
      bootedAt: this.#clock.now(),
      timers: new Set(),
      loops: slots,
      code: 0,
      lastTaskEnd: null,
      busy: 0,
      peakBusy: 0,
      exited: false,
      model: new MachineModel(guestOf(machine, false), { netBytesPerS: this.#task.netBytesPerS, nowS: (this.#clock.now() - START) / 1000 }),
      tasks: new Map(),
      modelTimer: undefined,
      downloading: false,
      downloadQueue: [],
    };
    this.#machines.set(machine.id, m);
    for (let i = 0; i < slots; i++) {
      const slot: PoolSlot = { machine: m, idleSince: m.bootedAt, heartbeat: undefined };
      this.#after(m, 0, () => this.#lease(slot));
    }
  }

  kill(id: string): void {
    const m = this.#machines.get(id);
    if (m) this.#stop(m);
  }

  settle(): Promise<boolean> {
    return this.#inFlight.settle();
  }

  /** The fewest and most tasks any machine had in flight at once. */
  peakBusy(): { min: number; max: number } {
    const peaks = [...this.#machines.values()].map((m) => m.peakBusy);
    return { min: Math.min(...peaks), max: Math.max(...peaks) };
  }

  #after(m: PoolMachine, ms: number, step: () => Promise<void>): unknown {
    const handle = this.#clock.setTimeout(() => {
      m.timers.delete(handle);
      if (m.exited) return;
      this.#inFlight.add(
        step().catch((error: unknown) => {
          m.events.log(`simulated pool loop crashed: ${error instanceof Error ? error.message : String(error)}`, "stderr");
          this.#exit(m, 70);
        }),
      );
    }, ms);
    m.timers.add(handle);
    return handle;
  }

  #post(url: string, token: string, body: unknown): Promise<Response> {
    return exports.default.fetch(
      new Request(url, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: JSON.stringify(body) }),
    );
  }

  async #lease(s: PoolSlot): Promise<void> {
    const m = s.machine;
    const res = await this.#post(m.env.LEASE_URL, m.env.LEASE_TOKEN, { worker_id: m.env.WORKER_ID, machine_id: m.env.FLY_MACHINE_ID });
    this.stats.leases++;
    if (res.status !== 200) {
      m.events.log(`lease refused: HTTP ${res.status} ${await res.text()}`, "stderr");
      return this.#endLoop(m, "refused", 78);
    }
    const answer = LeaseResponse.parse(await res.json());
    if (m.exited) return;
    if (answer.kind === "done") return this.#endLoop(m, "done", 0);
    // Every answer renews the machine's lease credential (fly-worker/pool.ts uses the newest).
    if (answer.lease_token) m.env.LEASE_TOKEN = answer.lease_token;
    if (answer.kind === "wait") {
      this.stats.waits++;
      const idleMs = this.#clock.now() - s.idleSince;
      if (idleMs >= m.idleTimeoutMs) return this.#endLoop(m, "idle", 0);
      this.#after(m, Math.max(1, Math.min(answer.wait_ms, m.idleTimeoutMs - idleMs)), () => this.#lease(s));
      return;
    }
    this.stats.tasks++;
    m.peakBusy = Math.max(m.peakBusy, ++m.busy);
    this.#keepLease(s, answer);
    m.tasks.set(answer.task_id, async () => {
      this.#clock.clearTimeout(s.heartbeat);
      m.timers.delete(s.heartbeat);
      m.busy--;
      const code = await callBackWith({ ...answer.env, ...m.env }, { performance: perfOf(this.#task) });
      if (code !== 200) m.events.log(`callback answered ${code}`, "stderr");
      s.idleSince = m.lastTaskEnd = this.#clock.now();
      await this.#lease(s);
    });
    // The lease's round trip, then the task waits for the machine's download turn.
    m.tasks.set(`${answer.task_id}:lease`, () => {
      m.downloadQueue.push(answer.task_id);
      this.#nextDownload(m);
      return Promise.resolve();
    });
    m.model.add(`${answer.task_id}:lease`, leaseOf(this.#task), (this.#clock.now() - START) / 1000);
    this.#arm(m);
  }

  /** Starts the next queued download when none is in progress; the task runs on once it is in. */
  #nextDownload(m: PoolMachine): void {
    if (m.downloading) return;
    const id = m.downloadQueue.shift();
    if (id === undefined) return;
    m.downloading = true;
    m.tasks.set(`${id}:download`, () => {
      m.downloading = false;
      m.model.add(id, afterDownloadOf(this.#task), (this.#clock.now() - START) / 1000);
      this.#nextDownload(m);
      return Promise.resolve();
    });
    m.model.add(`${id}:download`, downloadOf(this.#task), (this.#clock.now() - START) / 1000);
  }

  /** Heartbeats every heartbeat_ms while the slot's task runs; a lost lease (409) ends them. */
  #keepLease(s: PoolSlot, lease: TaskLease): void {
    const m = s.machine;
    s.heartbeat = this.#after(m, lease.heartbeat_ms, async () => {
      const res = await this.#post(`${m.env.LEASE_URL}/heartbeat`, m.env.LEASE_TOKEN, { worker_id: m.env.WORKER_ID, machine_id: m.env.FLY_MACHINE_ID, task_id: lease.task_id });
      const kept = (await res.json().catch(() => null)) as { lease_token?: string } | null;
      if (kept?.lease_token) m.env.LEASE_TOKEN = kept.lease_token;
      this.stats.heartbeats++;
      if (res.status === 200) this.#keepLease(s, lease);
      else this.stats.leases_lost++;
    });
  }

  /** One loop ended; the machine exits with fly-worker's code once its last loop has. */
  #endLoop(m: PoolMachine, why: LoopEnd, code: number): void {
    if (m.exited) return;
    this.stats[`slot_${why}`]++;
    if (m.code === 0) m.code = code;
    if (--m.loops > 0) return;
    this.stats[`exit_${why}`]++;
    this.#exit(m, m.code);
  }

  #stop(m: PoolMachine): void {
    if (m.exited) return;
    m.exited = true;
    for (const t of m.timers) this.#clock.clearTimeout(t);
    m.timers.clear();
    this.tailMs.push(this.#clock.now() - (m.lastTaskEnd ?? m.bootedAt));
  }

  #exit(m: PoolMachine, code: number): void {
    if (m.exited) return;
    this.#stop(m);
    m.events.exit(code);
  }
}

/** Machines of either mode, each run by the runner its env asks for (the default may choose either). */
export class DispatchRunner implements SimRunner {
  readonly #single: TimedRunner;
  readonly #pool: SimPoolRunner;
  readonly #owner = new Map<string, MachineRunner>();
  constructor(single: TimedRunner, pool: SimPoolRunner) {
    this.#single = single;
    this.#pool = pool;
  }
  start(machine: RunnerMachine, events: RunnerEvents): void {
    const runner = machineProcessEnv(machine).POOL_MODE === "true" ? this.#pool : this.#single;
    this.#owner.set(machine.id, runner);
    runner.start(machine, events);
  }
  kill(id: string): void {
    this.#owner.get(id)?.kill(id);
  }
  async settle(): Promise<boolean> {
    const [a, b] = await Promise.all([this.#single.settle(), this.#pool.settle()]);
    return a || b;
  }
}
