// CPU-seconds per task, from the process's own accounting: process.cpuUsage() is user + system
// time of every thread of this process (libvips' workers included), the figure Fly's CPU quota
// charges. A pool machine's slots convert side by side in one process, so the CPU spent between
// two moments is shared evenly by the tasks in flight then. CPU spent while none is (Node's
// start, loading sharp, lease polling) is the machine's, not a task's: charged to the first task
// it would make a pool's first tasks look several times dearer than the rest, and the
// orchestrator, which sizes the rest of a batch from the first tasks' figures, counts a
// machine's start apart (PROCESS_START_CPU_S).

/** Microseconds of CPU the process has spent so far. */
export type CpuClock = () => number;

const processCpu: CpuClock = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

export class CpuLedger {
  readonly #read: CpuClock;
  #last = 0;
  /** CPU-seconds spent while no task was in flight (the machine's own: start, polling). */
  idleS = 0;
  readonly #tasks = new Map<symbol, number>();

  /** `read` starts at 0 when the process starts (process.cpuUsage() does). */
  constructor(read: CpuClock = processCpu) {
    this.#read = read;
  }

  #advance(): void {
    const now = this.#read();
    const spent = Math.max(0, now - this.#last);
    this.#last = now;
    if (this.#tasks.size === 0) this.idleS += spent / 1e6;
    else for (const [id, us] of this.#tasks) this.#tasks.set(id, us + spent / this.#tasks.size);
  }

  /** A task begins; returns its handle. */
  begin(): symbol {
    this.#advance();
    const id = Symbol("task");
    this.#tasks.set(id, 0);
    return id;
  }

  /** The task ends: its CPU-seconds. */
  end(id: symbol): number {
    this.#advance();
    const us = this.#tasks.get(id) ?? 0;
    this.#tasks.delete(id);
    return us / 1e6;
  }
}

/** The process's one ledger: every task of this machine begins and ends on it. */
export const cpuLedger = new CpuLedger();
