// The embedded default: local S3 + Fly Machines API emulator + the orchestrator under
// `wrangler dev`, wired together on loopback. One code path for `npm start`, `npm run demo`
// and the e2e tests. The orchestrator runs its production code; only hostnames differ.
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { startCallbackProxy, type CallbackProxy } from "./callback-proxy.ts";
import type { FaultOptions } from "./fly-emulator/faults.ts";
import type { RateLimit } from "./fly-emulator/limits.ts";
import { ProcessRunner, startFlyEmulator, type RunningFlyEmulator } from "./fly-emulator/server.ts";
import { MachineLedger } from "./machine-ledger.ts";
import { APP_NAME, BUCKET, DEFAULT_STATE_DIR } from "./paths.ts";
import { startOrchestratorProcess, type OrchestratorProcess } from "./orchestrator-process.ts";
import { credentialsFromEnv, generateS3Credentials, startLocalS3, type LocalS3 } from "./s3.ts";

export { APP_NAME, BUCKET, DEFAULT_STATE_DIR, STACK_FILE } from "./paths.ts";

export interface StackOptions {
  /** Everything the stack keeps: S3 objects, wrangler state, secrets, logs. Default .local/stack */
  stateDir?: string;
  /** Delete stateDir first (tests). */
  fresh?: boolean;
  /** 0 or unset: a free port. */
  ports?: { orchestrator?: number; s3?: number; emulator?: number };
  /** Orchestrator vars (see orchestrator/config.ts), on top of the local defaults below. */
  vars?: Record<string, string>;
  emulator?: {
    faults?: FaultOptions;
    /** Create-rate limit of the emulator; default matches FLY_CREATE_RATE_PER_SECOND/BURST. */
    createLimit?: RateLimit;
    maxLiveMachines?: number;
  };
  /** Fraction of callbacks delivered twice (through a proxy); 0 = machines call the orchestrator directly. */
  duplicateCallbackRate?: number;
  seed?: number;
  /** Puts something between every S3 client but the caller's and the local S3 (the soak counts writes per key). */
  wrapS3Endpoint?: (endpoint: string) => Promise<{ endpoint: string; stop(): Promise<void> }>;
  /** Puts a proxy of the caller's own between machines and the orchestrator (instead of the duplicating one). */
  callbackProxy?: (orchestratorUrl: string) => Promise<{ url: string; stop(): Promise<void> }>;
  /** Extra env for every machine process (e.g. CALLBACK_BACKOFF_MS). */
  machineEnv?: Record<string, string>;
  /** Each orchestrator / machine output line (they are also kept in stateDir/logs). */
  onOrchestratorLine?: (line: string) => void;
  onMachineLine?: (machineId: string, line: string) => void;
  /**
   * A part of the stack stopped by itself (not through stop() or stopOrchestrator()): the
   * orchestrator process exited, or the emulator's or local S3's server closed. Called once.
   */
  onComponentExit?: (exit: ComponentExit) => void;
}

export interface ComponentExit {
  component: "orchestrator" | "Fly Machines API emulator" | "local S3";
  /** One sentence: what happened and where to look. */
  message: string;
}

export interface Stack {
  orchestratorUrl: string;
  adminToken: string;
  bucket: string;
  s3: LocalS3;
  emulator: RunningFlyEmulator;
  machines: MachineLedger;
  proxy: CallbackProxy | null;
  stateDir: string;
  logDir: string;
  /** Every orchestrator output line since the stack started (across restarts). */
  orchestratorLines: string[];
  /** The vars the orchestrator runs with (no secrets). */
  vars: Record<string, string>;
  /** Stops the orchestrator process group (SIGKILL: a crash) and leaves the rest running. */
  stopOrchestrator(signal?: "SIGTERM" | "SIGKILL"): Promise<void>;
  /** Starts it again on the same port with the same persisted state. */
  startOrchestrator(): Promise<void>;
  /** The orchestrator's process (group) id, while it runs. */
  orchestratorPid(): number | null;
  stop(): Promise<void>;
}

const token = () => randomBytes(24).toString("base64url");
/** Each secret is made when missing, so a state dir from an older version keeps the ones it has. */
const Secrets = z.object({
  ADMIN_TOKEN: z.string().min(16).catch(token),
  CALLBACK_SECRET: z.string().min(16).catch(token),
  FLY_API_TOKEN: z.string().min(16).catch(token),
  /** The local S3's one key pair (R2-shaped); LOCAL_S3_CREDENTIALS in the environment wins. */
  S3_ACCESS_KEY_ID: z.string().regex(/^[0-9a-f]{32}$/).catch(() => generateS3Credentials().accessKeyId),
  S3_SECRET_ACCESS_KEY: z.string().regex(/^[0-9a-f]{64}$/).catch(() => generateS3Credentials().secretAccessKey),
});
type Secrets = z.infer<typeof Secrets>;

/** The local secrets: generated once per state dir, kept in secrets.json (0600, git-ignored). */
export function loadOrCreateSecrets(stateDir: string): Secrets {
  const file = join(stateDir, "secrets.json");
  let stored: unknown = {};
  if (existsSync(file)) {
    try {
      stored = JSON.parse(readFileSync(file, "utf8"));
    } catch {
      stored = {};
    }
  }
  const secrets = Secrets.parse(stored && typeof stored === "object" ? stored : {});
  if (JSON.stringify(secrets) !== JSON.stringify(stored)) {
    mkdirSync(stateDir, { recursive: true });
    writeFileSync(file, `${JSON.stringify(secrets, null, 2)}\n`, { mode: 0o600 });
    chmodSync(file, 0o600);
  }
  return secrets;
}

/** Machines at once: each is a Node + sharp process; ~3 per core keeps a laptop usable. */
export function defaultConcurrency(): number {
  return Math.max(2, Math.min(8, availableParallelism() * 3));
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const stateDir = options.stateDir ?? DEFAULT_STATE_DIR;
  if (options.fresh) rmSync(stateDir, { recursive: true, force: true });
  const logDir = join(stateDir, "logs");
  mkdirSync(logDir, { recursive: true });
  const secrets = loadOrCreateSecrets(stateDir);

  const cleanups: (() => Promise<void>)[] = [];
  // Set once stop() begins (or startup fails): from then on a part closing is expected.
  let stoppingAll = false;
  let reported = false;
  const died = (component: ComponentExit["component"], message: string) => {
    if (stoppingAll || reported) return;
    reported = true;
    options.onComponentExit?.({ component, message });
  };
  const cleanup = async () => {
    stoppingAll = true;
    for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
    cleanups.length = 0;
  };
  try {
    // 1. Local S3 (R2 data).
    const credentials = credentialsFromEnv(process.env.LOCAL_S3_CREDENTIALS) ?? { accessKeyId: secrets.S3_ACCESS_KEY_ID, secretAccessKey: secrets.S3_SECRET_ACCESS_KEY };
    const s3 = await startLocalS3({ port: options.ports?.s3 ?? 0, buckets: [BUCKET], persistDir: join(stateDir, "s3"), credentials }).catch((e: unknown) => {
      throw portHint(e, "local S3", options.ports?.s3);
    });
    cleanups.push(() => s3.stop());
    void s3.closed.then(() => died("local S3", `the local S3 at ${s3.endpoint} stopped listening`));
    let s3Endpoint = s3.endpoint;
    if (options.wrapS3Endpoint) {
      const wrapped = await options.wrapS3Endpoint(s3.endpoint);
      cleanups.push(() => wrapped.stop());
      s3Endpoint = wrapped.endpoint;
    }

    const vars: Record<string, string> = {
      FLY_APP_NAME: APP_NAME,
      FLY_IMAGE: "registry.fly.io/fanout-worker:local",
      FLY_REGIONS: "iad,ord,ams",
      MAX_CONCURRENT_MACHINES: String(defaultConcurrency()),
      MAX_RETRY_ATTEMPTS: "3",
      FLY_CREATE_RATE_PER_SECOND: "5",
      FLY_CREATE_BURST: "10",
      BOOT_TIMEOUT_MS: "30000",
      RUN_TIMEOUT_MS: "120000",
      MACHINE_CHECK_INTERVAL_MS: "2000",
      R2_ACCOUNT_ID: "local",
      R2_BUCKET: BUCKET,
      R2_ENDPOINT: s3Endpoint,
      WORKER_URL: "",
      // Failures point at the command that works here, not at `fly logs` (no Fly app locally).
      LOGS_COMMAND: "npm run fanout -- logs {machine}",
      ...options.vars,
    };

    // 2. The Fly Machines API emulator; machines are `node fly-worker/main.ts` processes.
    const rate = Number(vars.FLY_CREATE_RATE_PER_SECOND);
    const burst = Number(vars.FLY_CREATE_BURST);
    const machines = new MachineLedger(
      new ProcessRunner({
        extraEnv: { MALLOC_ARENA_MAX: "2", ...options.machineEnv },
      }),
      { logDir: join(logDir, "machines"), onLine: options.onMachineLine },
    );
    const emulator = await startFlyEmulator({
      port: options.ports?.emulator ?? 0,
      token: secrets.FLY_API_TOKEN,
      runner: machines,
      maxLiveMachines: options.emulator?.maxLiveMachines ?? 100,
      rateLimits: {
        create: options.emulator?.createLimit ?? { perSecond: rate, burst },
        // Status checks of every live machine each MACHINE_CHECK_INTERVAL_MS must fit.
        read: { perSecond: 50, burst: 100 },
      },
      faults: { seed: options.seed ?? 1, ...options.emulator?.faults },
    }).catch((e: unknown) => {
      throw portHint(e, "Fly Machines API emulator", options.ports?.emulator);
    });
    cleanups.push(async () => {
      await emulator.stop();
      await machines.killAll();
    });
    void emulator.closed.then(() => died("Fly Machines API emulator", `the Fly Machines API emulator at ${emulator.url} stopped listening`));

    // 3. The orchestrator under wrangler dev, state persisted so it survives a restart.
    const port = options.ports?.orchestrator || (await freePort());
    const orchestratorUrl = `http://127.0.0.1:${port}`;
    let proxy: CallbackProxy | null = null;
    let callbackBase: string | null = null;
    if (options.callbackProxy) {
      const own = await options.callbackProxy(orchestratorUrl);
      cleanups.push(() => own.stop());
      callbackBase = own.url;
    } else if (options.duplicateCallbackRate && options.duplicateCallbackRate > 0) {
      proxy = await startCallbackProxy({ target: orchestratorUrl, duplicateRate: options.duplicateCallbackRate, seed: options.seed });
      cleanups.push(() => proxy!.stop());
    }
    vars.CALLBACK_BASE_URL = callbackBase ?? proxy?.url ?? orchestratorUrl;
    vars.FLY_API_HOSTNAME = emulator.url;

    const envFile = join(stateDir, "orchestrator.env");
    const { S3_ACCESS_KEY_ID: _id, S3_SECRET_ACCESS_KEY: _secret, ...workerSecrets } = secrets;
    const env = {
      ...vars,
      ...workerSecrets,
      R2_ACCESS_KEY_ID: s3.credentials.accessKeyId,
      R2_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey,
    };
    writeFileSync(envFile, Object.entries(env).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join("\n") + "\n", { mode: 0o600 });
    chmodSync(envFile, 0o600);

    const orchestratorLines: string[] = [];
    let orchestrator: OrchestratorProcess | null = null;
    const startOrchestrator = async () => {
      if (orchestrator) return;
      const started = await startOrchestratorProcess({
        port,
        persistDir: join(stateDir, "wrangler"),
        envFile,
        logFile: join(logDir, "orchestrator.log"),
        onLine: (line) => {
          orchestratorLines.push(line);
          options.onOrchestratorLine?.(line);
        },
      }).catch((e: unknown) => {
        throw portHint(e, "orchestrator (wrangler dev)", options.ports?.orchestrator);
      });
      orchestrator = started;
      void started.exited.then((how) => {
        // Only the running one, not one stopOrchestrator() already let go.
        if (orchestrator === started) {
          died("orchestrator", `the orchestrator (wrangler dev, pid ${started.pid}) exited with ${how}; its output is in ${join(logDir, "orchestrator.log")}`);
        }
      });
    };
    const stopOrchestrator = async (signal: "SIGTERM" | "SIGKILL" = "SIGTERM") => {
      const running = orchestrator;
      orchestrator = null;
      await running?.stop(signal);
    };
    await startOrchestrator();
    cleanups.push(() => stopOrchestrator());

    let stopping: Promise<void> | undefined;
    return {
      orchestratorUrl,
      adminToken: secrets.ADMIN_TOKEN,
      bucket: BUCKET,
      s3,
      emulator,
      machines,
      proxy,
      stateDir,
      logDir,
      orchestratorLines,
      vars,
      stopOrchestrator,
      startOrchestrator,
      orchestratorPid: () => orchestrator?.pid ?? null,
      stop: () => (stopping ??= cleanup()),
    };
  } catch (error) {
    await cleanup();
    throw error;
  }
}

function portHint(error: unknown, what: string, port: number | undefined): Error {
  const message = error instanceof Error ? error.message : String(error);
  if (/EADDRINUSE|address already in use/i.test(message) && port) {
    return new Error(`${what}: port ${port} is already in use (is another \`npm start\` running?). Choose another port or stop the other process.`);
  }
  return new Error(`${what} failed to start: ${message}`);
}
