// Benchmarks in workerd (not tests: `npm test` never includes bench/). bench/run.ts runs one
// project at a time and reads the one `BENCH_JSON <name> <json>` line each bench prints.
import { defineConfig } from "vitest/config";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";

// The batch index's schema, applied by the tests' d1-setup.ts (else every index write logs "no such table").
const d1Migrations = await readD1Migrations("./migrations");

/** The Worker's env in the benches: as in the workerd tests, except the limits a bench sets. */
function bindings(limits: Record<string, string>) {
  return {
    FLY_API_HOSTNAME: "http://fly.test",
    FLY_API_TOKEN: "bench-fly-token",
    CALLBACK_SECRET: "bench-callback-secret",
    ADMIN_TOKEN: "bench-admin-token",
    CALLBACK_BASE_URL: "http://orchestrator.test",
    R2_ACCOUNT_ID: "bench-account",
    R2_ACCESS_KEY_ID: "bench-access-key",
    R2_SECRET_ACCESS_KEY: "bench-secret-key",
    WORKER_URL: "",
    FLY_REGIONS: "iad",
    // The benches put each batch under its own top-level prefix (the production default allows only batches/).
    ALLOWED_PREFIXES: "/",
    TEST_D1_MIGRATIONS: d1Migrations,
    ...limits,
  };
}

function project(name: string, limits: Record<string, string>, provide: Record<string, unknown> = {}, file = name) {
  return {
    plugins: [
      cloudflareTest({
        wrangler: { configPath: "./wrangler.jsonc" },
        miniflare: { bindings: bindings(limits) },
      }),
    ],
    test: {
      name,
      include: [`bench/workerd/${file}.bench-run.ts`],
      // A backstop only: one test runs a whole section, and on a loaded 2-core machine the makespan
      // section's six simulations took over 15 minutes of real time.
      testTimeout: 3 * 3_600_000,
      hookTimeout: 120_000,
      silent: false,
      setupFiles: ["test/workers/support/d1-setup.ts"],
      provide,
    },
  };
}

/** Fleet limits that never bind a bench of one batch at a time. */
const UNBOUND_FLEET = { FLEET_MAX_MACHINES: "100000", FLEET_MAX_VCPUS: "1000000", FLEET_MAX_MEMORY_MB: "100000000" };

const number = (name: string, fallback: number) => {
  const v = Number(process.env[name] ?? fallback);
  if (!Number.isFinite(v) || v < 0) throw new Error(`${name} must be a non-negative number, got "${process.env[name]}"`);
  return v;
};

/** How the simulations model one 100 MP scan (bench/run.ts passes what section 2 measured). */
const scan = () => ({
  cpuS: number("BENCH_CPU_S", 14.3),
  bootDelayMs: number("BENCH_BOOT_DELAY_MS", 5_000),
  fileBytes: number("BENCH_FILE_BYTES", 254_000_000),
  outBytes: number("BENCH_OUT_BYTES", 26_000_000),
  netBytesPerS: number("BENCH_NET_BYTES_PER_S", 100e6),
  rttS: number("BENCH_RTT_S", 0.2),
});

/**
 * The makespan project: production's limits (MAX_CONCURRENT_MACHINES 50, Fly's create limit 1/s
 * burst 3, no POOL_MODE or POOL_TASKS_PER_MACHINE: the engine sizes each batch); the runs come from
 * bench/run.ts as JSON (BENCH_MAKESPAN_RUNS).
 */
function makespan() {
  const runs = JSON.parse(process.env.BENCH_MAKESPAN_RUNS ?? "[]") as unknown[];
  return project(
    "makespan",
    // The fleet's limits do not bind here (one batch at a time; the fleet section measures them).
    { MAX_CONCURRENT_MACHINES: "50", FLY_CREATE_RATE_PER_SECOND: "1", FLY_CREATE_BURST: "3", ...UNBOUND_FLEET },
    { makespan: { runs, bootDelayMs: number("BENCH_BOOT_DELAY_MS", 5_000), rttS: number("BENCH_RTT_S", 0.2) } },
  );
}

export default defineConfig({
  test: {
    fileParallelism: false,
    projects: [
      // A machine budget and create rate that never bind: the engine's own cost is measured.
      project(
        "scale",
        { MAX_CONCURRENT_MACHINES: "200", FLY_CREATE_RATE_PER_SECOND: "1000", FLY_CREATE_BURST: "1000", POOL_MODE: "false", ...UNBOUND_FLEET, FLY_API_RATES: "list=1000/1000,get=1000/1000,destroy=1000/1000" },
        // BENCH_SCALE_PARTS=life runs only a task's whole life (rows written), callbacks only the latency part.
        { scaleParts: (process.env.BENCH_SCALE_PARTS ?? "callbacks,life").split(",") },
      ),
      // Production limits (wrangler.jsonc): 50 machines, Fly's documented create limit 1/s burst 3.
      makespan(),
      // The fleet: batches at once in one fleet (its limits set per scenario); no cap per batch; Fly's create limit.
      project(
        "fleet",
        { MAX_CONCURRENT_MACHINES: "", FLY_CREATE_RATE_PER_SECOND: "1", FLY_CREATE_BURST: "3" },
        {
          fleet: {
            ...scan(),
            // BENCH_FLEET_SCALE=0.1: every batch a tenth the size (a quick look; RESULTS.md is for 1).
            scale: number("BENCH_FLEET_SCALE", 1),
            // BENCH_FLEET_SCENARIOS=b: one scenario (RESULTS.md is written for all three).
            scenarios: (process.env.BENCH_FLEET_SCENARIOS ?? "a,b,c").split(",").map((x) => x.trim()),
          },
        },
      ),
    ],
  },
});
