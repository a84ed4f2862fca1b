// What a Fly Machine really runs at and what it costs: Fly's documented CPU quota, its published
// prices, and a fluid model of a machine whose tasks share its CPUs, quota and network. Pure
// (no I/O, no clock): the orchestrator's sizing, the emulator and the makespan bench all use it.

export type CpuKind = "shared" | "performance";
export interface Guest {
  cpu_kind: CpuKind;
  cpus: number;
  memory_mb: number;
}

/**
 * Fly's CPU model, one table. Update it here when Fly changes the numbers.
 * Source: https://fly.io/docs/machines/cpu-performance (read 2026-11-25): each vCPU gets `quotaMs`
 * of every `periodMs` (cgroup cpu.cfs_quota_us), the quota is pooled across the machine's vCPUs,
 * unused quota accrues as a balance (max 500 s) that lets a shared vCPU burst at 100%.
 * The initial balance (~5 s) is from Fly staff on community.fly.io ("CPU Quotas Update", 2025-01)
 * as quoted in issue 14; the docs do not state it, nor whether it grows with the vCPU count, so
 * it is taken per machine (the conservative reading: a big shared machine is not a free burst).
 * The maximum is taken per vCPU (the docs' dashboard counts the balance "per vCPU").
 */
export const FLY_CPU = {
  source: "https://fly.io/docs/machines/cpu-performance (read 2026-11-25)",
  periodMs: 80,
  shared: { quotaMs: 5, initialBalanceS: 5, maxBalanceSPerCpu: 500 },
  performance: { quotaMs: 80 },
  /** Fly's size rules: CPU counts, and MiB per CPU (min–max), in steps of 256 MiB. */
  cpus: [1, 2, 4, 8, 16] as const,
  memoryPerCpuMb: { shared: [256, 2048], performance: [2048, 8192] } as const,
  memoryStepMb: 256,
} as const;

/** The fraction of one CPU each vCPU of `kind` may use once its balance is spent. */
export function baselinePerCpu(kind: CpuKind): number {
  return (kind === "shared" ? FLY_CPU.shared.quotaMs : FLY_CPU.performance.quotaMs) / FLY_CPU.periodMs;
}

/** A fresh machine's burst balance, in CPU-seconds (0 for performance vCPUs, which never need one). */
export function initialBalanceS(g: Guest): number {
  return g.cpu_kind === "shared" ? FLY_CPU.shared.initialBalanceS : 0;
}

export function maxBalanceS(g: Guest): number {
  return g.cpu_kind === "shared" ? FLY_CPU.shared.maxBalanceSPerCpu * g.cpus : 0;
}

/** Null when Fly would accept the size, else why not. */
export function sizeError(g: Guest): string | null {
  if (!(FLY_CPU.cpus as readonly number[]).includes(g.cpus)) return `cpus must be one of ${FLY_CPU.cpus.join(", ")}`;
  const [min, max] = FLY_CPU.memoryPerCpuMb[g.cpu_kind];
  if (g.memory_mb % FLY_CPU.memoryStepMb !== 0) return `memory must be a multiple of ${FLY_CPU.memoryStepMb} MiB`;
  if (g.memory_mb < min * g.cpus || g.memory_mb > max * g.cpus) return `a ${g.cpu_kind} ${g.cpus}-CPU guest takes ${min * g.cpus}–${max * g.cpus} MiB`;
  return null;
}

/**
 * Fly's published Machine prices, one table (USD per second while a machine is started).
 * Source: https://docs.fly.io/about/pricing/ ("Started Fly Machines": the page's table is
 * computed from these constants in superfly/docs snippets/RegionPricingSelector.jsx; the typed
 * rows agree: shared-cpu-1x 256MB $2.19, performance-1x 2GB $33.00 per 30 days, additional RAM
 * $6.00/GB), read 2026-11-26. Each vCPU includes 256 MB (shared) or 2 GB (performance); RAM
 * above that is billed per GB. Regions are marked up from Ashburn (iad): "Price relative to
 * Ashburn (iad), as billed" — ord 1.25, the region the replaced system runs in. (The table this
 * replaces, $1.94 / $31 / $5 per month, was the page's before Fly raised it.)
 */
export const FLY_PRICES = {
  source: "https://docs.fly.io/about/pricing/ (read 2026-11-26; per-second constants of the page's table)",
  secondsPerMonth: 2_592_000,
  perCpuSecond: { shared: 0.0000008465, performance: 0.000012732 },
  includedMbPerCpu: { shared: 256, performance: 2048 },
  extraRamGbSecond: 0.000002316,
  /** Price relative to iad, per region, as the page lists them; a region not listed is taken at iad's price. */
  regionMarkup: {
    iad: 1,
    ewr: 1,
    ord: 1.25,
    dfw: 1.25,
    ams: 1.038461538,
    arn: 1.038461538,
    bom: 1.076923077,
    yyz: 1.115384615,
    lhr: 1.134615385,
    cdg: 1.134615385,
    fra: 1.153846154,
    sjc: 1.192307692,
    lax: 1.199519231,
    sin: 1.269230769,
    syd: 1.269230769,
    jnb: 1.302884615,
    nrt: 1.307692308,
    gru: 1.615384615,
  } as Record<string, number>,
} as const;

/** How much more than iad a machine costs in `region` (1 for a region the table does not list). */
export function regionMarkup(region: string | null | undefined): number {
  return (region && FLY_PRICES.regionMarkup[region]) || 1;
}

/** USD per second of a started machine of this size in `region` (iad when not given). */
export function pricePerSecond(g: Guest, region?: string | null): number {
  const included = FLY_PRICES.includedMbPerCpu[g.cpu_kind] * g.cpus;
  const base = FLY_PRICES.perCpuSecond[g.cpu_kind] * g.cpus + (Math.max(0, g.memory_mb - included) / 1024) * FLY_PRICES.extraRamGbSecond;
  return base * regionMarkup(region);
}

export const guestName = (g: Guest) => `${g.cpu_kind === "shared" ? "shared-cpu" : "performance"}-${g.cpus}x ${g.memory_mb} MB`;

/**
 * Wall time of one conversion of `cpuS` CPU-seconds on a machine with `sharers` such conversions
 * running side by side (slots share the machine's CPUs and its quota), each able to keep
 * `parallelism` CPUs busy, starting from `balanceS` of burst balance. While the balance lasts a
 * shared machine runs at up to 100%; then at its baseline (6.25% per vCPU), split evenly.
 */
export function conversionWallS(opts: { cpuS: number; parallelism: number; guest: Guest; balanceS?: number; sharers?: number }): {
  wallS: number;
  throttledS: number;
  balanceAfterS: number;
} {
  const { cpuS, guest } = opts;
  const k = Math.max(1, opts.sharers ?? 1);
  const balance = opts.balanceS ?? initialBalanceS(guest);
  const rate = Math.min(opts.parallelism, guest.cpus / k); // CPUs each conversion gets while not throttled
  const full = cpuS / rate;
  if (guest.cpu_kind === "performance") return { wallS: full, throttledS: 0, balanceAfterS: 0 };
  const baseline = guest.cpus * baselinePerCpu("shared");
  const used = k * rate;
  if (used <= baseline) return { wallS: full, throttledS: 0, balanceAfterS: Math.min(maxBalanceS(guest), balance + (baseline - used) * full) };
  const burstS = balance / (used - baseline);
  if (full <= burstS) return { wallS: full, throttledS: 0, balanceAfterS: balance - (used - baseline) * full };
  const slow = Math.min(rate, baseline / k);
  const throttledS = (cpuS - rate * burstS) / slow;
  return { wallS: burstS + throttledS, throttledS, balanceAfterS: 0 };
}

/** One stage of a task on a machine: bytes over its network, or CPU-seconds on its CPUs. */
export type Stage = { kind: "net"; bytes: number } | { kind: "cpu"; cpuS: number; parallelism: number } | { kind: "wait"; s: number };

interface Job {
  stages: Stage[];
  /** What is left of the current stage (bytes, CPU-seconds or seconds). */
  left: number;
}

/**
 * A machine as a fluid model: tasks in their network stage share its throughput evenly; tasks
 * in their CPU stage share its CPUs (each up to its parallelism) and, on shared vCPUs, its
 * quota: at 100% while the pooled balance lasts, then at the baseline. Times are in seconds.
 * Drive it with `advance(t)`; `nextEventS()` says when a stage ends or the balance runs out.
 */
export class MachineModel {
  readonly guest: Guest;
  readonly netBytesPerS: number;
  balanceS: number;
  /** CPU-seconds spent, and seconds any CPU stage ran throttled (for the report). */
  cpuSpentS = 0;
  throttledS = 0;
  #now: number;
  readonly #jobs = new Map<string, Job>();

  constructor(guest: Guest, opts: { netBytesPerS: number; nowS: number; balanceS?: number }) {
    this.guest = guest;
    this.netBytesPerS = opts.netBytesPerS;
    this.balanceS = opts.balanceS ?? initialBalanceS(guest);
    this.#now = opts.nowS;
  }

  get size(): number {
    return this.#jobs.size;
  }

  add(id: string, stages: Stage[], nowS: number): void {
    this.advance(nowS);
    const job: Job = { stages: [...stages], left: 0 };
    this.#jobs.set(id, job);
    this.#enter(job);
  }

  remove(id: string, nowS: number): void {
    this.advance(nowS);
    this.#jobs.delete(id);
  }

  #enter(job: Job): void {
    const s = job.stages[0];
    job.left = s === undefined ? 0 : s.kind === "net" ? s.bytes : s.kind === "cpu" ? s.cpuS : s.s;
  }

  /** Rates now: per job (units of its current stage per second), CPU used and the cap on it. */
  #rates(): { rates: Map<Job, number>; cpuUsed: number; throttled: boolean } {
    const rates = new Map<Job, number>();
    const net = [...this.#jobs.values()].filter((j) => j.stages[0]?.kind === "net");
    const cpu = [...this.#jobs.values()].filter((j) => j.stages[0]?.kind === "cpu");
    for (const j of net) rates.set(j, this.netBytesPerS / net.length);
    for (const j of this.#jobs.values()) if (j.stages[0]?.kind === "wait") rates.set(j, 1);
    const demand = cpu.reduce((n, j) => n + (j.stages[0] as { parallelism: number }).parallelism, 0);
    const baseline = this.guest.cpus * baselinePerCpu(this.guest.cpu_kind);
    const throttled = this.guest.cpu_kind === "shared" && this.balanceS <= 1e-9 && demand > baseline;
    const cap = throttled ? baseline : this.guest.cpus;
    const share = demand > cap ? cap / demand : 1;
    for (const j of cpu) rates.set(j, (j.stages[0] as { parallelism: number }).parallelism * share);
    return { rates, cpuUsed: Math.min(demand, cap), throttled };
  }

  /** Moves the model to `nowS` (no stage may end inside the interval: call at each `nextEventS`). */
  advance(nowS: number): void {
    let dt = nowS - this.#now;
    while (dt > 1e-12) {
      const { rates, cpuUsed, throttled } = this.#rates();
      const step = Math.min(dt, this.#untilChange(rates, cpuUsed) ?? Infinity);
      // A stage within a microsecond of its end has ended: floating-point residue (bytes ~1e8, clock
      // seconds ~1e9) must never leave an event too small to move time forward.
      for (const [j, r] of rates) j.left = r > 0 && (j.left - r * step) / r <= 1e-6 ? 0 : Math.max(0, j.left - r * step);
      this.cpuSpentS += cpuUsed * step;
      if (throttled) this.throttledS += step;
      if (this.guest.cpu_kind === "shared") {
        const baseline = this.guest.cpus * baselinePerCpu("shared");
        this.balanceS = Math.min(maxBalanceS(this.guest), Math.max(0, this.balanceS + (baseline - cpuUsed) * step));
      }
      // Stages that ended move on to the next one (whose rate starts now).
      for (const j of this.#jobs.values()) {
        while (j.stages.length > 0 && j.left <= 1e-9) {
          j.stages.shift();
          this.#enter(j);
        }
      }
      dt -= step;
      this.#now += step;
    }
    this.#now = nowS;
  }

  /** Seconds until a stage ends or the balance runs out, at the current rates. */
  #untilChange(rates: Map<Job, number>, cpuUsed: number): number | null {
    let t: number | null = null;
    for (const [j, r] of rates) if (r > 0) t = Math.min(t ?? Infinity, j.left / r);
    if (this.guest.cpu_kind === "shared" && this.balanceS > 1e-9) {
      const drain = cpuUsed - this.guest.cpus * baselinePerCpu("shared");
      if (drain > 0) t = Math.min(t ?? Infinity, this.balanceS / drain);
    }
    return t;
  }

  /** When the next stage ends or the rates change; null when nothing is running. */
  nextEventS(): number | null {
    const { rates, cpuUsed } = this.#rates();
    const t = this.#untilChange(rates, cpuUsed);
    return t === null ? null : this.#now + t;
  }

  /** Tasks whose every stage has ended (removed from the machine). */
  takeFinished(): string[] {
    const done: string[] = [];
    for (const [id, j] of this.#jobs) if (j.stages.length === 0) done.push(id);
    for (const id of done) this.#jobs.delete(id);
    return done;
  }
}
