// The emulator's machines and their state machine (https://fly.io/docs/machines/machine-states/):
// created → (boot delay) → started → the runner reports the exit → stopped → destroyed
// (auto_destroy, or a destroy). It keeps each machine's events, logs and the states it has
// visited (what the wait endpoint answers from). Web standards only.
import type { Clock } from "./clock.ts";
import type { MachineRunner, RunnerEvents, RunnerMachine } from "./runner.ts";

export interface LogLine {
  time: number;
  stream: "stdout" | "stderr";
  line: string;
}

export interface MachineEvent {
  type: string;
  status: string;
  source: "user" | "flyd";
  timestamp: number;
}

export interface MachineConfig {
  image: string;
  guest: { cpu_kind: string; cpus: number; memory_mb: number };
  env: Record<string, string>;
  metadata: Record<string, string>;
  auto_destroy: boolean;
  restart: { policy: string };
  [key: string]: unknown;
}

export interface MachineRecord {
  id: string;
  name: string;
  app: string;
  region: string;
  state: string;
  instanceId: string;
  config: MachineConfig;
  createdAt: number;
  updatedAt: number;
  events: MachineEvent[];
  visited: Set<string>;
  exitCode: number | undefined;
  dieSilently: boolean;
  logs: LogLine[];
  timer: unknown;
}

export interface MachineOptions {
  /** Time between stopped and destroyed for auto_destroy machines; default 0 (next tick). */
  autoDestroyDelayMs?: number;
  /** Lines kept per machine; default 2000 (oldest dropped). */
  maxLogLinesPerMachine?: number;
}

/** What a create asks for, once the API has validated it. */
export interface NewMachine {
  app: string;
  name: string | undefined;
  region: string;
  config: MachineConfig;
  /** Fault: the machine dies before it can call back. */
  dieSilently: boolean;
  bootDelayMs: number;
}

const TERMINAL = new Set(["destroyed"]);
/** The states the wait endpoint accepts. */
export const WAITABLE = new Set(["started", "stopped", "suspended", "destroyed", "failed", "settled"]);

export class Machines {
  #clock: Clock;
  #runner: MachineRunner;
  /** Read at each use, so a test may change them mid-run. */
  #opts: MachineOptions;
  #byId = new Map<string, MachineRecord>();
  #waiters = new Set<() => void>();
  #stopped = false;

  constructor(clock: Clock, runner: MachineRunner, opts: MachineOptions) {
    this.#clock = clock;
    this.#runner = runner;
    this.#opts = opts;
  }

  get(id: string): MachineRecord | undefined {
    return this.#byId.get(id);
  }

  all(): MachineRecord[] {
    return [...this.#byId.values()];
  }

  isTerminal(m: MachineRecord): boolean {
    return TERMINAL.has(m.state);
  }

  liveCount(): number {
    return this.all().filter((m) => !this.isTerminal(m)).length;
  }

  /** A new machine in `created`; it boots after `bootDelayMs`. */
  create(spec: NewMachine): MachineRecord {
    const now = this.#clock.now();
    const m: MachineRecord = {
      id: newId(),
      name: spec.name ?? "",
      app: spec.app,
      region: spec.region,
      state: "created",
      instanceId: newId().toUpperCase(),
      config: spec.config,
      createdAt: now,
      updatedAt: now,
      events: [],
      visited: new Set(),
      exitCode: undefined,
      dieSilently: spec.dieSilently,
      logs: [],
      timer: undefined,
    };
    if (!m.name) m.name = `machine-${m.id}`;
    this.#byId.set(m.id, m);
    this.#setState(m, "created", "user", "launch");
    m.timer = this.#clock.setTimeout(() => this.#boot(m), spec.bootDelayMs);
    return m;
  }

  /** Kills the machine's process and marks it destroyed (the API has checked it may be). */
  async destroy(m: MachineRecord): Promise<void> {
    if (m.timer !== undefined) this.#clock.clearTimeout(m.timer);
    await this.#runner.kill(m.id);
    this.#setState(m, "destroyed", "user", "destroy");
  }

  /** Waits up to `timeoutMs` for the machine to have reached `state` (one of WAITABLE); true when it has. */
  async waitFor(m: MachineRecord, state: string, timeoutMs: number): Promise<boolean> {
    const reached = () => m.visited.has(state) || (state === "settled" && m.state !== "created" && m.state !== "starting");
    if (!reached()) {
      await new Promise<void>((resolve) => {
        const check = () => {
          if (!reached() && !this.#stopped) return;
          this.#clock.clearTimeout(timer);
          this.#waiters.delete(check);
          resolve();
        };
        const timer = this.#clock.setTimeout(() => {
          this.#waiters.delete(check);
          resolve();
        }, timeoutMs);
        this.#waiters.add(check);
      });
    }
    return reached();
  }

  /** The machine as the API shows it. */
  view(m: MachineRecord): Record<string, unknown> {
    return {
      id: m.id,
      name: m.name,
      state: m.state,
      region: m.region,
      instance_id: m.instanceId,
      private_ip: `fdaa:0:1:a7b:1::${m.id.slice(0, 4)}`,
      config: structuredClone(m.config),
      image_ref: { registry: "registry.fly.io", repository: m.config.image, tag: "latest" },
      created_at: new Date(m.createdAt).toISOString(),
      updated_at: new Date(m.updatedAt).toISOString(),
      events: [...m.events].reverse().map((e) => ({ ...e, ...(e.type === "exit" ? { request: { exit_event: { exit_code: m.exitCode } } } : {}) })),
    };
  }

  /** Kills every live machine, cancels timers and answers pending waits. */
  async stop(): Promise<void> {
    this.#stopped = true;
    const kills: (void | Promise<void>)[] = [];
    for (const m of this.#byId.values()) {
      if (m.timer !== undefined) this.#clock.clearTimeout(m.timer);
      if (!this.isTerminal(m)) {
        kills.push(this.#runner.kill(m.id));
        this.#setState(m, "destroyed", "user");
      }
    }
    await Promise.all(kills);
    for (const wake of this.#waiters) wake();
  }

  #boot(m: MachineRecord): void {
    m.timer = undefined;
    if (m.state !== "created" || this.#stopped) return;
    this.#setState(m, "started", "flyd", "start");
    const events: RunnerEvents = {
      log: (line, stream = "stdout") => {
        m.logs.push({ time: this.#clock.now(), stream, line });
        const max = this.#opts.maxLogLinesPerMachine ?? 2000;
        if (m.logs.length > max) m.logs.splice(0, m.logs.length - max);
      },
      exit: (code) => this.#exited(m, code),
    };
    const machine: RunnerMachine = {
      id: m.id,
      name: m.name,
      appName: m.app,
      region: m.region,
      image: m.config.image,
      guest: m.config.guest,
      env: { ...m.config.env },
      metadata: { ...m.config.metadata },
      dieSilently: m.dieSilently,
    };
    Promise.resolve()
      .then(() => this.#runner.start(machine, events))
      .catch((error: unknown) => {
        events.log(`failed to start machine: ${error instanceof Error ? error.message : String(error)}`, "stderr");
        this.#exited(m, 1);
      });
  }

  #exited(m: MachineRecord, code: number): void {
    if (m.state !== "started") return;
    m.exitCode = code;
    this.#setState(m, "stopped", "flyd", "exit");
    if (m.config.auto_destroy) {
      m.timer = this.#clock.setTimeout(() => {
        m.timer = undefined;
        if (m.state === "stopped") this.#setState(m, "destroyed", "flyd", "destroy");
      }, this.#opts.autoDestroyDelayMs ?? 0);
    }
  }

  #setState(m: MachineRecord, state: string, source: "user" | "flyd", type = state): void {
    m.state = state;
    m.visited.add(state);
    m.updatedAt = this.#clock.now();
    m.events.push({ type, status: state, source, timestamp: m.updatedAt });
    for (const check of [...this.#waiters]) {
      check();
    }
  }
}

/** Random, not seeded: ids must not repeat across restarts (logs are kept per machine id). */
function newId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(7));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
