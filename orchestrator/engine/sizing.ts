// Sizing, pure: every way the engine knows to run a batch — one machine per task on each Fly
// size, or a pool of each size and slot count — timed under Fly's CPU quota, create limit and
// network (shared/fly-model.ts) and priced all in (shared/cost-model.ts); then the plan the
// objective picks. Inputs: the tasks, the work of one, the limits. Output: the plan and every
// plan considered. No I/O: the engine (and the fleet that shares an app's quota) calls it.
import { allInCost, NETWORK, planUsage } from "../../shared/cost-model.ts";
import { baselinePerCpu, conversionWallS, FLY_CPU, type Guest, guestName, initialBalanceS, pricePerSecond } from "../../shared/fly-model.ts";

/** What one task needs, as its phase estimates it from the input size. */
export interface TaskWork {
  /** Expected CPU-seconds of the task (the CPU quota is charged for these). */
  cpuS: number;
  /** CPUs the task can keep busy at once (mozjpeg encodes on one thread: ~1). */
  parallelism: number;
  /** MiB the task needs (the decoded image and the encoder's buffers). */
  memoryMb: number;
  /** Bytes downloaded (the input) and uploaded (the outputs: Fly bills them as egress). */
  inBytes: number;
  outBytes: number;
}

/**
 * `balanced` (default): the soonest plan whose whole bill (all in) is at most BALANCED_MARGIN × the
 * cheapest plan's — unless `fast`'s pick ends at least BALANCED_GAIN_S sooner, and then that: a
 * short batch does not pay a quarter more for seconds; a long one still buys minutes.
 * `fast`: the shortest makespan among plans costing at most COST_MARGIN × the cheapest;
 * `cheapest`: the lowest cost among plans finishing within MAKESPAN_MARGIN × the fastest. The cost
 * these two compare is what the plan decides (its machines, its Durable Object rows and requests):
 * the outputs' egress and R2 operations are the same whatever the plan, so they are not what the
 * margin buys (counted in, a scan whose JPEG's egress outweighs its CPU would let the machines
 * cost half as much again). `balanced`'s small margin is on the bill the operator pays, egress and
 * all: what it bounds is how much more than the cheapest way the batch costs (issue 23's 1.05×).
 */
export type Objective = "balanced" | "fast" | "cheapest";
export const OBJECTIVES = ["balanced", "fast", "cheapest"] as const satisfies readonly Objective[];
export const COST_MARGIN = 1.25;
export const MAKESPAN_MARGIN = 1.25;
export const BALANCED_MARGIN = 1.05;
export const BALANCED_GAIN_S = 60;
/** Most tasks one machine runs at once (POOL_CONCURRENCY, pool_tasks_per_machine). */
export const MAX_SLOTS = 16;

/** What the batch runs within: the app's create limit, the machines it may have, the network, the region. */
export interface Limits {
  maxMachines: number;
  /** The fleet's vCPU and memory limits (FLEET_MAX_VCPUS, FLEET_MAX_MEMORY_MB): they bound machines of each size. */
  maxVcpus?: number;
  maxMemoryMb?: number;
  createPerS: number;
  createBurst: number;
  /** Seconds from create to started (image pull, Node start). */
  bootS: number;
  /** Where machines are created first (prices and egress are per region). */
  region: string | null;
  machineBytesPerS: number;
  regionBytesPerS: number;
  /**
   * A task's four request round trips together, seconds (4 × ~50 ms). In a pool: the lease
   * (fly-worker/pool.ts:159), the input's GET (fly-worker/storage.ts:70), the output's presign
   * (storage.ts:102 via :144) and its PUT (storage.ts:161); the GET alone is inside the machine's
   * one-at-a-time download turn (pool.ts:36, task.ts:48-55), the rest are the slot's own time.
   * One machine per task: the GET, the presign, the PUT and the callback (fly-worker/run.ts:115).
   * A pool slot's callback is not counted.
   */
  rttS: number;
  /** A pool task's lease is renewed this often (a heartbeat: a request and a row). */
  heartbeatS: number;
}

export const DEFAULT_LIMITS: Omit<Limits, "maxMachines" | "createPerS" | "createBurst" | "region"> = {
  bootS: 5,
  machineBytesPerS: NETWORK.machineBytesPerS,
  regionBytesPerS: NETWORK.regionBytesPerS,
  rttS: 0.2,
  heartbeatS: 20,
};

export interface BatchInput {
  tasks: number;
  /** The largest task's work: every machine is sized to hold it. */
  work: TaskWork;
  limits: Limits;
  objective?: Objective;
  /** Modes the batch may run in (its message's `pool`), and slots fixed by the operator (for pools). */
  modes?: readonly ("single" | "pool")[];
  slots?: number;
}

export interface Plan {
  mode: "single" | "pool";
  guest: Guest;
  /** Tasks a machine runs at once (1 in single-task mode). */
  slots: number;
  /** Machines at once (single: at most; pool: the pool). */
  machines: number;
  /** MiB each slot may use. */
  perSlotMb: number;
  makespanS: number;
  /** All in (machines, egress, R2, Durable Object, requests), the machines' part of it, and what the plan decides (all in less egress and R2). */
  costUsd: number;
  machineUsd: number;
  decidedUsd: number;
  /** Some CPU-seconds are expected to run at a shared vCPU's baseline. */
  throttled: boolean;
}

export const planName = (p: Pick<Plan, "mode" | "guest" | "slots" | "machines">) =>
  p.mode === "single" ? `one ${guestName(p.guest)} machine per task` : `${p.machines} × ${guestName(p.guest)}, ${p.slots} slot(s)`;

const roundUp = (mb: number) => Math.ceil(mb / FLY_CPU.memoryStepMb) * FLY_CPU.memoryStepMb;

/** The guest of `kind` with `cpus` CPUs holding `memoryMb`, or null when Fly has no such size. */
export function guestOf(kind: Guest["cpu_kind"], cpus: number, memoryMb: number): Guest | null {
  const [min, max] = FLY_CPU.memoryPerCpuMb[kind];
  const memory = Math.max(min * cpus, roundUp(memoryMb));
  return memory <= max * cpus ? { cpu_kind: kind, cpus, memory_mb: memory } : null;
}

/** One task alone on a fresh machine of `guest`: round trips, download, conversion, upload (seconds). */
function taskOn(work: TaskWork, guest: Guest, l: Limits): { wallS: number; throttledS: number } {
  const { wallS, throttledS } = conversionWallS({ cpuS: work.cpuS, parallelism: work.parallelism, guest });
  return { wallS: l.rttS + (work.inBytes + work.outBytes) / l.machineBytesPerS + wallS, throttledS };
}

/** The plan's all-in cost (its machines plus what it uses of R2, the DO, the Worker and the network), and the part the plan decides. */
function allIn(
  mode: Plan["mode"],
  tasks: number,
  work: TaskWork,
  l: Limits,
  machine: { usd: number; machines: number; seconds: number; slots?: number; heartbeats?: number },
  taskS: number,
): { costUsd: number; decidedUsd: number } {
  const usage = planUsage(
    { mode, tasks, machines: machine.machines, machineSeconds: machine.seconds, slots: machine.slots, taskS, heartbeatS: l.heartbeatS, heartbeats: machine.heartbeats, outputs: 1, outputBytes: work.outBytes },
    l.region,
  );
  const c = allInCost({ ...usage, machineUsd: machine.usd });
  return { costUsd: c.total, decidedUsd: c.total - c.egress - c.r2_operations };
}

/** One machine of `guest` fits the fleet's vCPU and memory limits (a plan on a bigger one would wait for room for ever). */
export function fitsFleet(l: Pick<Limits, "maxVcpus" | "maxMemoryMb">, guest: Pick<Guest, "cpus" | "memory_mb">): boolean {
  return (!l.maxVcpus || guest.cpus <= l.maxVcpus) && (!l.maxMemoryMb || guest.memory_mb <= l.maxMemoryMb);
}

/** Machines of `guest` alive at once: maxMachines, and what the fleet's vCPU and memory limits hold. */
export function maxMachinesOf(l: Pick<Limits, "maxMachines" | "maxVcpus" | "maxMemoryMb">, guest: Pick<Guest, "cpus" | "memory_mb">): number {
  const byCpu = l.maxVcpus ? Math.floor(l.maxVcpus / guest.cpus) : Infinity;
  const byMemory = l.maxMemoryMb ? Math.floor(l.maxMemoryMb / guest.memory_mb) : Infinity;
  return Math.max(1, Math.min(l.maxMachines, byCpu, byMemory));
}

/**
 * One machine per task on `guest`: a create per task at the create limit (the first `burst` at
 * once), at most maxMachines alive; each billed from create to exit (boot + its task).
 */
export function singlePlan(tasks: number, work: TaskWork, guest: Guest, l: Limits): Plan {
  const t = taskOn(work, guest, l);
  const lifeS = l.bootS + t.wallS;
  const createBound = Math.max(0, tasks - Math.min(tasks, l.createBurst)) / l.createPerS;
  const maxMachines = maxMachinesOf(l, guest);
  const concurrencyBound = (Math.ceil(tasks / maxMachines) - 1) * lifeS;
  const networkBound = (tasks * (work.inBytes + work.outBytes)) / l.regionBytesPerS;
  const makespanS = Math.max(Math.max(createBound, concurrencyBound) + lifeS, networkBound);
  const machineUsd = tasks * lifeS * pricePerSecond(guest, l.region);
  const machine = { usd: machineUsd, machines: tasks, seconds: tasks * lifeS };
  return {
    mode: "single",
    guest,
    slots: 1,
    machines: Math.min(tasks, maxMachines),
    perSlotMb: guest.memory_mb,
    makespanS,
    machineUsd,
    ...allIn("single", tasks, work, l, machine, t.wallS),
    throttled: t.throttledS > 0,
  };
}

/** When machine `i` of a pool (0-based) is created: the first `burst` at once, then one every 1/createPerS. */
function createdAt(i: number, l: Pick<Limits, "createPerS" | "createBurst">): number {
  return Math.max(0, i - l.createBurst + 1) / l.createPerS;
}

/**
 * Machine-seconds the pool has worked by time t: `machines` created at the create limit (the
 * first `burst` at once), each ready `bootS` after its create. Closed form, so sizing costs the
 * same at 50 or 10,000 machines.
 */
function machineSecondsBy(t: number, machines: number, l: Pick<Limits, "createPerS" | "createBurst" | "bootS">): number {
  const x = t - l.bootS;
  if (x <= 0) return 0;
  const first = Math.min(machines, l.createBurst);
  const j = Math.min(machines - first, Math.floor(x * l.createPerS));
  return first * x + j * x - (j * (j + 1)) / (2 * l.createPerS);
}

/**
 * How fast one pool machine works through tasks as it ages: a task every `fastS` while its burst
 * balance lasts (`burstS` seconds after it is ready; Infinity on performance vCPUs, or when its
 * slots never use more than the baseline), then every `slowS` at its vCPUs' baseline.
 */
interface PoolPace {
  fastS: number;
  slowS: number;
  burstS: number;
}

/** Tasks `machines` pool machines have finished by time t, each at `pace` from its own ready time (fluid). */
function tasksBy(t: number, machines: number, pace: PoolPace, l: Pick<Limits, "createPerS" | "createBurst" | "bootS">): number {
  const fast = machineSecondsBy(t, machines, l) / pace.fastS;
  if (!Number.isFinite(pace.burstS)) return fast;
  return fast - machineSecondsBy(t - pace.burstS, machines, l) * (1 / pace.fastS - 1 / pace.slowS);
}

/** Earliest T at which `machines` machines working at `pace` have finished `tasks`. */
function timeToFinish(machines: number, pace: PoolPace, tasks: number, l: Pick<Limits, "createPerS" | "createBurst" | "bootS">): number {
  if (tasks <= 0) return 0;
  let lo = 0;
  let hi = l.bootS + machines / l.createPerS + Math.max(pace.fastS, pace.slowS) * tasks + 1;
  for (let i = 0; i < 80 && hi - lo > 1e-3; i++) {
    const mid = (lo + hi) / 2;
    if (tasksBy(mid, machines, pace, l) >= tasks) hi = mid;
    else lo = mid;
  }
  return hi;
}

/**
 * Machines the engine really creates for the pool: it creates one more only while the open tasks
 * outnumber the slots of the machines it has (schedule.ts poolRoom), so a pool whose first
 * machines finish the work while the rest would still be waiting for the create limit never
 * creates the rest. Machine m (0-based) is created at createdAt(m) if the tasks the first m have
 * not finished by then outnumber their m × slots slots.
 */
function machinesCreated(tasks: number, planned: number, slots: number, pace: PoolPace, l: Pick<Limits, "createPerS" | "createBurst" | "bootS">): number {
  const wanted = (m: number) => tasks - tasksBy(createdAt(m, l), m, pace, l) > m * slots;
  let lo = 1; // the first machine is always created
  let hi = planned;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (wanted(mid - 1)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * A pool of `guest` machines running `slots` tasks each: as many machines as the limit, the tasks
 * and the region's network allow, joining at the create limit, as long as the open tasks outnumber
 * the slots of the machines already there. A machine's slots take turns downloading (a turn is the
 * input's GET: one round trip and the input's bytes, fly-worker/task.ts:48-55); the lease before
 * and the output's presign and PUT after are each slot's own time. The slots share the machine's
 * CPUs, quota and network. On shared vCPUs a machine works at full speed while its own burst
 * balance lasts, then at its baseline (6.25% a vCPU): the first machines, which take the most
 * tasks, slow down first. The region's aggregate bandwidth caps them all. Every machine is billed
 * from its create to the end.
 */
export function poolPlan(tasks: number, work: TaskWork, guest: Guest, slots: number, l: Limits): Plan {
  const bytes = work.inBytes + work.outBytes;
  const netS = bytes / l.machineBytesPerS;
  // A machine starts a download only when its last has ended, and its network carries every byte.
  const turnS = l.rttS / 4 + work.inBytes / l.machineBytesPerS;
  const machinePaceS = Math.max(turnS, netS);
  let machines = Math.max(1, Math.min(maxMachinesOf(l, guest), Math.ceil(tasks / slots)));
  // A slot's task (all four round trips, its bytes, its conversion) while the machine's CPUs run at full speed, and once its shared vCPUs are held to their baseline.
  const rate = Math.min(work.parallelism, guest.cpus / slots);
  const slotTaskS = l.rttS + netS + work.cpuS / rate;
  const fastS = Math.max(slotTaskS / slots, machinePaceS);
  const shared = guest.cpu_kind === "shared";
  const baseline = guest.cpus * baselinePerCpu(guest.cpu_kind);
  const cpuUse = work.cpuS / fastS;
  const drains = shared && cpuUse > baseline;
  const slotSlowS = l.rttS + netS + work.cpuS / Math.min(work.parallelism, baseline / slots);
  let pace: PoolPace = drains
    ? { fastS, slowS: Math.max(slotSlowS / slots, machinePaceS, work.cpuS / baseline), burstS: initialBalanceS(guest) / (cpuUse - baseline) }
    : { fastS, slowS: fastS, burstS: Infinity };
  // Machines past what the region's network carries add cost, not speed.
  const netMachines = Math.max(1, Math.floor((l.regionBytesPerS * pace.fastS) / bytes + 1e-9));
  machines = Math.min(machines, netMachines);
  const regionS = (machines * bytes) / l.regionBytesPerS;
  if (regionS > pace.fastS) pace = { fastS: regionS, slowS: Math.max(pace.slowS, regionS), burstS: drains ? initialBalanceS(guest) / (work.cpuS / regionS - baseline) : Infinity };
  if (!(pace.burstS > 0)) pace = { ...pace, burstS: Infinity };
  const created = machinesCreated(tasks, machines, slots, pace, l);
  // The fluid end: when the machines, working at their pace, have done every task. Once every task
  // is leased, each machine still finishes the round its slots hold, which ends anywhere within a
  // round: the machines leave on average at the fluid end (each billed from its create to it), the
  // last half a round (at the pace the machines have then) after it, when there is more than one round.
  // No machine ends before its first round: its slots' tasks side by side on a fresh machine (their
  // CPU and its balance shared: a round of tasks may drain it when one task alone would not), the
  // last of them downloading after the other slots' turns.
  const firstSlots = Math.min(slots, tasks);
  const firstRoundS =
    l.bootS + l.rttS + netS + (firstSlots - 1) * turnS + conversionWallS({ cpuS: work.cpuS, parallelism: work.parallelism, guest, sharers: firstSlots }).wallS;
  const fluidS = Math.max(timeToFinish(created, pace, tasks, l), firstRoundS);
  const paceAtEnd = fluidS - l.bootS > pace.burstS ? pace.slowS : pace.fastS;
  const makespanS = Math.max(fluidS + (tasks > created * slots ? (paceAtEnd * slots) / 2 : 0), firstRoundS);
  const seconds = machineSecondsBy(fluidS, created, l) + created * l.bootS;
  // Heartbeats: a lease is renewed every heartbeatS of a task, and a task run at the baseline is longer.
  const fastTasks = Number.isFinite(pace.burstS) ? Math.min(tasks, (machineSecondsBy(fluidS, created, l) - machineSecondsBy(fluidS - pace.burstS, created, l)) / pace.fastS) : tasks;
  const heartbeats = fastTasks * Math.floor(slotTaskS / l.heartbeatS) + (tasks - fastTasks) * Math.floor(slotSlowS / l.heartbeatS);
  const machineUsd = seconds * pricePerSecond(guest, l.region);
  return {
    mode: "pool",
    guest,
    slots,
    machines,
    perSlotMb: Math.floor(guest.memory_mb / slots),
    makespanS,
    machineUsd,
    ...allIn("pool", tasks, work, l, { usd: machineUsd, machines: created, seconds, slots, heartbeats }, slotTaskS),
    throttled: drains && fluidS - l.bootS > pace.burstS,
  };
}

/** Every plan the engine knows for the batch: single-task on each size, pools of each size and slot count. */
export function plansFor(input: BatchInput): Plan[] {
  const { tasks, work, limits: l } = input;
  const modes = input.modes ?? ["single", "pool"];
  const plans: Plan[] = [];
  // Pools: a slot per CPU (each at the task's parallelism), or twice that to keep the CPUs busy
  // while a slot downloads; or the operator's slots on the smallest size that gives each a CPU.
  const perCpu = Math.max(1, Math.floor(1 / work.parallelism));
  const cpusFor = (slots: number) => FLY_CPU.cpus.find((c) => c >= Math.ceil(slots * work.parallelism)) ?? FLY_CPU.cpus[FLY_CPU.cpus.length - 1];
  const shapes: [number, number][] = input.slots
    ? [[cpusFor(input.slots), input.slots]]
    : FLY_CPU.cpus.flatMap((c): [number, number][] => [[c, c * perCpu], [c, c * perCpu * 2]]).filter(([, s]) => s <= MAX_SLOTS);
  for (const kind of ["shared", "performance"] as const) {
    if (modes.includes("single")) {
      for (const cpus of FLY_CPU.cpus) {
        const g = guestOf(kind, cpus, work.memoryMb);
        if (g && fitsFleet(l, g)) plans.push(singlePlan(tasks, work, g, l));
      }
    }
    if (!modes.includes("pool")) continue;
    for (const [cpus, slots] of shapes) {
      const g = guestOf(kind, cpus, work.memoryMb * slots);
      if (g && fitsFleet(l, g)) plans.push(poolPlan(tasks, work, g, slots, l));
    }
  }
  return plans;
}

/** Figures within this fraction of each other count as equal: the model is not more precise than that. */
export const TIE = 0.005;
const below = (a: number, b: number) => a < b * (1 - TIE);

/** The soonest plan whose `cost` is at most `margin` × the lowest (ties within TIE: the cheaper). */
function soonestWithin(plans: readonly Plan[], margin: number, cost: (p: Plan) => number): Plan {
  const cheapest = Math.min(...plans.map(cost));
  const affordable = plans.filter((p) => cost(p) <= cheapest * margin * (1 + 1e-12));
  const soonest = Math.min(...affordable.map((p) => p.makespanS));
  return affordable.filter((p) => !below(soonest, p.makespanS)).reduce((a, b) => (cost(b) < cost(a) ? b : a));
}
const decided = (p: Plan) => p.decidedUsd;
const allInUsd = (p: Plan) => p.costUsd;

/** The plan `objective` picks from `plans` (ties within TIE: the cheaper, then the sooner). */
export function pick(plans: readonly Plan[], objective: Objective): Plan {
  if (plans.length === 0) throw new Error("no plan to pick from");
  if (objective === "fast") return soonestWithin(plans, COST_MARGIN, decided);
  if (objective === "balanced") {
    const near = soonestWithin(plans, BALANCED_MARGIN, allInUsd);
    const fast = soonestWithin(plans, COST_MARGIN, decided);
    return fast.makespanS <= near.makespanS - BALANCED_GAIN_S ? fast : near;
  }
  const fastest = Math.min(...plans.map((p) => p.makespanS));
  const soon = plans.filter((p) => p.makespanS <= fastest * MAKESPAN_MARGIN * (1 + 1e-12));
  const lowest = Math.min(...soon.map((p) => p.decidedUsd));
  return soon.filter((p) => !below(lowest, p.decidedUsd)).reduce((a, b) => (b.makespanS < a.makespanS ? b : a));
}

/** The batch's plan by its objective, and every plan it was chosen from. */
export function planBatch(input: BatchInput): { plan: Plan; considered: Plan[] } {
  const considered = plansFor(input);
  if (considered.length === 0) {
    const fleet = input.limits.maxVcpus || input.limits.maxMemoryMb ? ` within the fleet's limits (FLEET_MAX_VCPUS ${input.limits.maxVcpus ?? "-"}, FLEET_MAX_MEMORY_MB ${input.limits.maxMemoryMb ?? "-"})` : "";
    throw new Error(`no Fly machine holds ${input.slots ?? 1} task(s) of ${input.work.memoryMb} MiB${fleet}`);
  }
  return { plan: pick(considered, input.objective ?? "balanced"), considered };
}

/**
 * The guest for one task on its own machine (single-task mode): every Fly size that holds its
 * memory, timed by the CPU model and priced per second, picked by `fast`: one task alone says
 * nothing of the batch's makespan, which `balanced` weighs (its seconds repeat over every task).
 */
export function chooseGuest(work: TaskWork, objective: Objective = "fast", limits: Partial<Limits> = {}): Plan {
  const l: Limits = { ...DEFAULT_LIMITS, maxMachines: 1, createPerS: 1, createBurst: 1, region: null, ...limits };
  return planBatch({ tasks: 1, work, limits: l, objective, modes: ["single"] }).plan;
}

/** Pool mode unless the message says otherwise (`"pool": false` keeps one machine per task). */
export function poolByDefault(messagePool: boolean | undefined, configPool: boolean): boolean {
  return messagePool ?? configPool;
}
