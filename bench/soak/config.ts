// The soak's fault matrix and limits, in one place (the report prints them).
export const SOAK = {
  /** The create limit the orchestrator is configured with; the emulator enforces the same one. */
  createRate: 5,
  createBurst: 10,
  maxMachines: 6,
  maxAttempts: 5,
  bootTimeoutMs: 15_000,
  runTimeoutMs: 20_000,
  faults: {
    createRateLimitRate: 0.1,
    serverErrorRate: 0.05,
    dieSilentlyRate: 0.05,
    capacityErrorsByRegion: { iad: 1 },
  },
  callbacks: { duplicate: 0.1, late: 0.02, stale: 0.02 },
  evictAt: 0.2,
  restartAt: 0.4,
  /**
   * The fleet run: three batches at once (the large one of --tasks, two small of a tenth, submitted
   * once a tenth of the large one has finished) in a fleet of these limits. No organisation quota in
   * the emulator: it would refuse first, and the fleet's own limits would go unchecked (quota
   * refusals have their own tests: test/e2e/quota.test.ts, test/workers/fly-answers.test.ts).
   */
  fleet: { machines: 6, vcpus: 24, memory_mb: 24_576, smallFraction: 0.1, smallAt: 0.1 },
} as const;

export type SoakConfig = typeof SOAK;

/** The orchestrator's vars in every soak run (single, pool, fleet), on top of the run's own. */
export function soakVars(own: Record<string, string>): Record<string, string> {
  return {
    FLY_REGIONS: "iad,ord,ams",
    MAX_RETRY_ATTEMPTS: String(SOAK.maxAttempts),
    FLY_CREATE_RATE_PER_SECOND: String(SOAK.createRate),
    FLY_CREATE_BURST: String(SOAK.createBurst),
    BOOT_TIMEOUT_MS: String(SOAK.bootTimeoutMs),
    RUN_TIMEOUT_MS: String(SOAK.runTimeoutMs),
    MACHINE_CHECK_INTERVAL_MS: "1000",
    LEASE_TIMEOUT_MS: "6000",
    POOL_IDLE_TIMEOUT_MS: "5000",
    DEBUG_HOOKS: "true",
    ...own,
  };
}
