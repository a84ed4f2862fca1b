// Wraps the emulator's process runner to keep a ledger of every machine that ran: its task,
// whether the emulator killed it as a "silent death" fault, its exit code, and its log lines
// (kept on disk under logs/machines/<id>.log so a finished stack can still be debugged).
import { appendFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { MachineRunner, RunnerEvents, RunnerMachine } from "./fly-emulator/runner.ts";
import type { ProcessRunner } from "./fly-emulator/server.ts";

export interface MachineEntry {
  id: string;
  name: string;
  batchId: string | null;
  taskId: string | null;
  region: string;
  /** The emulator's fault: killed before it could call back. */
  diedSilently: boolean;
  startedAt: number;
  exitedAt: number | null;
  exitCode: number | null;
  /** From the worker's `task.converted` log line, when it got that far. */
  totalTimeMs: number | null;
}

export class MachineLedger implements MachineRunner {
  readonly #inner: ProcessRunner;
  readonly #logDir: string | undefined;
  readonly #onLine: ((machineId: string, line: string) => void) | undefined;
  readonly entries = new Map<string, MachineEntry>();

  constructor(inner: ProcessRunner, options: { logDir?: string; onLine?: (machineId: string, line: string) => void } = {}) {
    this.#inner = inner;
    this.#logDir = options.logDir;
    this.#onLine = options.onLine;
    if (this.#logDir) mkdirSync(this.#logDir, { recursive: true });
  }

  start(machine: RunnerMachine, events: RunnerEvents): void {
    const entry: MachineEntry = {
      id: machine.id,
      name: machine.name,
      batchId: machine.metadata.fanout_batch ?? null,
      taskId: machine.metadata.fanout_task ?? null,
      region: machine.region,
      diedSilently: machine.dieSilently,
      startedAt: Date.now(),
      exitedAt: null,
      exitCode: null,
      totalTimeMs: null,
    };
    this.entries.set(machine.id, entry);
    const file = this.#logDir ? join(this.#logDir, `${machine.id}.log`) : undefined;
    const write = (text: string) => {
      if (file) appendFileSync(file, text);
    };
    write(`${new Date().toISOString()} [emulator] machine ${machine.id} (${machine.name}) started in ${machine.region}${machine.dieSilently ? " — fault: will die silently" : ""}\n`);
    this.#inner.start(machine, {
      log: (line, stream = "stdout") => {
        if (line.includes('"task.converted"')) entry.totalTimeMs = totalTime(line);
        write(`${new Date().toISOString()} ${stream} ${line}\n`);
        this.#onLine?.(machine.id, line);
        events.log(line, stream);
      },
      exit: (code) => {
        entry.exitCode = code;
        entry.exitedAt = Date.now();
        write(`${new Date().toISOString()} [emulator] machine ${machine.id} exited with code ${code}\n`);
        events.exit(code);
      },
    });
  }

  kill(id: string): Promise<void> {
    return this.#inner.kill(id);
  }

  pids(): number[] {
    return this.#inner.pids();
  }

  killAll(): Promise<void> {
    return this.#inner.killAll();
  }

  list(): MachineEntry[] {
    return [...this.entries.values()];
  }
}

function totalTime(line: string): number | null {
  try {
    const json = JSON.parse(line.slice(line.indexOf("{"))) as { performance?: { total_time_ms?: unknown } };
    const t = json.performance?.total_time_ms;
    return typeof t === "number" ? t : null;
  } catch {
    return null;
  }
}
