// The Fly Machines API emulator: the subset of https://fly.io/docs/machines/api/machines-resource/
// that fanout uses, answered the way the real API answers it. Web standards only (no node:
// imports): it runs behind the Node server of the local stack and inside workerd tests alike.
//
// Lifecycle: created → (boot delay) → started → runner reports exit → stopped → destroyed
// (auto_destroy). Faults are drawn from a seeded PRNG so a failing run can be replayed.

// ---------------------------------------------------------------------------------------
// Time

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/** A clock that moves only when told to: `advance(ms)` fires every timer due by then, in order. */
export class ManualClock implements Clock {
  #now: number;
  #timers = new Map<number, { at: number; fn: () => void }>();
  #next = 1;
  constructor(startMs = Date.UTC(2026, 10, 1)) {
    this.#now = startMs;
  }
  now(): number {
    return this.#now;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), fn });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }
  /** When the earliest timer is due, or null when none is set. */
  nextAt(): number | null {
    let at: number | null = null;
    for (const t of this.#timers.values()) if (at === null || t.at < at) at = t.at;
    return at;
  }
  /** Sets the time without firing anything (a simulation that drives the clock itself). */
  set(now: number): void {
    this.#now = now;
  }
  /** Fires the earliest timer due by `upTo` (moving time to it); false when there is none. */
  #fireNext(upTo: number): boolean {
    let dueId = -1;
    let dueAt = Number.POSITIVE_INFINITY;
    for (const [id, t] of this.#timers) {
      if (t.at <= upTo && (t.at < dueAt || (t.at === dueAt && id < dueId))) {
        dueId = id;
        dueAt = t.at;
      }
    }
    if (dueId === -1) return false;
    const timer = this.#timers.get(dueId)!;
    this.#timers.delete(dueId);
    this.set(Math.max(this.#now, timer.at));
    timer.fn();
    return true;
  }
  /** Fires every timer due by now, in time order (timers they set for now fire too). */
  fireDue(): void {
    while (this.#fireNext(this.#now));
  }
  /** Moves time forward, firing due timers (including ones they schedule) and letting promises settle. */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    while (this.#fireNext(target)) await settle();
    this.set(target);
    await settle();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

/** mulberry32: small, seedable, good enough to pick faults. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------------------
// Runner: what "running a machine" means (a child process, a timer, a test double)

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

// ---------------------------------------------------------------------------------------
// Options

export interface RateLimit {
  perSecond: number;
  burst: number;
}

export interface FaultOptions {
  /** Seed of the PRNG every fault (and machine id) is drawn from; default 1. */
  seed?: number;
  /** Fraction of creates answered 429 even with tokens left. */
  createRateLimitRate?: number;
  /** Fraction of API requests answered 503 before doing anything. */
  serverErrorRate?: number;
  /** Fraction of creates that create the machine and then answer 500 (the ambiguous case). */
  lostCreateResponseRate?: number;
  /** Delay before a create's response (the machine exists meanwhile): provokes client timeouts. */
  createResponseDelayMs?: number;
  /** Per region, the fraction of creates refused for capacity, e.g. { iad: 1.0 }. */
  capacityErrorsByRegion?: Record<string, number>;
  /** Time a machine spends in `created` before `started`. */
  bootDelayMs?: number;
  /** Fraction of machines that die without calling back. */
  dieSilentlyRate?: number;
}

export interface FlyEmulatorOptions {
  /** Bearer token to require; default: any non-empty token. */
  token?: string;
  /** Apps that exist; default: any app name. */
  apps?: string[];
  runner?: MachineRunner;
  clock?: Clock;
  /** Live (not destroyed) machines across apps; beyond it creates are refused for capacity. Default 100. */
  maxLiveMachines?: number;
  /** Regions accepted at create; default Fly's public region list. */
  regions?: string[];
  /** Default: the documented limits (create 1/s burst 3, get/list 5/s burst 10, other actions 1/s burst 3). `false` disables. */
  rateLimits?: false | { create?: RateLimit; read?: RateLimit; other?: RateLimit };
  /** Time between stopped and destroyed for auto_destroy machines; default 0 (next tick). */
  autoDestroyDelayMs?: number;
  /** Longest accepted `timeout` of the wait endpoint, seconds; default 60. */
  maxWaitSeconds?: number;
  faults?: FaultOptions;
  /** Lines kept per machine; default 2000 (oldest dropped). */
  maxLogLinesPerMachine?: number;
}

// ---------------------------------------------------------------------------------------
// Records

export interface RecordedRequest {
  method: string;
  /** Path and query, e.g. /v1/apps/fanout-worker/machines?metadata.batch_id=b1 */
  path: string;
  /** Parsed JSON body, with every config.env value replaced by "[redacted]". */
  body: unknown;
  time: number;
  status: number;
  /** Why the emulator refused it, when it did: a fault it injected or a limit it enforced. */
  fault?: EmulatorFault;
}

/** Every way the emulator refuses a request, so a run can tell injected faults from real limits. */
export type EmulatorFault = "rate_limited" | "injected_429" | "injected_5xx" | "capacity_region" | "capacity_full" | "lost_create_response";

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

interface MachineRecord {
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

interface MachineConfig {
  image: string;
  guest: { cpu_kind: string; cpus: number; memory_mb: number };
  env: Record<string, string>;
  metadata: Record<string, string>;
  auto_destroy: boolean;
  restart: { policy: string };
  [key: string]: unknown;
}

/** Fly's public regions (fly.io/docs/reference/regions). */
export const FLY_REGIONS = [
  "ams", "arn", "atl", "bog", "bom", "bos", "cdg", "den", "dfw", "ewr", "eze", "fra", "gdl", "gig",
  "gru", "hkg", "iad", "jnb", "lax", "lhr", "mad", "mia", "nrt", "ord", "otp", "phx", "qro", "scl",
  "sea", "sin", "sjc", "syd", "waw", "yul", "yyz",
];

const TERMINAL = new Set(["destroyed"]);
const WAITABLE = new Set(["started", "stopped", "suspended", "destroyed", "failed", "settled"]);

// ---------------------------------------------------------------------------------------

export class FlyEmulator {
  readonly requests: RecordedRequest[] = [];
  readonly clock: Clock;
  #opts: FlyEmulatorOptions;
  #runner: MachineRunner;
  #random: () => number;
  #machines = new Map<string, MachineRecord>();
  #buckets = new Map<string, { tokens: number; at: number }>();
  #waiters = new Set<() => void>();
  #stopped = false;
  #faultOf = new WeakMap<Response, EmulatorFault>();

  constructor(opts: FlyEmulatorOptions = {}) {
    this.#opts = opts;
    this.clock = opts.clock ?? realClock;
    this.#runner = opts.runner ?? new SimulatedRunner({ clock: this.clock });
    this.#random = seededRandom(opts.faults?.seed ?? 1);
  }

  /** The whole HTTP surface; bound, so `fetch: (i, init) => emu.handle(new Request(i, init))` works. */
  handle = async (request: Request): Promise<Response> => {
    const url = new URL(request.url);
    const text = request.method === "GET" || request.method === "HEAD" ? "" : await request.text();
    const record: RecordedRequest = {
      method: request.method,
      path: url.pathname + url.search,
      body: redactBody(text),
      time: this.clock.now(),
      status: 0,
    };
    let response: Response;
    try {
      response = await this.#route(request, url, text);
    } catch (error) {
      response = fail(500, `emulator error: ${error instanceof Error ? error.message : String(error)}`);
    }
    record.status = response.status;
    const fault = this.#faultOf.get(response);
    if (fault) record.fault = fault;
    if (!url.pathname.startsWith("/_emulator/")) this.requests.push(record);
    return response;
  };

  /** Snapshot of a machine as the API would show it, or undefined. */
  machine(id: string): Record<string, unknown> | undefined {
    const m = this.#machines.get(id);
    return m ? this.#view(m) : undefined;
  }

  machines(): Record<string, unknown>[] {
    return [...this.#machines.values()].map((m) => this.#view(m));
  }

  logs(id: string): LogLine[] {
    return [...(this.#machines.get(id)?.logs ?? [])];
  }

  liveMachineCount(): number {
    return [...this.#machines.values()].filter((m) => !TERMINAL.has(m.state)).length;
  }

  /** Kills every live machine, cancels timers and answers pending waits. */
  async stop(): Promise<void> {
    this.#stopped = true;
    const kills: (void | Promise<void>)[] = [];
    for (const m of this.#machines.values()) {
      if (m.timer !== undefined) this.clock.clearTimeout(m.timer);
      if (!TERMINAL.has(m.state)) {
        kills.push(this.#runner.kill(m.id));
        this.#setState(m, "destroyed", "user");
      }
    }
    await Promise.all(kills);
    for (const wake of this.#waiters) wake();
  }

  // -------------------------------------------------------------------------------------

  async #route(request: Request, url: URL, text: string): Promise<Response> {
    const parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    if (parts[0] === "_emulator") return this.#emulatorRoute(request.method, parts.slice(1));

    const auth = request.headers.get("authorization") ?? "";
    const token = /^Bearer\s+(.+)$/i.exec(auth)?.[1]?.trim() ?? "";
    if (!token || (this.#opts.token !== undefined && token !== this.#opts.token)) {
      return fail(401, "Authenticate: token validation error");
    }
    if (parts[0] !== "v1" || parts[1] !== "apps" || parts.length < 4 || parts[3] !== "machines") {
      return fail(404, "not found");
    }
    const app = parts[2];
    if (this.#opts.apps && !this.#opts.apps.includes(app)) return fail(404, `app not found: ${app}`);
    const id = parts[4];
    const action = parts[5];
    const method = request.method;

    const route =
      id === undefined && method === "GET" ? "list"
      : id === undefined && method === "POST" ? "create"
      : id !== undefined && action === undefined && method === "GET" ? "get"
      : id !== undefined && action === undefined && method === "DELETE" ? "destroy"
      : id !== undefined && action === "wait" && method === "GET" ? "wait"
      : undefined;
    if (route === undefined) return fail(404, `no route for ${method} ${url.pathname}`);

    const limited = this.#rateLimit(route, app, id);
    if (limited) return this.#tag(limited, "rate_limited");
    if (this.#chance(this.#opts.faults?.serverErrorRate)) return this.#tag(fail(503, "service unavailable (injected fault)"), "injected_5xx");

    switch (route) {
      case "list":
        return this.#list(app, url);
      case "create":
        return this.#create(app, text);
      case "get":
        return this.#get(app, id!);
      case "destroy":
        return this.#destroy(app, id!, url);
      case "wait":
        return this.#wait(app, id!, url);
    }
  }

  #emulatorRoute(method: string, parts: string[]): Response {
    if (method !== "GET") return fail(405, "emulator routes are read-only");
    if (parts[0] === "requests" && parts.length === 1) return Response.json(this.requests);
    if (parts[0] === "machines" && parts.length === 1) return Response.json(this.machines().map(stripEnv));
    if (parts[0] === "machines" && parts.length === 3 && parts[2] === "logs") {
      const m = this.#machines.get(parts[1]);
      if (!m) return fail(404, `machine not found: ${parts[1]}`);
      const body = m.logs.map((l) => `${new Date(l.time).toISOString()} ${l.stream} ${l.line}`).join("\n");
      return new Response(body ? `${body}\n` : "", { headers: { "content-type": "text/plain; charset=utf-8" } });
    }
    return fail(404, "unknown emulator route");
  }

  // ------------------------------------------------------------------------- endpoints

  #list(app: string, url: URL): Response {
    const includeDeleted = url.searchParams.get("include_deleted") === "true";
    const region = url.searchParams.get("region");
    const filters: [string, string][] = [];
    for (const [key, value] of url.searchParams) {
      if (key.startsWith("metadata.")) filters.push([key.slice("metadata.".length), value]);
    }
    const found = [...this.#machines.values()].filter(
      (m) =>
        m.app === app &&
        (includeDeleted || !TERMINAL.has(m.state)) &&
        (region === null || m.region === region) &&
        filters.every(([k, v]) => m.config.metadata[k] === v),
    );
    return Response.json(found.map((m) => this.#view(m)));
  }

  async #create(app: string, text: string): Promise<Response> {
    const faults = this.#opts.faults ?? {};
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      return fail(400, "invalid request body: could not parse JSON");
    }
    const invalid = validateCreate(json, this.#opts.regions ?? FLY_REGIONS);
    if (typeof invalid === "string") return fail(422, invalid);
    const { name, region, config } = invalid;

    if (this.#chance(faults.createRateLimitRate)) return this.#tag(this.#tooMany(1000), "injected_429");
    if (this.#chance(faults.capacityErrorsByRegion?.[region])) return this.#tag(capacityError(), "capacity_region");
    if (this.liveMachineCount() >= (this.#opts.maxLiveMachines ?? 100)) return this.#tag(capacityError(), "capacity_full");

    const now = this.clock.now();
    const m: MachineRecord = {
      id: this.#newId(),
      name: name ?? "",
      app,
      region,
      state: "created",
      instanceId: this.#newId().toUpperCase(),
      config,
      createdAt: now,
      updatedAt: now,
      events: [],
      visited: new Set(),
      exitCode: undefined,
      dieSilently: this.#chance(faults.dieSilentlyRate),
      logs: [],
      timer: undefined,
    };
    if (!m.name) m.name = `machine-${m.id}`;
    this.#machines.set(m.id, m);
    this.#setState(m, "created", "user", "launch");
    m.timer = this.clock.setTimeout(() => this.#boot(m), faults.bootDelayMs ?? 0);

    const view = this.#view(m);
    if (this.#chance(faults.lostCreateResponseRate)) return this.#tag(fail(500, "internal error (injected fault after create)"), "lost_create_response");
    if (faults.createResponseDelayMs) await this.#delay(faults.createResponseDelayMs);
    return Response.json(view);
  }

  #get(app: string, id: string): Response {
    const m = this.#machines.get(id);
    if (!m || m.app !== app) return fail(404, "machine not found");
    return Response.json(this.#view(m));
  }

  async #destroy(app: string, id: string, url: URL): Promise<Response> {
    const m = this.#machines.get(id);
    if (!m || m.app !== app || TERMINAL.has(m.state)) return fail(404, "machine not found");
    const force = url.searchParams.get("force") === "true";
    if (!force && (m.state === "started" || m.state === "starting")) {
      return fail(412, "failed to destroy machine: unable to destroy machine, not currently stopped or suspended");
    }
    if (m.timer !== undefined) this.clock.clearTimeout(m.timer);
    await this.#runner.kill(m.id);
    this.#setState(m, "destroyed", "user", "destroy");
    return Response.json({ ok: true });
  }

  async #wait(app: string, id: string, url: URL): Promise<Response> {
    const m = this.#machines.get(id);
    if (!m || m.app !== app) return fail(404, "machine not found");
    const state = url.searchParams.get("state") ?? "started";
    if (!WAITABLE.has(state)) return fail(400, `invalid state "${state}": must be one of ${[...WAITABLE].join(", ")}`);
    const timeoutText = url.searchParams.get("timeout") ?? "60";
    const timeout = Number(timeoutText);
    const max = this.#opts.maxWaitSeconds ?? 60;
    if (!Number.isInteger(timeout) || timeout < 1 || timeout > max) {
      return fail(400, `invalid timeout "${timeoutText}": must be whole seconds between 1 and ${max}`);
    }
    const reached = () => m.visited.has(state) || (state === "settled" && m.state !== "created" && m.state !== "starting");
    if (!reached()) {
      await new Promise<void>((resolve) => {
        const check = () => {
          if (!reached() && !this.#stopped) return;
          this.clock.clearTimeout(timer);
          this.#waiters.delete(check);
          resolve();
        };
        const timer = this.clock.setTimeout(() => {
          this.#waiters.delete(check);
          resolve();
        }, timeout * 1000);
        this.#waiters.add(check);
      });
    }
    if (!reached()) return fail(408, `deadline_exceeded: machine ${id} did not reach state ${state} within ${timeout}s`);
    return Response.json({ ok: true });
  }

  // ------------------------------------------------------------------------- lifecycle

  #boot(m: MachineRecord): void {
    m.timer = undefined;
    if (m.state !== "created" || this.#stopped) return;
    this.#setState(m, "started", "flyd", "start");
    const events: RunnerEvents = {
      log: (line, stream = "stdout") => {
        m.logs.push({ time: this.clock.now(), stream, line });
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
      m.timer = this.clock.setTimeout(() => {
        m.timer = undefined;
        if (m.state === "stopped") this.#setState(m, "destroyed", "flyd", "destroy");
      }, this.#opts.autoDestroyDelayMs ?? 0);
    }
  }

  #setState(m: MachineRecord, state: string, source: "user" | "flyd", type = state): void {
    m.state = state;
    m.visited.add(state);
    m.updatedAt = this.clock.now();
    m.events.push({ type, status: state, source, timestamp: m.updatedAt });
    for (const check of [...this.#waiters]) {
      check();
    }
  }

  // ------------------------------------------------------------------------- helpers

  #view(m: MachineRecord): Record<string, unknown> {
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

  /** Token buckets per documented scope: create per app, reads per app, other actions per machine. */
  #rateLimit(route: string, app: string, id: string | undefined): Response | undefined {
    const limits = this.#opts.rateLimits;
    if (limits === false) return undefined;
    const isRead = route === "get" || route === "list";
    const limit: RateLimit =
      route === "create" ? (limits?.create ?? { perSecond: 1, burst: 3 })
      : isRead ? (limits?.read ?? { perSecond: 5, burst: 10 })
      : (limits?.other ?? { perSecond: 1, burst: 3 });
    const key = route === "create" || isRead ? `${app}:${route}` : `${app}:${id}:${route}`;
    const now = this.clock.now();
    const bucket = this.#buckets.get(key) ?? { tokens: limit.burst, at: now };
    bucket.tokens = Math.min(limit.burst, bucket.tokens + ((now - bucket.at) / 1000) * limit.perSecond);
    bucket.at = now;
    this.#buckets.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return undefined;
    }
    return this.#tooMany(((1 - bucket.tokens) / limit.perSecond) * 1000);
  }

  #tooMany(waitMs: number): Response {
    const seconds = Math.max(1, Math.ceil(waitMs / 1000));
    return Response.json({ error: "rate limit exceeded" }, { status: 429, headers: { "Retry-After": String(seconds) } });
  }

  #tag(response: Response, fault: EmulatorFault): Response {
    this.#faultOf.set(response, fault);
    return response;
  }

  #chance(rate: number | undefined): boolean {
    if (!rate || rate <= 0) return false;
    return this.#random() < rate;
  }

  /** Random, not seeded: ids must not repeat across restarts (logs are kept per machine id). */
  #newId(): string {
    const bytes = crypto.getRandomValues(new Uint8Array(7));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  #delay(ms: number): Promise<void> {
    return new Promise((resolve) => this.clock.setTimeout(resolve, ms));
  }
}

// ---------------------------------------------------------------------------------------
// Validation of a create body, with messages in the API's style

type Valid = { name: string | undefined; region: string; config: MachineConfig };

function validateCreate(json: unknown, regions: string[]): Valid | string {
  if (!isObject(json)) return "invalid request body: expected a JSON object";
  if (json.name !== undefined && (typeof json.name !== "string" || json.name.length > 63)) {
    return "invalid machine name: must be a string of at most 63 characters";
  }
  const region = json.region === undefined ? (regions[0] ?? "iad") : json.region;
  if (typeof region !== "string" || !regions.includes(region)) return `invalid region "${String(region)}": unknown region`;
  const config = json.config;
  if (!isObject(config)) return "invalid config: config is required";
  if (typeof config.image !== "string" || config.image.trim() === "") return "invalid config.image: an image is required";

  const guest = config.guest ?? { cpu_kind: "shared", cpus: 1, memory_mb: 256 };
  if (!isObject(guest)) return "invalid config.guest: expected an object";
  const kind = guest.cpu_kind ?? "shared";
  const cpus = guest.cpus ?? 1;
  const memory = guest.memory_mb ?? 256;
  if (kind !== "shared" && kind !== "performance") return `invalid config.guest.cpu_kind "${String(kind)}": must be shared or performance`;
  if (typeof cpus !== "number" || ![1, 2, 4, 8, 16].includes(cpus)) return `invalid config.guest.cpus ${String(cpus)}: must be 1, 2, 4, 8 or 16`;
  if (typeof memory !== "number" || !Number.isInteger(memory) || memory % 256 !== 0) {
    return `invalid config.guest.memory_mb ${String(memory)}: memory must be in increments of 256 MiB`;
  }
  const [min, max] = kind === "shared" ? [256 * cpus, 2048 * cpus] : [2048 * cpus, 8192 * cpus];
  if (memory < min || memory > max) {
    return `invalid config.guest.memory_mb ${memory}: a ${kind}-cpu-${cpus}x guest takes ${min} to ${max} MiB`;
  }
  const env = config.env ?? {};
  if (!isStringMap(env)) return "invalid config.env: expected an object of string values";
  const metadata = config.metadata ?? {};
  if (!isStringMap(metadata)) return "invalid config.metadata: expected an object of string values";
  const restart = config.restart ?? { policy: "always" };
  if (!isObject(restart) || !["no", "always", "on-failure"].includes(String(restart.policy))) {
    return `invalid config.restart.policy "${isObject(restart) ? String(restart.policy) : ""}": must be no, always or on-failure`;
  }
  if (config.auto_destroy !== undefined && typeof config.auto_destroy !== "boolean") return "invalid config.auto_destroy: expected a boolean";
  return {
    name: json.name as string | undefined,
    region,
    config: {
      ...config,
      image: config.image,
      guest: { cpu_kind: kind, cpus, memory_mb: memory },
      env: { ...env },
      metadata: { ...metadata },
      auto_destroy: config.auto_destroy === true,
      restart: { policy: String(restart.policy) },
    },
  };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isStringMap(v: unknown): v is Record<string, string> {
  return isObject(v) && Object.values(v).every((x) => typeof x === "string");
}

/** How the API refuses a create when no host in the region can place it (fly-go flaps_error.go). */
function capacityError(): Response {
  return Response.json(
    { error: "insufficient resources available to fulfill request", status: "insufficient_capacity" },
    { status: 422 },
  );
}

function fail(status: number, error: string): Response {
  return Response.json({ error }, { status });
}

function redactBody(text: string): unknown {
  if (!text) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return text.length > 200 ? `${text.slice(0, 200)}…` : text;
  }
  if (isObject(json) && isObject(json.config) && isObject(json.config.env)) {
    const env = Object.fromEntries(Object.keys(json.config.env).map((k) => [k, "[redacted]"]));
    return { ...json, config: { ...json.config, env } };
  }
  return json;
}

function stripEnv(view: Record<string, unknown>): Record<string, unknown> {
  const config = view.config;
  if (!isObject(config) || !isObject(config.env)) return view;
  return { ...view, config: { ...config, env: Object.fromEntries(Object.keys(config.env).map((k) => [k, "[redacted]"])) } };
}

/**
 * A fetch that answers from the emulator and honours AbortSignal like a real fetch would,
 * so a client's timeout fires even while the emulator holds a response back.
 */
export function emulatorFetch(emulator: FlyEmulator): (input: Request | string | URL, init?: RequestInit) => Promise<Response> {
  return (input, init) => {
    const request = new Request(input, init);
    const signal = request.signal;
    if (signal.aborted) return Promise.reject(abortError(signal));
    return new Promise<Response>((resolve, reject) => {
      const onAbort = () => reject(abortError(signal));
      signal.addEventListener("abort", onAbort, { once: true });
      emulator.handle(request).then(
        (response) => {
          signal.removeEventListener("abort", onAbort);
          resolve(response);
        },
        (error: unknown) => {
          signal.removeEventListener("abort", onAbort);
          reject(error);
        },
      );
    });
  };
}

function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("The operation was aborted.", "AbortError");
}
