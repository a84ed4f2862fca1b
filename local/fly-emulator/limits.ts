// The limits the real Fly Machines API enforces whatever the emulator's faults: the documented
// rate limits (https://fly.io/docs/machines/api/working-with-machines-api/#rate-limits: 1 req/s
// burst 3 per action per machine, get 5 req/s burst 10, create per app) and the live machines
// there is room for. A refusal here is a limit kept, not an injected fault. Web standards only.
import type { Clock } from "./clock.ts";
import { capacityError, tooManyRequests, type Refusal } from "./errors.ts";

export interface RateLimit {
  perSecond: number;
  burst: number;
}

export interface LimitOptions {
  /** Live (not destroyed) machines across apps; beyond it creates are refused for capacity. Default 100. */
  maxLiveMachines?: number;
  /** Default: the documented limits (create 1/s burst 3, get/list 5/s burst 10, other actions 1/s burst 3). `false` disables. */
  rateLimits?: false | { create?: RateLimit; read?: RateLimit; other?: RateLimit };
}

/** The API's routes, as the limits scope them. */
export type Route = "list" | "create" | "get" | "destroy" | "wait";

/** One emulator's limits. The options are read at each request, so a test may change them mid-run. */
export class Limits {
  #opts: LimitOptions;
  #clock: Clock;
  #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(opts: LimitOptions, clock: Clock) {
    this.#opts = opts;
    this.#clock = clock;
  }

  /** Token buckets per documented scope: create per app, reads per app, other actions per machine. */
  rateLimit(route: Route, app: string, id: string | undefined): Refusal | undefined {
    const limits = this.#opts.rateLimits;
    if (limits === false) return undefined;
    const isRead = route === "get" || route === "list";
    const limit: RateLimit =
      route === "create" ? (limits?.create ?? { perSecond: 1, burst: 3 })
      : isRead ? (limits?.read ?? { perSecond: 5, burst: 10 })
      : (limits?.other ?? { perSecond: 1, burst: 3 });
    const key = route === "create" || isRead ? `${app}:${route}` : `${app}:${id}:${route}`;
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

  /** A create when `live` machines exist: refused for capacity when there is no room for one more. */
  admit(live: number): Refusal | undefined {
    if (live >= (this.#opts.maxLiveMachines ?? 100)) return { response: capacityError(), fault: "capacity_full" };
    return undefined;
  }
}
