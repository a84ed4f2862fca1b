// Runner: what "running a machine" means to the emulator — a child process (server.ts), a timer,
// a test double. The emulator's state machine starts a machine's runner on boot and stops the
// machine when the runner reports its exit. Web standards only.
import { realClock, type Clock } from "./clock.ts";

export interface RunnerMachine {
  id: string;
  name: string;
  appName: string;
  region: string;
  image: string;
  guest: { cpu_kind: string; cpus: number; memory_mb: number };
  /** config.env as given at create; the runner adds FLY_MACHINE_ID, FLY_APP_NAME, FLY_REGION. */
  env: Record<string, string>;
  metadata: Record<string, string>;
  /** Fault: the machine must die before it can call back. */
  dieSilently: boolean;
}

export interface RunnerEvents {
  log(line: string, stream?: "stdout" | "stderr"): void;
  /** The main process ended; the machine stops (and is destroyed when auto_destroy is set). */
  exit(code: number): void;
}

export interface MachineRunner {
  start(machine: RunnerMachine, events: RunnerEvents): void | Promise<void>;
  /** Stop the machine's process now (destroy with force, emulator stop). Must not throw. */
  kill(id: string): void | Promise<void>;
}

/** The machine env as a real machine sees it. */
export function machineProcessEnv(machine: RunnerMachine): Record<string, string> {
  return { ...machine.env, FLY_MACHINE_ID: machine.id, FLY_APP_NAME: machine.appName, FLY_REGION: machine.region };
}

export interface SimulatedRunnerOptions {
  clock?: Clock;
  /** How long each machine runs; a function gets the machine (e.g. to vary by metadata). */
  durationMs?: number | ((machine: RunnerMachine) => number);
  /** What the machine does at the end of its run, e.g. POST its callback. Skipped when it dies silently. */
  work?: (machine: RunnerMachine, env: Record<string, string>, events: RunnerEvents) => Promise<number | void>;
}

/** No process: the machine "runs" for durationMs, does its work, then exits. */
export class SimulatedRunner implements MachineRunner {
  #clock: Clock;
  #opts: SimulatedRunnerOptions;
  #timers = new Map<string, unknown>();
  constructor(opts: SimulatedRunnerOptions = {}) {
    this.#opts = opts;
    this.#clock = opts.clock ?? realClock;
  }
  start(machine: RunnerMachine, events: RunnerEvents): void {
    const d = this.#opts.durationMs ?? 0;
    const duration = typeof d === "function" ? d(machine) : d;
    if (machine.dieSilently) {
      events.log("simulated machine killed before calling back", "stderr");
      this.#timers.set(machine.id, this.#clock.setTimeout(() => this.#finish(machine.id, events, 137), 0));
      return;
    }
    this.#timers.set(
      machine.id,
      this.#clock.setTimeout(() => {
        const work = this.#opts.work;
        if (!work) return this.#finish(machine.id, events, 0);
        work(machine, machineProcessEnv(machine), events).then(
          (code) => this.#finish(machine.id, events, typeof code === "number" ? code : 0),
          (error: unknown) => {
            events.log(`simulated work failed: ${error instanceof Error ? error.message : String(error)}`, "stderr");
            this.#finish(machine.id, events, 1);
          },
        );
      }, duration),
    );
  }
  kill(id: string): void {
    const timer = this.#timers.get(id);
    if (timer !== undefined) this.#clock.clearTimeout(timer);
    this.#timers.delete(id);
  }
  #finish(id: string, events: RunnerEvents, code: number): void {
    if (!this.#timers.has(id)) return;
    this.#timers.delete(id);
    events.exit(code);
  }
}

/** Work for SimulatedRunner: POST a success callback the way fly-worker would. */
export function simulatedCallback(fetcher: typeof fetch = (i, init) => fetch(i, init)) {
  return async (_machine: RunnerMachine, env: Record<string, string>): Promise<number> => {
    const url = env.CALLBACK_URL;
    if (!url) return 0;
    const key = env.OUTPUT_R2_KEY ?? `${env.INPUT_R2_KEY ?? "output"}.jpg`;
    const response = await fetcher(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${env.CALLBACK_TOKEN ?? ""}` },
      body: JSON.stringify({
        task_id: env.TASK_ID,
        batch_id: env.BATCH_ID,
        status: "success",
        output_r2_key: key,
        output_file_name: key.split("/").pop(),
        output_file_size: 1,
      }),
    });
    await response.body?.cancel();
    return response.ok ? 0 : 2;
  };
}
