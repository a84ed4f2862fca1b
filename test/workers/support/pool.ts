// Pool machines for workerd tests: a scripted stand-in, NOT fly-worker's pool loop. fly-worker/
// pool.ts needs Node (sharp, undici, node:timers) and cannot run in workerd; this runner speaks
// the same lease contract (shared/contracts.ts) to the orchestrator through exports.default.fetch
// — lease, call back, lease again, exit on done — so the test can choose what each machine does
// with each task, including what the real loop never does (hold a lease without heartbeating,
// die holding it). It heartbeats only when a test calls heartbeat(), never retries a lease and
// has no idle timeout: the real loop's meet the real engine in test/e2e/pool-lease.test.ts.
import { exports } from "cloudflare:workers";
import { machineProcessEnv, type MachineRunner, type RunnerEvents, type RunnerMachine } from "../../../local/fly-emulator/runner.ts";
import { LeaseResponse } from "../../../shared/contracts.ts";
import { errorBody, postCallback, successBody, UPLOAD_REFUSED, writeOutput } from "./engine.ts";

type TaskLease = Extract<LeaseResponse, { kind: "task" }>;

/**
 * What a machine does with a leased task: call back success or error and lease again; `die`:
 * exit (137) holding the lease; `hold`: stay up holding it, never heartbeating nor calling back.
 */
export type PoolAction = "succeed" | "error" | "die" | "hold";

export interface HeldTask {
  machine: RunnerMachine;
  taskId: string;
  /** The task's env as the machine laid it out (lease env under the machine's). */
  env: Record<string, string>;
}

export interface PoolCallback {
  machineId: string;
  taskId: string;
  httpStatus: number;
  outcome: string | undefined;
}

export class PoolRunner implements MachineRunner {
  readonly started: RunnerMachine[] = [];
  readonly live = new Map<string, RunnerMachine>();
  /** Every lease answer, by machine. */
  readonly leases: { machineId: string; answer: LeaseResponse | { http: number } }[] = [];
  readonly callbacks: PoolCallback[] = [];
  /** Tasks held by machines told to `hold` or `die`. */
  readonly held = new Map<string, HeldTask>();
  readonly exits: { machineId: string; code: number }[] = [];
  /** Per task: what the machine that leased it does (nth: this machine's nth lease, 1-based). */
  onTask: (machine: RunnerMachine, lease: TaskLease, nth: number) => PoolAction = () => "succeed";
  /** Machines that boot but never lease (they only leave when the engine destroys them). */
  lazy: (machine: RunnerMachine, nth: number) => boolean = () => false;
  /** Tests compress time: a machine sleeps at most this long on `wait`. */
  maxWaitMs = 25;
  readonly #killed = new Set<string>();

  start(machine: RunnerMachine, events: RunnerEvents): void {
    this.started.push(machine);
    this.live.set(machine.id, machine);
    if (this.lazy(machine, this.started.length)) return;
    // POOL_CONCURRENCY lease loops, as fly-worker runs them; the machine exits when all have ended.
    const slots = Number(machineProcessEnv(machine).POOL_CONCURRENCY ?? "1");
    queueMicrotask(() => {
      Promise.all(Array.from({ length: slots }, () => this.#loop(machine, events))).then(
        (ends) => {
          if (ends.includes("stays")) return; // a slot holds its lease: the machine stays up
          const failed = ends.find((e) => typeof e === "number" && e !== 0);
          if (!ends.includes("gone")) this.#exit(machine, events, typeof failed === "number" ? failed : 0);
        },
        (error: unknown) => {
          events.log(`pool loop crashed: ${error instanceof Error ? error.message : String(error)}`, "stderr");
          this.#exit(machine, events, 70);
        },
      );
    });
  }

  kill(id: string): void {
    this.#killed.add(id);
    this.live.delete(id);
  }

  /** One slot's loop: its exit code, "stays" (holding a lease) or "gone" (the machine died or was killed). */
  async #loop(machine: RunnerMachine, events: RunnerEvents): Promise<number | "stays" | "gone"> {
    const env = machineProcessEnv(machine);
    let nth = 0;
    for (;;) {
      if (this.#killed.has(machine.id) || !this.live.has(machine.id)) return "gone";
      const res = await lease(env);
      if (res.status !== 200) {
        this.leases.push({ machineId: machine.id, answer: { http: res.status } });
        events.log(`lease refused: HTTP ${res.status} ${await res.text()}`, "stderr");
        return 78;
      }
      const answer = LeaseResponse.parse(await res.json());
      this.leases.push({ machineId: machine.id, answer });
      if (answer.kind === "done") return 0;
      if (answer.kind === "wait") {
        await new Promise((r) => setTimeout(r, Math.min(answer.wait_ms, this.maxWaitMs)));
        continue;
      }
      const taskEnv = { ...answer.env, ...env };
      const action = machine.dieSilently ? "die" : this.onTask(machine, answer, ++nth);
      if (action === "die" || action === "hold") {
        this.held.set(answer.task_id, { machine, taskId: answer.task_id, env: taskEnv });
        if (action === "hold") return "stays";
        this.#exit(machine, events, 137);
        return "gone";
      }
      const written = action === "succeed" ? await writeOutput(taskEnv) : true;
      const cb = await postCallback(taskEnv, !written ? errorBody(taskEnv, UPLOAD_REFUSED(taskEnv)) : action === "succeed" ? successBody(taskEnv) : errorBody(taskEnv, "simulated failure"));
      const body = (await cb.json()) as { outcome?: string };
      this.callbacks.push({ machineId: machine.id, taskId: answer.task_id, httpStatus: cb.status, outcome: body.outcome });
    }
  }

  #exit(machine: RunnerMachine, events: RunnerEvents, code: number): void {
    this.live.delete(machine.id);
    if (this.#killed.has(machine.id)) return;
    this.exits.push({ machineId: machine.id, code });
    events.exit(code);
  }

  /** The callback a machine holding `taskId` would send now (a late one, after its lease lapsed). */
  async lateCallback(taskId: string): Promise<{ status: number; body: Record<string, unknown> }> {
    const held = this.held.get(taskId);
    if (!held) throw new Error(`no machine holds ${taskId}`);
    await writeOutput(held.env);
    const res = await postCallback(held.env, successBody(held.env));
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  /** A heartbeat from the machine holding `taskId`. */
  async heartbeat(taskId: string): Promise<{ status: number; body: Record<string, unknown> }> {
    const held = this.held.get(taskId);
    if (!held) throw new Error(`no machine holds ${taskId}`);
    const env = held.env;
    const res = await exports.default.fetch(
      new Request(`${env.LEASE_URL}/heartbeat`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${env.LEASE_TOKEN}` },
        body: JSON.stringify({ worker_id: env.WORKER_ID, task_id: taskId }),
      }),
    );
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  /** Tasks each completed by a callback the engine counted (outcome "done"). */
  doneCallbacks(): Map<string, number> {
    const per = new Map<string, number>();
    for (const c of this.callbacks) if (c.outcome === "done") per.set(c.taskId, (per.get(c.taskId) ?? 0) + 1);
    return per;
  }
}

/** POST LEASE_URL as a pool machine: `{ worker_id, machine_id }`, bearer LEASE_TOKEN (or `token`). */
export function lease(env: Record<string, string>, token?: string): Promise<Response> {
  return exports.default.fetch(
    new Request(env.LEASE_URL, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token ?? env.LEASE_TOKEN}` },
      body: JSON.stringify({ worker_id: env.WORKER_ID, machine_id: env.FLY_MACHINE_ID }),
    }),
  );
}
