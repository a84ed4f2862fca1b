// The limits the real Fly Machines API enforces whatever the emulator's faults:
// - the documented rate limits (https://fly.io/docs/machines/api/working-with-machines-api/#rate-limits):
//   "per-action, per-machine and … scoped per identifier. That might be Machine ID or App ID,
//   depending on the type of request. The limit is 1 request, per second, per action … with a
//   short-term burst limit up to 3 req/s, per action. This applies to all actions except Get
//   Machine which is 5 req/s, with a short-term burst limit up to 10 req/s." Create and list name
//   an app, get, destroy and wait a machine;
// - an organisation's quota on live machines, vCPUs and memory (FANOUT_FLY_QUOTA, see quota.ts),
//   refused as Fly refuses it;
// - the capacity of the hosts: live machines across regions and per region.
// A refusal here is a limit kept, not an injected fault. Web standards only (and zod, in quota.ts).
import type { Clock } from "./clock.ts";
import { capacityError, fail, tooManyRequests, type Refusal } from "./errors.ts";
import type { Quota, Usage } from "./quota.ts";

export interface RateLimit {
  perSecond: number;
  burst: number;
}

/** Per action; each defaults to the documented limit. */
export interface RateLimits {
  create?: RateLimit;
  list?: RateLimit;
  get?: RateLimit;
  destroy?: RateLimit;
  wait?: RateLimit;
}

export interface LimitOptions {
  /** Live (not destroyed) machines across apps and regions; beyond it creates are refused for capacity. Default 100. */
  maxLiveMachines?: number;
  /** Live machines a region has room for (e.g. { iad: 2 }); beyond it creates there are refused for capacity. */
  regionCapacity?: Record<string, number>;
  /** The organisation's quota, across its apps and regions; unset: none. */
  quota?: Quota;
  /** The organisation's name in quota refusals; default "personal" (the org a sign-up gets). */
  org?: string;
  /** Default: the documented limits. `false` disables them (tests of something else). */
  rateLimits?: false | RateLimits;
}

/** The API's routes, as the limits scope them. */
export type Route = "list" | "create" | "get" | "destroy" | "wait";

/** The documented limit of each action (see the header). */
export const DOCUMENTED_RATE_LIMITS: Record<Route, RateLimit> = {
  create: { perSecond: 1, burst: 3 },
  list: { perSecond: 1, burst: 3 },
  get: { perSecond: 5, burst: 10 },
  destroy: { perSecond: 1, burst: 3 },
  wait: { perSecond: 1, burst: 3 },
};

/** Create and list are scoped by the app they name; the rest by the machine. */
const APP_SCOPED = new Set<Route>(["create", "list"]);

/** What a create asks for, as admission sees it. */
export interface Placement {
  region: string;
  guest: { cpus: number; memory_mb: number };
}

/** One emulator's limits. The options are read at each request, so a test may change them mid-run. */
export class Limits {
  #opts: LimitOptions;
  #clock: Clock;
  #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(opts: LimitOptions, clock: Clock) {
    this.#opts = opts;
    this.#clock = clock;
  }

  /** A token bucket per action and per identifier (the app for create and list, else the machine). */
  rateLimit(route: Route, app: string, id: string | undefined): Refusal | undefined {
    const limits = this.#opts.rateLimits;
    if (limits === false) return undefined;
    const limit = limits?.[route] ?? DOCUMENTED_RATE_LIMITS[route];
    const key = APP_SCOPED.has(route) ? `${route}:app:${app}` : `${route}:machine:${id}`;
    const now = this.#clock.now();
    const bucket = this.#buckets.get(key) ?? { tokens: limit.burst, at: now };
    bucket.tokens = Math.min(limit.burst, bucket.tokens + ((now - bucket.at) / 1000) * limit.perSecond);
    bucket.at = now;
    this.#buckets.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return undefined;
    }
    return { response: tooManyRequests(((1 - bucket.tokens) / limit.perSecond) * 1000), fault: "rate_limited" };
  }

  /**
   * A valid create, given what is live now (every app, every region): refused when it would take
   * the organisation past its quota, or when no host has room (everywhere, or in its region).
   */
  admit(want: Placement, live: Placement[]): Refusal | undefined {
    const quota = this.#opts.quota;
    if (quota) {
      const org = this.#opts.org ?? "personal";
      const used = usageOf(live);
      // Modelled on what Fly answers (the exact texts are not published): a 422 when an organisation
      // reaches its machines limit (community.fly.io/t/15555), and a 403 "…is using N MB of memory in
      // dfw which is over the allowed quota. please consider other regions" for resources (quoted in
      // github.com/Kilo-Org/cloud/pull/516). This quota counts every region; the message names the
      // one asked for, as Fly's does.
      if (quota.machines !== undefined && used.machines + 1 > quota.machines) {
        return {
          response: fail(422, `failed to launch VM: organization "${org}" has reached its machines limit (${used.machines} of ${quota.machines} machines); ask Fly.io to raise it`),
          fault: "quota_machines",
        };
      }
      if (quota.vcpus !== undefined && used.vcpus + want.guest.cpus > quota.vcpus) {
        return { response: overQuota(`organization "${org}" is using ${used.vcpus} cpus in ${want.region}`), fault: "quota_vcpus" };
      }
      if (quota.memory_mb !== undefined && used.memory_mb + want.guest.memory_mb > quota.memory_mb) {
        return { response: overQuota(`organization "${org}" is using ${used.memory_mb} MB of memory in ${want.region}`), fault: "quota_memory" };
      }
    }
    if (live.length >= (this.#opts.maxLiveMachines ?? 100)) return { response: capacityError(), fault: "capacity_full" };
    const room = this.#opts.regionCapacity?.[want.region];
    if (room !== undefined && live.filter((m) => m.region === want.region).length >= room) {
      return { response: capacityError(), fault: "capacity_region_full" };
    }
    return undefined;
  }
}

function overQuota(what: string): Response {
  return fail(403, `${what} which is over the allowed quota. please consider other regions`);
}

/** Machines, vCPUs and memory of what is live. */
export function usageOf(live: Placement[]): Usage {
  return {
    machines: live.length,
    vcpus: live.reduce((n, m) => n + m.guest.cpus, 0),
    memory_mb: live.reduce((n, m) => n + m.guest.memory_mb, 0),
  };
}
