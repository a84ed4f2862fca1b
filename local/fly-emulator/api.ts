// The Fly Machines API emulator: the subset of https://fly.io/docs/machines/api/machines-resource/
// that fanout uses, answered the way the real API answers it. Web standards only (no node:
// imports): it runs behind the Node server of the local stack and inside workerd tests alike.
//
// This module is its HTTP surface: routing, authentication, the endpoints and the record of every
// request. The machines' state machine is machines.ts, injected faults faults.ts, the limits the
// real API enforces limits.ts, create-body validation validate.ts.
import { realClock, type Clock } from "./clock.ts";
import { fail, type EmulatorFault, type Refusal } from "./errors.ts";
import { FaultModel, type FaultOptions } from "./faults.ts";
import { Limits, type LimitOptions, type Route } from "./limits.ts";
import { Machines, WAITABLE, type LogLine, type MachineOptions } from "./machines.ts";
import { SimulatedRunner, type MachineRunner } from "./runner.ts";
import { FLY_REGIONS, redactBody, stripEnv, validateCreate } from "./validate.ts";

export interface FlyEmulatorOptions extends LimitOptions, MachineOptions {
  /** Bearer token to require; default: any non-empty token. */
  token?: string;
  /** Apps that exist; default: any app name. */
  apps?: string[];
  runner?: MachineRunner;
  clock?: Clock;
  /** Regions accepted at create; default Fly's public region list. */
  regions?: string[];
  /** Longest accepted `timeout` of the wait endpoint, seconds; default 60. */
  maxWaitSeconds?: number;
  faults?: FaultOptions;
  /** Keep each request's real body for sentBody() (tests only: the record keeps a redacted copy). */
  keepSentBodies?: boolean;
}

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

export class FlyEmulator {
  readonly requests: RecordedRequest[] = [];
  readonly clock: Clock;
  #opts: FlyEmulatorOptions;
  #machines: Machines;
  #faults: FaultModel;
  #limits: Limits;
  #faultOf = new WeakMap<Response, EmulatorFault>();
  // What each request really carried, env values and all: for sentBody() only, never served or logged.
  #sent = new WeakMap<RecordedRequest, string>();

  constructor(opts: FlyEmulatorOptions = {}) {
    this.#opts = opts;
    this.clock = opts.clock ?? realClock;
    this.#machines = new Machines(this.clock, opts.runner ?? new SimulatedRunner({ clock: this.clock }), opts);
    this.#faults = new FaultModel(opts);
    this.#limits = new Limits(opts, this.clock);
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
    if (text && this.#opts.keepSentBodies) this.#sent.set(record, text);
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

  /**
   * The body `record` really carried, config.env values included (its `body` is redacted), when
   * the emulator was made with keepSentBodies. For tests in the same process that must see what a
   * create exposes, such as a secret in an env: never served over HTTP (/_emulator/requests shows
   * the redacted record) and never logged.
   */
  sentBody(record: RecordedRequest): string | undefined {
    return this.#sent.get(record);
  }

  /** Snapshot of a machine as the API would show it, or undefined. */
  machine(id: string): Record<string, unknown> | undefined {
    const m = this.#machines.get(id);
    return m ? this.#machines.view(m) : undefined;
  }

  machines(): Record<string, unknown>[] {
    return this.#machines.all().map((m) => this.#machines.view(m));
  }

  logs(id: string): LogLine[] {
    return [...(this.#machines.get(id)?.logs ?? [])];
  }

  liveMachineCount(): number {
    return this.#machines.liveCount();
  }

  /** Kills every live machine, cancels timers and answers pending waits. */
  async stop(): Promise<void> {
    await this.#machines.stop();
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

    const route: Route | undefined =
      id === undefined && method === "GET" ? "list"
      : id === undefined && method === "POST" ? "create"
      : id !== undefined && action === undefined && method === "GET" ? "get"
      : id !== undefined && action === undefined && method === "DELETE" ? "destroy"
      : id !== undefined && action === "wait" && method === "GET" ? "wait"
      : undefined;
    if (route === undefined) return fail(404, `no route for ${method} ${url.pathname}`);

    const refused = this.#limits.rateLimit(route, app, id) ?? this.#faults.onRequest();
    if (refused) return this.#refuse(refused);

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
    const found = this.#machines
      .all()
      .filter(
        (m) =>
          m.app === app &&
          (includeDeleted || !this.#machines.isTerminal(m)) &&
          (region === null || m.region === region) &&
          filters.every(([k, v]) => m.config.metadata[k] === v),
      );
    return Response.json(found.map((m) => this.#machines.view(m)));
  }

  async #create(app: string, text: string): Promise<Response> {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      return fail(400, "invalid request body: could not parse JSON");
    }
    const valid = validateCreate(json, this.#opts.regions ?? FLY_REGIONS);
    if (typeof valid === "string") return fail(422, valid);
    const { name, region, config } = valid;

    const refused = this.#faults.onCreate(region) ?? this.#limits.admit(this.liveMachineCount());
    if (refused) return this.#refuse(refused);

    const m = this.#machines.create({ app, name, region, config, dieSilently: this.#faults.dieSilently(), bootDelayMs: this.#faults.bootDelayMs() });
    const view = this.#machines.view(m);
    const lost = this.#faults.afterCreate();
    if (lost) return this.#refuse(lost);
    const delayMs = this.#faults.createResponseDelayMs();
    if (delayMs) await new Promise<void>((resolve) => this.clock.setTimeout(resolve, delayMs));
    return Response.json(view);
  }

  #get(app: string, id: string): Response {
    const m = this.#machines.get(id);
    if (!m || m.app !== app) return fail(404, "machine not found");
    return Response.json(this.#machines.view(m));
  }

  async #destroy(app: string, id: string, url: URL): Promise<Response> {
    const m = this.#machines.get(id);
    if (!m || m.app !== app || this.#machines.isTerminal(m)) return fail(404, "machine not found");
    const force = url.searchParams.get("force") === "true";
    if (!force && (m.state === "started" || m.state === "starting")) {
      return fail(412, "failed to destroy machine: unable to destroy machine, not currently stopped or suspended");
    }
    await this.#machines.destroy(m);
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
    if (!(await this.#machines.waitFor(m, state, timeout * 1000))) {
      return fail(408, `deadline_exceeded: machine ${id} did not reach state ${state} within ${timeout}s`);
    }
    return Response.json({ ok: true });
  }

  /** Answers a refusal and remembers why, for the request's record. */
  #refuse(refusal: Refusal): Response {
    this.#faultOf.set(refusal.response, refusal.fault);
    return refusal.response;
  }
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
