// Time for the Fly Machines API emulator: the real clock, or one a test moves by hand. Web
// standards only (no node: imports), like every module the emulator runs in workerd tests with.

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
