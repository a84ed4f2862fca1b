// Fly's create limit (1 request/s, burst 3) is per app, not per batch. One FlyBudget Durable
// Object per Fly app hands create tokens to every batch, so batches running at the same time
// stay under the limit together instead of discovering it through 429s.
import { DurableObject } from "cloudflare:workers";

export interface Grant {
  granted: number;
  /** When the next token will be there (now if one is left). */
  next_at: number;
}

export class FlyBudget extends DurableObject<Env> {
  // In memory: after an eviction the bucket starts full again, at most one extra burst.
  private tokens: number | null = null;
  private at = 0;
  private blockedUntil = 0;

  /** Takes up to `want` create tokens from a bucket refilled at `rate`/s up to `burst`. */
  take(want: number, rate: number, burst: number): Grant {
    const now = Date.now();
    if (this.tokens === null) {
      this.tokens = burst;
      this.at = now;
    }
    if (now < this.blockedUntil) return { granted: 0, next_at: this.blockedUntil };
    this.tokens = Math.min(burst, this.tokens + (Math.max(0, now - this.at) / 1000) * rate);
    this.at = now;
    const granted = Math.max(0, Math.min(Math.floor(want), Math.floor(this.tokens)));
    this.tokens -= granted;
    return { granted, next_at: this.tokens >= 1 ? now : now + Math.ceil(((1 - this.tokens) / rate) * 1000) };
  }

  /**
   * Debug hook (route /admin/debug/evict-fly-budget, admin token and DEBUG_HOOKS=true): resets
   * this object as the runtime does when it evicts it, so the soak can show what an eviction costs.
   */
  evict(): void {
    this.ctx.abort("evicted on request (debug hook)");
  }

  /** The API answered 429 with Retry-After: no batch of this app creates before `until`. */
  block(until: number): void {
    this.blockedUntil = Math.max(this.blockedUntil, until);
    this.tokens = 0;
    this.at = this.blockedUntil;
  }
}
