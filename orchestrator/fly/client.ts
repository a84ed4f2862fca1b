// Fly Machines API client (https://fly.io/docs/machines/api/machines-resource/): create (with its
// regions, retries and the app's create budget), list, get, destroy. Shapes in api.ts; what a
// create answer means in create-answer.ts.
// Runs in workerd: fetch, Web APIs and zod only. Every outcome a caller must act on is a
// value (CreateOutcome, null, "not_found"); only unexpected failures of reads throw.
import { z } from "zod";
import { backoffMs } from "../../shared/backoff.ts";
import { directExchange, type Exchange, OutboundRefused, OutboundTimeout } from "../outbound.ts";
import {
  type CreateOptions,
  type CreateOutcome,
  FlyApiError,
  type FlyMachine,
  type MachineSpec,
  MachineWire,
  parseError,
  safeJson,
  toFlyMachine,
} from "./api.ts";
import { classifyCreateAnswer, outcomeFields, retryAfterOr1s } from "./create-answer.ts";

export interface FlyClientOptions {
  /** e.g. https://api.machines.dev, or http://fly.test / http://127.0.0.1:PORT for the emulator. */
  apiHostname: string;
  apiToken: string;
  appName: string;
  fetch?: typeof fetch;
  /**
   * How a request is sent and timed: the engine passes its invocation's Outbound (orchestrator/
   * outbound.ts: counted, six at a time, each timed from when it is sent). Default: `fetch` as is.
   */
  exchange?: Exchange;
  /** Per HTTP request, from when it is sent; default 15000. */
  requestTimeoutMs?: number;
  /** Subrequest budget for this client instance; beyond it calls return {kind:"budget"} (or throw for reads). */
  maxRequests?: number;
  sleep?: (ms: number) => Promise<void>;
  /** Attempts per request on 5xx/network errors (create: per region); default 3. */
  maxAttempts?: number;
  /** Base of the exponential backoff between those attempts; default 250 ms. */
  backoffBaseMs?: number;
  random?: () => number;
  log?: (line: string) => void;
}

type Sent =
  | { kind: "response"; status: number; headers: Headers; text: string }
  | { kind: "network"; message: string }
  | { kind: "timeout" }
  | { kind: "budget" };

const MAX_MESSAGE = 300;
const DEFAULT_TIMEOUT_MS = 15_000;
/** Retries inside one alarm must not eat it: no single wait between attempts over 5 s. */
const MAX_BACKOFF_MS = 5000;

export class FlyMachines {
  #opts: FlyClientOptions;
  #exchange: Exchange;
  #base: string;
  #requests = 0;
  #max: number;
  #attempts: number;
  #backoffMs: number;
  #timeoutMs: number;
  #sleep: (ms: number) => Promise<void>;
  #random: () => number;
  #log: (line: string) => void;

  constructor(opts: FlyClientOptions) {
    if (!opts.apiHostname) throw new Error("FlyMachines: apiHostname is required (e.g. https://api.machines.dev)");
    if (!opts.apiToken) throw new Error("FlyMachines: apiToken is required (the FLY_API_TOKEN secret)");
    if (!opts.appName) throw new Error("FlyMachines: appName is required (FLY_APP_NAME)");
    this.#opts = opts;
    this.#exchange = opts.exchange ?? directExchange(opts.fetch);
    this.#base = `${opts.apiHostname.replace(/\/+$/, "")}/v1/apps/${encodeURIComponent(opts.appName)}/machines`;
    this.#max = opts.maxRequests ?? Number.POSITIVE_INFINITY;
    this.#attempts = Math.max(1, opts.maxAttempts ?? 3);
    this.#backoffMs = opts.backoffBaseMs ?? 250;
    this.#timeoutMs = opts.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#sleep = opts.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.#random = opts.random ?? Math.random;
    this.#log = opts.log ?? ((line) => console.log(line));
  }

  /** HTTP requests actually sent by this instance (what counts against the Worker's subrequest limit). */
  get requestsMade(): number {
    return this.#requests;
  }

  /** Requests this instance may still send. */
  get requestsLeft(): number {
    return Math.max(0, this.#max - this.#requests);
  }

  async createMachine(spec: MachineSpec, options: CreateOptions = {}): Promise<CreateOutcome> {
    const regions: (string | undefined)[] = spec.regions.length > 0 ? spec.regions : [undefined];
    const refusals: string[] = [];
    for (const region of regions) {
      const outcome = await this.#createIn(spec, region, options);
      if (outcome.kind !== "capacity") {
        this.#event("create", { name: spec.name, region, outcome: outcome.kind, ...outcomeFields(outcome) });
        return outcome;
      }
      refusals.push(`${region ?? "(default)"}: ${outcome.message}`);
      this.#event("capacity", { name: spec.name, region, message: outcome.message });
    }
    const message = this.#clean(`no capacity in any region (${refusals.join("; ")})`, spec);
    this.#event("create", { name: spec.name, outcome: "no_capacity", message });
    return { kind: "no_capacity", message };
  }

  /** Live machines (destroyed ones excluded) whose metadata has every given key=value. */
  async listMachines(metadata: Record<string, string>): Promise<FlyMachine[]> {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(metadata)) query.append(`metadata.${key}`, value);
    const qs = query.toString();
    const sent = await this.#withRetries("GET", qs ? `${this.#base}?${qs}` : this.#base);
    const body = this.#expectOk(sent, "list machines");
    const parsed = z.array(MachineWire).safeParse(body);
    if (!parsed.success) throw new FlyApiError("malformed", "list machines: the API answered with an unexpected shape");
    return parsed.data
      .map(toFlyMachine)
      .filter((m) => m.state !== "destroyed" && Object.entries(metadata).every(([k, v]) => m.metadata[k] === v));
  }

  /** The machine, or null when the API does not know it (404). */
  async getMachine(id: string): Promise<FlyMachine | null> {
    const sent = await this.#withRetries("GET", `${this.#base}/${encodeURIComponent(id)}`);
    if (sent.kind === "response" && sent.status === 404) return null;
    const body = this.#expectOk(sent, `get machine ${id}`);
    const parsed = MachineWire.safeParse(body);
    if (!parsed.success) throw new FlyApiError("malformed", `get machine ${id}: the API answered with an unexpected shape`);
    return toFlyMachine(parsed.data);
  }

  /** DELETE ?force=true: stops a running machine and destroys it. */
  async destroyMachine(id: string): Promise<"destroyed" | "not_found" | "failed"> {
    const sent = await this.#withRetries("DELETE", `${this.#base}/${encodeURIComponent(id)}?force=true`);
    if (sent.kind === "response" && sent.status >= 200 && sent.status < 300) return "destroyed";
    if (sent.kind === "response" && sent.status === 404) return "not_found";
    this.#event("destroy_failed", { machine_id: id, ...this.#describe(sent) });
    return "failed";
  }

  // -------------------------------------------------------------------------------------

  async #createIn(
    spec: MachineSpec,
    region: string | undefined,
    options: CreateOptions,
  ): Promise<Exclude<CreateOutcome, { kind: "no_capacity" }> | { kind: "capacity"; message: string }> {
    const body = {
      name: spec.name,
      ...(region === undefined ? {} : { region }),
      config: {
        image: spec.image,
        guest: spec.guest,
        env: spec.env,
        metadata: spec.metadata,
        auto_destroy: true,
        restart: { policy: "no" },
      },
    };
    let lastProblem = "";
    for (let attempt = 1; attempt <= this.#attempts; attempt++) {
      if (attempt > 1) {
        // The failed attempt may have created the machine: find it before creating another.
        const found = await this.#findByName(spec);
        if (found === "budget") return { kind: "budget" };
        if (found) return { kind: "created", machineId: found.id, name: found.name, region: found.region, state: found.state };
        await this.#sleep(this.#backoff(attempt - 1));
      }
      if (this.requestsLeft === 0) return { kind: "budget" };
      // Every POST counts against Fly's create limit, a retry or the next region as much as the first.
      const token = options.draw ? await options.draw() : { ok: true as const };
      if (!token.ok) return { kind: "budget", retryAt: token.retryAt };
      const sent = await this.#send("POST", this.#base, JSON.stringify(body));
      if (sent.kind === "budget") return { kind: "budget" };
      if (sent.kind === "timeout") {
        // A timed-out create may still complete; retrying blind could double it and waits eat the alarm.
        return { kind: "unknown", message: `create timed out after ${this.#timeoutMs} ms; the machine may exist` };
      }
      if (sent.kind === "network") {
        lastProblem = this.#clean(`network error: ${sent.message}`, spec);
        continue;
      }
      const answer = classifyCreateAnswer(sent.status, sent.headers, sent.text);
      if (answer.kind === "retry") {
        lastProblem = this.#clean(answer.message, spec);
        continue;
      }
      if (answer.kind === "created") {
        const m = answer.machine;
        return { kind: "created", machineId: m.id, name: m.name || spec.name, region: m.region || region || "", state: m.state };
      }
      if (answer.kind === "capacity" || answer.kind === "invalid") return { ...answer, message: this.#clean(answer.message, spec) };
      return answer;
    }
    return { kind: "unknown", message: `create failed after ${this.#attempts} attempts (${lastProblem}); the machine may exist` };
  }

  async #findByName(spec: MachineSpec): Promise<FlyMachine | null | "budget"> {
    if (this.requestsLeft === 0) return "budget";
    try {
      const live = await this.listMachines(spec.metadata);
      return live.find((m) => m.name === spec.name) ?? null;
    } catch (error) {
      if (error instanceof FlyApiError && error.kind === "budget") return "budget";
      return null;
    }
  }

  /** GET/DELETE are idempotent: retry 5xx and network errors with backoff. */
  async #withRetries(method: "GET" | "DELETE", url: string): Promise<Sent> {
    let sent: Sent = { kind: "budget" };
    for (let attempt = 1; attempt <= this.#attempts; attempt++) {
      if (attempt > 1) await this.#sleep(this.#backoff(attempt - 1));
      sent = await this.#send(method, url);
      const retryable = sent.kind === "network" || (sent.kind === "response" && (sent.status >= 500 || sent.status === 408));
      if (!retryable) return sent;
    }
    return sent;
  }

  async #send(method: string, url: string, body?: string): Promise<Sent> {
    if (this.#requests >= this.#max) return { kind: "budget" };
    this.#requests++;
    const headers: Record<string, string> = { Authorization: `Bearer ${this.#opts.apiToken}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    try {
      return await this.#exchange(url, { method, headers, body }, this.#timeoutMs, async (response): Promise<Sent> => {
        const text = await response.text();
        return { kind: "response", status: response.status, headers: response.headers, text };
      });
    } catch (error) {
      if (error instanceof OutboundTimeout) return { kind: "timeout" };
      // The invocation's subrequests or time are spent: nothing was sent, so it is work for later.
      if (error instanceof OutboundRefused) return { kind: "budget" };
      return { kind: "network", message: error instanceof Error ? error.message : String(error) };
    }
  }

  #expectOk(sent: Sent, what: string): unknown {
    if (sent.kind === "budget") throw new FlyApiError("budget", `${what}: subrequest budget of ${this.#max} exhausted`);
    if (sent.kind === "timeout") throw new FlyApiError("timeout", `${what}: timed out after ${this.#timeoutMs} ms`);
    if (sent.kind === "network") throw new FlyApiError("network", `${what}: ${this.#clean(sent.message)}`);
    if (sent.status === 429) {
      const retryAfterMs = retryAfterOr1s(sent.headers);
      throw new FlyApiError("rate_limited", `${what}: rate limited, retry after ${retryAfterMs} ms`, 429, retryAfterMs);
    }
    if (sent.status < 200 || sent.status >= 300) {
      const error = parseError(sent.text);
      throw new FlyApiError("http", `${what}: HTTP ${sent.status}: ${this.#clean(error.error ?? sent.text)}`, sent.status);
    }
    return safeJson(sent.text);
  }

  #describe(sent: Sent): Record<string, unknown> {
    if (sent.kind !== "response") return { problem: sent.kind };
    return { status: sent.status, error: this.#clean(parseError(sent.text).error ?? sent.text) };
  }

  #backoff(retry: number): number {
    return backoffMs(retry, this.#backoffMs, MAX_BACKOFF_MS, this.#random);
  }

  /** API text may echo our request: drop the token and env values, and keep it short. */
  #clean(text: string, spec?: MachineSpec): string {
    let out = text.split(this.#opts.apiToken).join("[redacted]");
    for (const value of Object.values(spec?.env ?? {})) {
      if (value.length >= 4) out = out.split(value).join("[redacted]");
    }
    return out.length > MAX_MESSAGE ? `${out.slice(0, MAX_MESSAGE)}…` : out;
  }

  #event(event: string, fields: Record<string, unknown>): void {
    this.#log(`[Fly] ${JSON.stringify({ event, app: this.#opts.appName, ...fields })}`);
  }
}
