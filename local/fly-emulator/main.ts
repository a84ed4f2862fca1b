// CLI: node local/fly-emulator/main.ts --port 4280 [--runner process|simulate] [--fault-...]
// Prints the URL to use as FLY_API_HOSTNAME; Ctrl-C stops it and every machine process.
import { parseArgs } from "node:util";
import type { FaultOptions } from "./faults.ts";
import { startFlyEmulator } from "./server.ts";

const USAGE = `usage: node local/fly-emulator/main.ts [options]
  --host H                      listen address (default 127.0.0.1)
  --port N                      port (default 0: any free port)
  --token T                     require this bearer token (default: any non-empty token)
  --runner process|simulate     real child processes (default) or simulated machines
  --command "CMD ARGS"          machine command (default: node fly-worker/main.ts)
  --simulate-ms N               simulated machine run time (default 1000)
  --simulate-cpu-seconds N      simulated run time from Fly's CPU model: N CPU-seconds of one-thread
                                work on the machine's guest (a shared vCPU throttles after its burst)
  --simulate-callback           simulated machines POST a success callback to CALLBACK_URL
  --max-machines N              live machine cap (default 100)
  --no-rate-limit               disable the documented API rate limits
  --quiet                       do not echo machine output
  --seed N                      fault PRNG seed (default 1)
  --fault-429-rate X            fraction of creates answered 429
  --fault-5xx-rate X            fraction of requests answered 503
  --fault-lost-create-rate X    fraction of creates that succeed but answer 500
  --fault-capacity R=X[,R=X]    per-region fraction of creates refused for capacity, e.g. iad=1
  --fault-boot-delay-ms N       time in 'created' before 'started'
  --fault-die-silently-rate X   fraction of machines killed before they can call back`;

function number(name: string, value: string | undefined, { min = 0, max = Number.POSITIVE_INFINITY } = {}): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < min || n > max) {
    throw new Error(`--${name} must be a number between ${min} and ${max}, got "${value}"`);
  }
  return n;
}

function capacity(value: string | undefined): Record<string, number> | undefined {
  if (value === undefined) return undefined;
  const out: Record<string, number> = {};
  for (const pair of value.split(",")) {
    const [region, rate] = pair.split("=");
    if (!region || rate === undefined) throw new Error(`--fault-capacity expects REGION=RATE pairs, got "${pair}"`);
    out[region.trim()] = number("fault-capacity", rate, { max: 1 })!;
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      host: { type: "string" },
      port: { type: "string" },
      token: { type: "string" },
      runner: { type: "string" },
      command: { type: "string" },
      "simulate-ms": { type: "string" },
      "simulate-cpu-seconds": { type: "string" },
      "simulate-callback": { type: "boolean" },
      "max-machines": { type: "string" },
      "no-rate-limit": { type: "boolean" },
      quiet: { type: "boolean" },
      seed: { type: "string" },
      "fault-429-rate": { type: "string" },
      "fault-5xx-rate": { type: "string" },
      "fault-lost-create-rate": { type: "string" },
      "fault-capacity": { type: "string" },
      "fault-boot-delay-ms": { type: "string" },
      "fault-die-silently-rate": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const runner = values.runner ?? "process";
  if (runner !== "process" && runner !== "simulate") throw new Error(`--runner must be process or simulate, got "${runner}"`);

  const faults: FaultOptions = {
    seed: number("seed", values.seed),
    createRateLimitRate: number("fault-429-rate", values["fault-429-rate"], { max: 1 }),
    serverErrorRate: number("fault-5xx-rate", values["fault-5xx-rate"], { max: 1 }),
    lostCreateResponseRate: number("fault-lost-create-rate", values["fault-lost-create-rate"], { max: 1 }),
    capacityErrorsByRegion: capacity(values["fault-capacity"]),
    bootDelayMs: number("fault-boot-delay-ms", values["fault-boot-delay-ms"]),
    dieSilentlyRate: number("fault-die-silently-rate", values["fault-die-silently-rate"], { max: 1 }),
  };
  const command = values.command?.split(/\s+/).filter(Boolean);
  const emulator = await startFlyEmulator({
    host: values.host,
    port: number("port", values.port, { max: 65535 }),
    token: values.token,
    runner,
    process: { echo: !values.quiet, ...(command && command.length > 0 ? { command } : {}) },
    simulate: {
      durationMs: number("simulate-ms", values["simulate-ms"]),
      cpuSeconds: number("simulate-cpu-seconds", values["simulate-cpu-seconds"]),
      callback: values["simulate-callback"],
    },
    maxLiveMachines: number("max-machines", values["max-machines"], { min: 1 }),
    ...(values["no-rate-limit"] ? { rateLimits: false as const } : {}),
    faults,
  });
  console.log(`Fly Machines API emulator listening on ${emulator.url} (FLY_API_HOSTNAME=${emulator.url})`);

  const shutdown = () => {
    void emulator.stop().then(() => process.exit(0));
  };
  process.once("SIGINT", shutdown);
  process.once("SIGTERM", shutdown);
}

main().catch((error: unknown) => {
  console.error(`fly-emulator: ${error instanceof Error ? error.message : String(error)}`);
  console.error(USAGE);
  process.exit(2);
});
