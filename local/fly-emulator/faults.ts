// The emulator's fault model: what it injects on top of the real API's behaviour — 429s with
// tokens left, 5xx before anything is done, capacity refusals per region, a create whose answer
// is lost after the machine exists, a slow create answer, slow boots and machines that die
// without calling back. Every fault is drawn from one seeded PRNG, so a failing run replays
// with its seed. Web standards only.
import { capacityError, fail, tooManyRequests, type Refusal } from "./errors.ts";

export interface FaultOptions {
  /** Seed of the PRNG every fault is drawn from; default 1. (Machine ids are random, not seeded.) */
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

/**
 * Draws the faults of one emulator. The options are read at each draw (a test may change them
 * mid-run, e.g. end a slow boot); a rate of 0 or unset draws nothing, so the PRNG's sequence
 * depends only on the faults that are switched on.
 */
export class FaultModel {
  #source: { faults?: FaultOptions };
  #random: () => number;

  constructor(source: { faults?: FaultOptions }) {
    this.#source = source;
    this.#random = seededRandom(source.faults?.seed ?? 1);
  }

  get #opts(): FaultOptions {
    return this.#source.faults ?? {};
  }

  /** Any API request, after the rate limiter: a 503 before anything is done. */
  onRequest(): Refusal | undefined {
    if (this.#chance(this.#opts.serverErrorRate)) return { response: fail(503, "service unavailable (injected fault)"), fault: "injected_5xx" };
    return undefined;
  }

  /** A valid create, before the machine exists: a 429 with tokens left, or the region out of capacity. */
  onCreate(region: string): Refusal | undefined {
    if (this.#chance(this.#opts.createRateLimitRate)) return { response: tooManyRequests(1000), fault: "injected_429" };
    if (this.#chance(this.#opts.capacityErrorsByRegion?.[region])) return { response: capacityError(), fault: "capacity_region" };
    return undefined;
  }

  /** A new machine that will die before it can call back. */
  dieSilently(): boolean {
    return this.#chance(this.#opts.dieSilentlyRate);
  }

  /** A create that made its machine and then answers 500: the client cannot tell it worked. */
  afterCreate(): Refusal | undefined {
    if (this.#chance(this.#opts.lostCreateResponseRate)) return { response: fail(500, "internal error (injected fault after create)"), fault: "lost_create_response" };
    return undefined;
  }

  /** How long a new machine stays `created` before it starts. */
  bootDelayMs(): number {
    return this.#opts.bootDelayMs ?? 0;
  }

  /** How long a create's answer is held back (0: none). */
  createResponseDelayMs(): number {
    return this.#opts.createResponseDelayMs ?? 0;
  }

  #chance(rate: number | undefined): boolean {
    if (!rate || rate <= 0) return false;
    return this.#random() < rate;
  }
}
