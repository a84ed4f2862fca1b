// The Fly Machines API emulator on loopback, for the local stack and Node tests. Each machine
// is a real child process (default: `node fly-worker/main.ts`) with the machine's env, or a
// simulated one that only waits (and optionally calls back) for makespan benchmarks.
import { spawn, type ChildProcess } from "node:child_process";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { conversionWallS } from "../../shared/fly-model.ts";
import { FlyEmulator, type FlyEmulatorOptions } from "./api.ts";
import { SimulatedRunner, machineProcessEnv, simulatedCallback, type MachineRunner, type RunnerEvents, type RunnerMachine } from "./runner.ts";

const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

export interface ProcessRunnerOptions {
  /** argv of each machine's main process; default [process.execPath, "fly-worker/main.ts"]. */
  command?: string[];
  /** Working directory; default the repository root. */
  cwd?: string;
  /** Host variables passed through (a real machine has none of the host's env); default PATH, HOME, TMPDIR, LANG. */
  inheritEnv?: string[];
  /** Extra variables for every machine (e.g. R2_ENDPOINT of the local S3). Machine env wins. */
  extraEnv?: Record<string, string>;
  /** Also print each machine line to this process's stdout as `[machine <id>] line`. */
  echo?: boolean;
}

/** Runs each machine as a child process in its own process group, so kill takes its children too. */
export class ProcessRunner implements MachineRunner {
  #opts: ProcessRunnerOptions;
  #children = new Map<string, ChildProcess>();
  #exited = new Map<string, Promise<void>>();

  constructor(opts: ProcessRunnerOptions = {}) {
    this.#opts = opts;
  }

  start(machine: RunnerMachine, events: RunnerEvents): void {
    const [file, ...args] = this.#opts.command ?? [process.execPath, "fly-worker/main.ts"];
    const inherited: Record<string, string> = {};
    for (const name of this.#opts.inheritEnv ?? ["PATH", "HOME", "TMPDIR", "LANG"]) {
      const value = process.env[name];
      if (value !== undefined) inherited[name] = value;
    }
    const child = spawn(file, args, {
      cwd: this.#opts.cwd ?? REPO_ROOT,
      env: { ...inherited, ...this.#opts.extraEnv, ...machineProcessEnv(machine) },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    this.#children.set(machine.id, child);
    const log = (stream: "stdout" | "stderr") => (line: string) => {
      events.log(line, stream);
      if (this.#opts.echo) process.stdout.write(`[machine ${machine.id}] ${line}\n`);
    };
    splitLines(child.stdout!, log("stdout"));
    splitLines(child.stderr!, log("stderr"));
    this.#exited.set(
      machine.id,
      new Promise<void>((resolve) => {
        child.once("error", (error) => {
          events.log(`failed to start ${file}: ${error.message}`, "stderr");
        });
        // 'close' waits for stdout/stderr to end, so every line is kept before the machine stops.
        child.once("close", (code, signal) => {
          this.#children.delete(machine.id);
          events.exit(code ?? 128 + signalNumber(signal));
          resolve();
        });
      }),
    );
    if (machine.dieSilently && child.pid !== undefined) killGroup(child);
  }

  async kill(id: string): Promise<void> {
    const child = this.#children.get(id);
    if (child) killGroup(child);
    await this.#exited.get(id);
  }

  /** Pids of machine processes still running. */
  pids(): number[] {
    return [...this.#children.values()].map((c) => c.pid).filter((p): p is number => p !== undefined);
  }

  async killAll(): Promise<void> {
    await Promise.all([...this.#children.keys()].map((id) => this.kill(id)));
  }
}

function killGroup(child: ChildProcess): void {
  try {
    process.kill(-child.pid!, "SIGKILL");
  } catch {
    child.kill("SIGKILL");
  }
}

function signalNumber(signal: NodeJS.Signals | null): number {
  return signal === "SIGKILL" ? 9 : signal === "SIGTERM" ? 15 : signal === "SIGINT" ? 2 : 0;
}

/** Calls `onLine` for each line of a child's output stream. */
export function splitLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let buffered = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    for (const line of lines) onLine(line.replace(/\r$/, ""));
  });
  stream.on("end", () => {
    if (buffered) onLine(buffered);
    buffered = "";
  });
}

// ---------------------------------------------------------------------------------------

export interface FlyEmulatorServerOptions extends Omit<FlyEmulatorOptions, "runner"> {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (any free port). */
  port?: number;
  /** "process" (default): real child processes. "simulate": no process, see `simulate`. Or any runner. */
  runner?: "process" | "simulate" | MachineRunner;
  process?: ProcessRunnerOptions;
  /**
   * For runner "simulate": how long a machine runs and whether it POSTs a success callback to
   * CALLBACK_URL. With `cpuSeconds`, the run time follows from Fly's CPU model instead: that much
   * one-thread work on the machine's guest from a fresh burst balance (shared/fly-model.ts).
   */
  simulate?: { durationMs?: number; callback?: boolean; cpuSeconds?: number };
}

export interface RunningFlyEmulator {
  /** Base URL to use as FLY_API_HOSTNAME, e.g. http://127.0.0.1:41234 */
  url: string;
  port: number;
  core: FlyEmulator;
  /** Pids of machine processes still alive (process runner only). */
  machinePids(): number[];
  /** Stops serving and kills every machine process; resolves once they are gone. */
  stop(): Promise<void>;
  /** Resolves when the server stops listening, whoever stopped it. */
  closed: Promise<void>;
}

/** A simulated machine's run time: fixed, or its CPU-seconds on its guest under Fly's quota. */
export function simulatedDuration(simulate: FlyEmulatorServerOptions["simulate"]): number | ((m: RunnerMachine) => number) {
  const cpuS = simulate?.cpuSeconds;
  if (cpuS === undefined) return simulate?.durationMs ?? 1000;
  return (m) => {
    const kind = m.guest.cpu_kind === "performance" ? "performance" : "shared";
    const guest = { cpu_kind: kind, cpus: m.guest.cpus, memory_mb: m.guest.memory_mb } as const;
    return Math.round(conversionWallS({ cpuS, parallelism: 1, guest }).wallS * 1000);
  };
}

export async function startFlyEmulator(options: FlyEmulatorServerOptions = {}): Promise<RunningFlyEmulator> {
  const { host = "127.0.0.1", port = 0, runner: runnerChoice = "process", process: processOptions, simulate, ...core } = options;
  const processRunner = runnerChoice === "process" ? new ProcessRunner(processOptions) : undefined;
  const runner: MachineRunner =
    processRunner ??
    (runnerChoice === "simulate"
      ? new SimulatedRunner({
          clock: core.clock,
          durationMs: simulatedDuration(simulate),
          ...(simulate?.callback ? { work: simulatedCallback() } : {}),
        })
      : (runnerChoice as MachineRunner));
  const emulator = new FlyEmulator({ ...core, runner });

  const server = createServer((req, res) => {
    void answer(emulator, req, res, host);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${address.port}`;
  const serverClosed = new Promise<void>((resolve) => server.once("close", () => resolve()));

  let stopping: Promise<void> | undefined;
  return {
    url,
    port: address.port,
    core: emulator,
    machinePids: () => processRunner?.pids() ?? [],
    closed: serverClosed,
    stop() {
      stopping ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        await emulator.stop();
        await processRunner?.killAll();
        server.closeAllConnections();
        await closed;
      })();
      return stopping;
    },
  };
}

async function answer(emulator: FlyEmulator, req: IncomingMessage, res: ServerResponse, host: string): Promise<void> {
  try {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = chunks.length > 0 ? Buffer.concat(chunks) : undefined;
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers)) {
      if (value === undefined) continue;
      for (const v of Array.isArray(value) ? value : [value]) headers.append(name, v);
    }
    const request = new Request(`http://${req.headers.host ?? host}${req.url ?? "/"}`, {
      method: req.method,
      headers,
      body: req.method === "GET" || req.method === "HEAD" ? undefined : body,
    });
    const response = await emulator.handle(request);
    const out = Buffer.from(await response.arrayBuffer());
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(out);
  } catch (error) {
    if (res.headersSent) return void res.end();
    res.writeHead(500, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: `emulator error: ${error instanceof Error ? error.message : String(error)}` }));
  }
}
