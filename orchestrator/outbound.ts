// Every outbound request of one invocation (an alarm, an RPC, an HTTP request) goes through one
// Outbound: it counts them against the Workers subrequest limit, keeps at most six waiting for
// their response headers at once, and starts each request's timeout when the request is sent,
// not when it was queued behind the other six (a 15 s timer started in the queue timed out
// requests that had waited 14 s for a connection).
//
// Limits (developers.cloudflare.com/workers/platform/limits/, Workers Paid):
// - Subrequests: 10,000 per invocation; fetch() and calls to Cloudflare services alike (R2, D1,
//   Durable Objects, Queues). Free: 50, which no alarm of the engine fits.
// - Simultaneous open connections: 6 per invocation, counted while a request waits for its
//   response headers (changelog 2026-04-09, "Relaxed simultaneous connection limiting"); a
//   seventh is queued by the runtime until one of them has its headers.
// Local workerd enforces neither, so the engine enforces both itself.
import pLimit, { type LimitFunction } from "p-limit";

/** Subrequests per invocation on Workers Paid (developers.cloudflare.com/workers/platform/limits/). */
export const PAID_SUBREQUESTS_PER_INVOCATION = 10_000;
/** Connections waiting for headers at once (developers.cloudflare.com/workers/platform/limits/#simultaneous-open-connections). */
export const MAX_CONNECTIONS = 6;

/** The invocation's budget or time is spent: the request was not sent. Callers treat it as "later". */
export class OutboundRefused extends Error {
  readonly reason: "budget" | "deadline";
  constructor(reason: "budget" | "deadline", message: string) {
    super(message);
    this.name = "OutboundRefused";
    this.reason = reason;
  }
}

/** A request that had no complete answer `timeoutMs` after it was sent. */
export class OutboundTimeout extends Error {
  constructor(message: string) {
    super(message);
    this.name = "OutboundTimeout";
  }
}

/** One HTTP exchange: the request, its timeout (from when it is sent) and how its response is read (inside the timeout). */
export type Exchange = <T>(input: string | Request, init: RequestInit, timeoutMs: number, read: (response: Response) => Promise<T>) => Promise<T>;

export interface OutboundOptions {
  /** Subrequests this invocation may make; PAID_SUBREQUESTS_PER_INVOCATION by default. */
  budget?: number;
  /** Epoch ms after which no new request is sent (an alarm's time bound); none by default. */
  deadline?: number;
  connections?: number;
  fetch?: typeof fetch;
  now?: () => number;
}

export class Outbound {
  readonly budget: number;
  deadline: number;
  #used = 0;
  #refused = 0;
  #waiting = 0;
  #peakWaiting = 0;
  readonly #slots: LimitFunction;
  readonly #fetch: typeof fetch;
  readonly #now: () => number;

  constructor(opts: OutboundOptions = {}) {
    this.budget = opts.budget ?? PAID_SUBREQUESTS_PER_INVOCATION;
    this.deadline = opts.deadline ?? Number.POSITIVE_INFINITY;
    this.#slots = pLimit(opts.connections ?? MAX_CONNECTIONS);
    this.#fetch = opts.fetch ?? ((input, init) => fetch(input, init));
    this.#now = opts.now ?? Date.now;
  }

  /** Subrequests sent so far by this invocation. */
  get used(): number {
    return this.#used;
  }

  /** Requests refused (budget or deadline): work this invocation left for the next. */
  get refused(): number {
    return this.#refused;
  }

  /** The most requests that waited for their headers at the same time. */
  get peakInFlight(): number {
    return this.#peakWaiting;
  }

  /** True once the invocation's time bound has passed: loops stop taking new work. */
  get overdue(): boolean {
    return this.#now() >= this.deadline;
  }

  /** The time-bounded work is over: what follows (an alarm's index row) is bounded by the budget only. */
  workDone(): void {
    this.deadline = Number.POSITIVE_INFINITY;
  }

  /** Counts one subrequest about to be sent, or refuses it. */
  #take(what: string): void {
    if (this.#used >= this.budget) {
      this.#refused++;
      throw new OutboundRefused("budget", `${what}: this invocation's ${this.budget} subrequests are spent`);
    }
    if (this.overdue) {
      this.#refused++;
      throw new OutboundRefused("deadline", `${what}: this invocation's time for outbound work is over`);
    }
    this.#used++;
  }

  /** Runs `send` in one of the connection slots, holding it until `send` settles (its headers). */
  async #inSlot<T>(what: string, send: () => Promise<T>): Promise<T> {
    return this.#slots(async () => {
      this.#take(what);
      this.#waiting++;
      this.#peakWaiting = Math.max(this.#peakWaiting, this.#waiting);
      try {
        return await send();
      } finally {
        this.#waiting--;
      }
    });
  }

  /**
   * One HTTP exchange, timed from when it is sent: `read` consumes the response within the same
   * timeout. Throws OutboundTimeout, OutboundRefused, or the fetch's own network error.
   */
  readonly exchange: Exchange = async (input, init, timeoutMs, read) => {
    const what = `${init.method ?? "GET"} ${typeof input === "string" ? input : input.url}`.slice(0, 200);
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | null = null;
    const timedOut = () => new OutboundTimeout(`${what.split("?")[0]}: no answer within ${timeoutMs} ms of sending`);
    try {
      const response = await this.#inSlot(what, () => {
        // The clock starts here, when a connection is free and the request goes out.
        timer = setTimeout(() => controller.abort(), timeoutMs);
        const signal = init.signal ? AbortSignal.any([init.signal, controller.signal]) : controller.signal;
        return this.#fetch(input, { ...init, signal });
      });
      return await read(response);
    } catch (error) {
      if (controller.signal.aborted) throw timedOut();
      throw error;
    } finally {
      if (timer !== null) clearTimeout(timer);
    }
  };

  /** fetch() through the slots and the count (no timeout of its own: the caller's signal, if any). */
  readonly fetch = (input: string | Request, init?: RequestInit): Promise<Response> => {
    const what = `${init?.method ?? (typeof input === "string" ? "GET" : input.method)} ${typeof input === "string" ? input : input.url}`.slice(0, 200);
    return this.#inSlot(what, () => this.#fetch(input, init));
  };

  /** A call to a Cloudflare binding (R2, D1, a Durable Object): a subrequest, waiting in a slot like a fetch. */
  call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return this.#inSlot(what, fn);
  }

  /**
   * `env` with its bindings counted: every call of a method named in BINDING_CALLS (on the binding,
   * or on what its synchronous methods return: a D1 statement, a DO stub, a multipart upload) goes
   * through this Outbound. Vars and secrets pass through unchanged.
   */
  env<E extends object>(env: E): E {
    return new Proxy(env, {
      get: (target, prop) => {
        const value = Reflect.get(target, prop) as unknown;
        return typeof prop === "string" && prop in BINDING_CALLS && isObject(value) ? this.#counted(value, prop, BINDING_CALLS[prop]) : value;
      },
    });
  }

  #counted<T extends object>(target: T, name: string, calls: Calls): T {
    return new Proxy(target, {
      get: (t, prop) => {
        const value = Reflect.get(t, prop) as unknown;
        if (typeof prop !== "string" || typeof value !== "function") return value;
        const method = value as (...a: unknown[]) => unknown;
        const what = `${name}.${prop}`;
        const inner = calls.sync?.[prop];
        if (inner !== undefined) {
          return (...args: unknown[]) => {
            const result = Reflect.apply(method, t, args) as unknown;
            return isObject(result) ? this.#counted(result, what, inner) : result;
          };
        }
        if (calls.async === "*" || calls.async.includes(prop)) {
          return (...args: unknown[]) => this.call(what, () => Promise.resolve(Reflect.apply(method, t, args) as unknown));
        }
        return (...args: unknown[]) => Reflect.apply(method, t, args) as unknown;
      },
    });
  }
}

/** Which methods of a binding are subrequests (async), and which return objects whose methods may be. */
interface Calls {
  async: readonly string[] | "*";
  sync?: Record<string, Calls>;
}

const D1_STATEMENT: Calls = { async: ["run", "all", "first", "raw"], sync: {} };
D1_STATEMENT.sync = { bind: D1_STATEMENT };
const R2_UPLOAD: Calls = { async: ["uploadPart", "complete", "abort"] };
/** A Durable Object stub: every method is an RPC (fetch included). */
const DO_STUB: Calls = { async: "*" };
const DO_NAMESPACE: Calls = { async: [], sync: { getByName: DO_STUB, get: DO_STUB } };

/** The bindings of wrangler.jsonc and what of each is a subrequest. */
export const BINDING_CALLS: Record<string, Calls> = {
  BUCKET: { async: ["get", "head", "put", "list", "delete", "createMultipartUpload"], sync: { resumeMultipartUpload: R2_UPLOAD } },
  BATCH_INDEX: { async: ["batch", "exec"], sync: { prepare: D1_STATEMENT } },
  BATCH_QUEUE: { async: ["send", "sendBatch"] },
  BATCH_DO: DO_NAMESPACE,
  FLY_BUDGET: DO_NAMESPACE,
};

function isObject(v: unknown): v is object {
  return (typeof v === "object" || typeof v === "function") && v !== null;
}

/** An Exchange with no slots and no count: a timed fetch (the Fly client's default outside the engine). */
export function directExchange(fetcher: typeof fetch = (input, init) => fetch(input, init)): Exchange {
  return new Outbound({ fetch: fetcher, budget: Number.POSITIVE_INFINITY, connections: Number.POSITIVE_INFINITY }).exchange;
}
