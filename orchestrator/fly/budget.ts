// Fly's create limit (1 request/s, burst 3) is per app, not per batch. One FlyBudget Durable
// Object per Fly app hands a token to every create POST of every batch, so batches running at
// the same time stay under the limit together instead of discovering it through 429s.
import { DurableObject } from "cloudflare:workers";
import type { CreateToken } from "./api.ts";

export interface Grant {
  granted: number;
  /** When the next token will be there (now if one is left). */
  next_at: number;
}

interface Bucket {
  tokens: number;
  /** When `tokens` was last brought up to date. */
  at: number;
  /** A 429's Retry-After: no create of this app before then. */
  blocked_until: number;
}

export class FlyBudget extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    // In storage, not memory: an evicted or restarted budget must not hand out a fresh burst.
    this.sql.exec(
      `CREATE TABLE IF NOT EXISTS bucket (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         tokens REAL NOT NULL,
         at INTEGER NOT NULL,
         blocked_until INTEGER NOT NULL
       )`,
    );
  }

  /**
   * Takes up to `want` create tokens from a bucket refilled at `rate`/s up to `burst`, one of
   * which stays in reserve (when the burst allows it): a token is drawn here but its POST reaches
   * Fly later (signing, RPC, network), and two POSTs bunched on the way would otherwise meet Fly's
   * bucket empty at a steady rate. The soak saw exactly that with the reserve at 0.
   */
  take(want: number, rate: number, burst: number): Grant {
    const now = Date.now();
    const bucket = this.read(now, burst);
    if (now < bucket.blocked_until) return { granted: 0, next_at: bucket.blocked_until };
    const reserve = burstReserve(burst);
    let tokens = Math.min(burst, bucket.tokens + (Math.max(0, now - bucket.at) / 1000) * rate);
    const granted = Math.max(0, Math.min(Math.floor(want), Math.floor(tokens - reserve)));
    tokens -= granted;
    this.write({ tokens, at: Math.max(now, bucket.at), blocked_until: bucket.blocked_until });
    return { granted, next_at: tokens >= 1 + reserve ? now : now + Math.ceil(((1 + reserve - tokens) / rate) * 1000) };
  }

  /** One token for one create POST (first try, retry or next region alike). */
  draw(rate: number, burst: number): CreateToken {
    const grant = this.take(1, rate, burst);
    return grant.granted === 1 ? { ok: true } : { ok: false, retryAt: grant.next_at };
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
    const bucket = this.read(Date.now(), 0);
    const blocked = Math.max(bucket.blocked_until, until);
    this.write({ tokens: 0, at: blocked, blocked_until: blocked });
  }

  /** The stored bucket; a budget never used starts full. */
  private read(now: number, burst: number): Bucket {
    const row = this.sql.exec<{ tokens: number; at: number; blocked_until: number }>("SELECT tokens, at, blocked_until FROM bucket WHERE id = 1").toArray()[0];
    return row ?? { tokens: burst, at: now, blocked_until: 0 };
  }

  private write(bucket: Bucket): void {
    this.sql.exec(
      "INSERT INTO bucket (id, tokens, at, blocked_until) VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET tokens = excluded.tokens, at = excluded.at, blocked_until = excluded.blocked_until",
      bucket.tokens,
      bucket.at,
      bucket.blocked_until,
    );
  }
}

/** Tokens of the burst the budget never hands out (headroom for POSTs delayed on their way). */
export const burstReserve = (burst: number): number => (burst >= 2 ? 1 : 0);

/**
 * The `draw` a createMachine call is given: every POST it sends takes a token from the app's
 * budget. `prepaid` POSTs are covered by tokens the caller already took in bulk (takeCreates).
 * A later POST (a retry, the next region) waits up to `maxWaitMs` for its token: its create is
 * under way and already paid for, and the next alarm's bulk take would claim every new token for
 * first tries again, so giving up at once could starve fallbacks for ever.
 */
export function createDraw(
  budget: { draw(rate: number, burst: number): Promise<CreateToken> },
  rate: number,
  burst: number,
  prepaid = 0,
  maxWaitMs = 2000,
): () => Promise<CreateToken> {
  let covered = prepaid;
  return async () => {
    if (covered > 0) {
      covered--;
      return { ok: true };
    }
    const giveUpAt = Date.now() + maxWaitMs;
    for (;;) {
      const token = await budget.draw(rate, burst);
      if (token.ok || token.retryAt > giveUpAt) return token;
      await new Promise((resolve) => setTimeout(resolve, Math.max(1, token.retryAt - Date.now())));
    }
  };
}
