// Machine sizing, pure: which Fly guest a task runs on and, in pool mode, how many tasks each
// machine runs at once, from the task's expected CPU-seconds and memory under Fly's CPU quota
// (shared/fly-model.ts) and prices. No I/O: the engine calls it with what it knows of the batch.
import { conversionWallS, FLY_CPU, type Guest, initialBalanceS, pricePerSecond } from "../../shared/fly-model.ts";

/** What one task needs, as its phase estimates it from the input size. */
export interface TaskWork {
  /** Expected CPU-seconds of the task (the CPU quota is charged for these). */
  cpuS: number;
  /** CPUs the task can keep busy at once (mozjpeg encodes on one thread: ~1). */
  parallelism: number;
  /** MiB the task needs (the decoded image and the encoder's buffers). */
  memoryMb: number;
  /** Bytes downloaded and uploaded (they share the machine's network). */
  ioBytes: number;
}

/** `fast` (default): nothing is expected to run throttled; `cheapest`: the lowest estimated cost, throttled or not. */
export type Objective = "fast" | "cheapest";

/** Assumed per-machine throughput to and from R2 (bytes/s) for sizing; the bench states its own. */
export const SIZING_NET_BYTES_PER_S = 100e6;
/** Margin over the cheapest configuration the pool sizing may spend to finish sooner. */
export const COST_MARGIN = 0.1;

const roundUp = (mb: number) => Math.ceil(mb / FLY_CPU.memoryStepMb) * FLY_CPU.memoryStepMb;

/** The guest of `kind` with `cpus` CPUs holding `memoryMb`, or null when Fly has no such size. */
export function guestOf(kind: Guest["cpu_kind"], cpus: number, memoryMb: number): Guest | null {
  const [min, max] = FLY_CPU.memoryPerCpuMb[kind];
  const memory = Math.max(min * cpus, roundUp(memoryMb));
  return memory <= max * cpus ? { cpu_kind: kind, cpus, memory_mb: memory } : null;
}

export interface GuestChoice {
  guest: Guest;
  wallS: number;
  throttledS: number;
  costUsd: number;
}

/**
 * The guest for one task on its own machine (single-task mode): every Fly size that holds its
 * memory, timed by the CPU model from a fresh balance and priced per second; `fast` takes the
 * cheapest that does not run throttled (performance never does), `cheapest` the cheapest of all.
 */
export function chooseGuest(work: TaskWork, objective: Objective = "fast"): GuestChoice {
  const options: GuestChoice[] = [];
  for (const kind of ["shared", "performance"] as const) {
    for (const cpus of FLY_CPU.cpus) {
      const guest = guestOf(kind, cpus, work.memoryMb);
      if (!guest) continue;
      const { wallS, throttledS } = conversionWallS({ cpuS: work.cpuS, parallelism: work.parallelism, guest });
      const total = wallS + work.ioBytes / SIZING_NET_BYTES_PER_S;
      options.push({ guest, wallS: total, throttledS, costUsd: total * pricePerSecond(guest) });
    }
  }
  if (options.length === 0) throw new Error(`no Fly machine holds ${work.memoryMb} MiB`);
  const pool = objective === "fast" ? options.filter((o) => o.throttledS === 0) : options;
  return pool.reduce((a, b) => (b.costUsd < a.costUsd - 1e-12 || (Math.abs(b.costUsd - a.costUsd) <= 1e-12 && b.wallS < a.wallS) ? b : a));
}

export interface PoolInput {
  tasks: number;
  /** The largest task's work: every machine is sized to hold it. */
  work: TaskWork;
  maxMachines: number;
  createPerS: number;
  createBurst: number;
  bootS: number;
  objective?: Objective;
  /** Tasks per machine the operator asked for; auto when absent. */
  slots?: number;
}

export interface PoolChoice {
  slots: number;
  machines: number;
  guest: Guest;
  /** MiB each slot may use. */
  perSlotMb: number;
  makespanS: number;
  costUsd: number;
  throttled: boolean;
  /** Every configuration looked at, for the record (status, bench). */
  considered: { slots: number; kind: Guest["cpu_kind"]; machines: number; makespanS: number; costUsd: number; throttled: boolean }[];
}

/**
 * Machine-seconds of work the pool has done by time t: `machines` created at the create limit
 * (the first `burst` at once), each ready `bootS` after its create. Closed form, so sizing costs
 * the same at 50 or 10,000 machines.
 */
function machineSecondsBy(t: number, machines: number, p: Pick<PoolInput, "createPerS" | "createBurst" | "bootS">): number {
  const x = t - p.bootS;
  if (x <= 0) return 0;
  const first = Math.min(machines, p.createBurst);
  const j = Math.min(machines - first, Math.floor(x * p.createPerS));
  return first * x + j * x - (j * (j + 1)) / (2 * p.createPerS);
}

/** Earliest T at which the pool, doing a task per `perTaskS` on each machine, has done `tasks`. */
function rampEnd(machines: number, perTaskS: number, tasks: number, p: Pick<PoolInput, "createPerS" | "createBurst" | "bootS">): number {
  let lo = 0;
  let hi = p.bootS + machines / p.createPerS + perTaskS * tasks + 1;
  for (let i = 0; i < 80 && hi - lo > 1e-3; i++) {
    const mid = (lo + hi) / 2;
    if (machineSecondsBy(mid, machines, p) / perTaskS >= tasks) hi = mid;
    else lo = mid;
  }
  return hi;
}

/**
 * Pool mode, auto-sized: for each slot count (1…16 tasks at once, a CPU each at the task's
 * parallelism) and CPU kind, the pool the create limit and MAX_CONCURRENT_MACHINES allow, its
 * makespan from the ramp (machines join at the create limit, boot, then each runs a task per
 * max(task time / slots, network time)) and its cost (every machine billed from create to the
 * end). Picks the shortest makespan whose cost is within COST_MARGIN of the cheapest; `fast`
 * leaves out configurations whose machines would run throttled.
 */
export function sizePool(input: PoolInput): PoolChoice {
  const objective = input.objective ?? "fast";
  const considered: PoolChoice["considered"] = [];
  const choices: PoolChoice[] = [];
  const slotOptions = input.slots ? [input.slots] : [1, 2, 4, 8, 16];
  for (const slots of slotOptions) {
    for (const kind of ["performance", "shared"] as const) {
      const cpus = FLY_CPU.cpus.find((c) => c >= Math.ceil(slots * input.work.parallelism)) ?? 16;
      const guest = guestOf(kind, cpus, input.work.memoryMb * slots);
      if (!guest) continue;
      const machines = Math.max(1, Math.min(input.maxMachines, Math.ceil(input.tasks / slots)));
      const netS = input.work.ioBytes / SIZING_NET_BYTES_PER_S;
      // A machine's whole share of the work, through the CPU model (slots share its CPUs and quota).
      const perMachineTasks = Math.ceil(input.tasks / machines);
      const rounds = Math.ceil(perMachineTasks / slots);
      const cpu = conversionWallS({ cpuS: input.work.cpuS * rounds, parallelism: input.work.parallelism, guest, sharers: slots, balanceS: initialBalanceS(guest) });
      const perTaskS = Math.max((cpu.wallS / rounds + netS) / slots, netS);
      const taskS = cpu.wallS / rounds + netS;
      const makespanS = rampEnd(machines, perTaskS, input.tasks, input) + taskS / 2;
      // Every machine billed from its create to the end: the pool's machine-seconds by then, plus its boots.
      const costUsd = (machineSecondsBy(makespanS, machines, input) + machines * input.bootS) * pricePerSecond(guest);
      const throttled = cpu.throttledS > 0;
      considered.push({ slots, kind, machines, makespanS, costUsd, throttled });
      if (objective === "fast" && throttled) continue;
      choices.push({ slots, machines, guest, perSlotMb: Math.floor(guest.memory_mb / slots), makespanS, costUsd, throttled, considered });
    }
  }
  if (choices.length === 0) throw new Error(`no Fly machine holds ${input.slots ?? 1} task(s) of ${input.work.memoryMb} MiB`);
  const cheapest = Math.min(...choices.map((c) => c.costUsd));
  const affordable = choices.filter((c) => c.costUsd <= cheapest * (1 + COST_MARGIN));
  return affordable.reduce((a, b) => (b.makespanS < a.makespanS - 1e-9 || (Math.abs(b.makespanS - a.makespanS) <= 1e-9 && b.costUsd < a.costUsd) ? b : a));
}

/** Pool mode unless the message says otherwise (`"pool": false` keeps one machine per task). */
export function poolByDefault(messagePool: boolean | undefined, configPool: boolean): boolean {
  return messagePool ?? configPool;
}
