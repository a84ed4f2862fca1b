// The soak's fleet run (`npm run soak -- --mode fleet`): three batches at once in one fleet — one
// large, two small that arrive once the large one is under way — through the whole fault matrix,
// the FlyBudget eviction and the orchestrator's SIGKILL + restart. Each batch gets
// the single-batch soak's checks (collect.ts, report.ts); the fleet's own: the emulator counts live
// machines, vCPUs and memory at every create, and their peak must stay within the fleet's limits.
import { join } from "node:path";
import { OrchestratorClient, type BatchStatus } from "../../local/api.ts";
import { generateSamples, type GeneratedSample } from "../../local/samples.ts";
import { startStack, type Stack } from "../../local/stack.ts";
import { s3Client, submitBatch, type Submitted } from "../../local/submit.ts";
import { startCallbackFaults, type CallbackFaults } from "./callback-faults.ts";
import { collect } from "./collect.ts";
import { SOAK, soakVars } from "./config.ts";
import { startEventTap, type EventTap } from "./event-tap.ts";
import { check, type ModeResult } from "./report.ts";
import { startS3Tap, type S3Tap } from "./s3-tap.ts";

interface FleetBatch {
  label: string;
  id: string;
  samples: GeneratedSample[];
  dir: string;
  submitted?: Submitted;
  tap?: EventTap;
  final?: BatchStatus;
}

export async function soakFleet(
  args: { tasks: number; seed: number; "stall-seconds": number },
  samples: GeneratedSample[],
  sampleDir: string,
  workDir: string,
  soakKinds: Parameters<typeof generateSamples>[1]["kinds"],
): Promise<ModeResult[]> {
  const f = SOAK.fleet;
  const smallCount = Math.max(10, Math.round(args.tasks * f.smallFraction));
  const smallDir = join(workDir, "samples-small");
  const small = await generateSamples(smallDir, { count: smallCount, width: 64, height: 48, perFolder: 100, kinds: soakKinds });
  const batches: FleetBatch[] = [
    { label: "large", id: `soak-fleet-large-s${args.seed}`, samples, dir: sampleDir },
    { label: "small 1", id: `soak-fleet-small1-s${args.seed}`, samples: small, dir: smallDir },
    { label: "small 2", id: `soak-fleet-small2-s${args.seed}`, samples: small, dir: smallDir },
  ];
  let tap: S3Tap | undefined;
  let faults: CallbackFaults | undefined;
  const began = Date.now();
  console.log(`\n[Soak] fleet: starting the local stack (${batches.map((b) => `${b.id} ${b.samples.length}`).join(", ")}; fleet ${f.machines} machines, ${f.vcpus} vCPUs, ${f.memory_mb} MB)`);
  const stack: Stack = await startStack({
    stateDir: join(workDir, "fleet"),
    fresh: true,
    seed: args.seed,
    vars: soakVars({
      POOL_MODE: "true",
      MAX_CONCURRENT_MACHINES: "",
      FLEET_MAX_MACHINES: String(f.machines),
      FLEET_MAX_VCPUS: String(f.vcpus),
      FLEET_MAX_MEMORY_MB: String(f.memory_mb),
    }),
    emulator: { createLimit: { perSecond: SOAK.createRate, burst: SOAK.createBurst }, faults: { ...SOAK.faults } },
    machineEnv: { CALLBACK_BACKOFF_MS: "500", CALLBACK_MAX_ATTEMPTS: "10" },
    wrapS3Endpoint: async (endpoint) => (tap = await startS3Tap(endpoint, "fanout-archive")),
    callbackProxy: async (target) =>
      (faults = await startCallbackFaults({ target, rates: SOAK.callbacks, seed: args.seed * 7919 + 2, maxAttempts: SOAK.maxAttempts, maxHoldMs: 5 * 60_000 })),
  });
  const api = new OrchestratorClient({ url: stack.orchestratorUrl, adminToken: stack.adminToken });
  const s3 = s3Client({ endpoint: stack.s3.endpoint, bucket: stack.bucket, ...stack.s3.credentials });
  const events: { evictedAt: number | null; killedAt: number | null; restartedAt: number | null } = { evictedAt: null, killedAt: null, restartedAt: null };
  try {
    const submit = async (b: FleetBatch) => {
      b.submitted = await submitBatch(api, s3, stack.bucket, { dir: b.dir, batchId: b.id });
      b.tap = startEventTap(api, b.id);
      console.log(`[Soak] fleet: ${b.id} submitted (${b.samples.length} TIFFs)`);
    };
    await submit(batches[0]);
    await drive(args, stack, api, batches, faults!, events, submit);
    const results: ModeResult[] = [];
    for (const b of batches) {
      const stream = await b.tap!.stop(30_000);
      const others = batches.filter((o) => o !== b).map((o) => o.submitted!.prefix);
      const evidence = await collect({ stack, api, s3, batchId: b.id, prefix: b.submitted!.prefix, manifestKey: b.submitted!.manifestKey, tap: tap!, faults: faults!, final: b.final!, samples: b.samples, otherPrefixes: others });
      results.push(check(`fleet: ${b.label}`, b.id, evidence, { ...events, wallMs: Date.now() - began, config: SOAK, stream }));
    }
    results.push(fleetVerdict(stack));
    return results;
  } finally {
    await stack.stop();
  }
}

/** The fleet's own check: its limits held at every create (the emulator counts what is live at each). */
function fleetVerdict(stack: Stack): ModeResult {
  const f = SOAK.fleet;
  const { peak } = stack.emulator.core.usage();
  const waited = stack.orchestratorLines.filter((l) => /"event":"fleet_waiting"/.test(l)).length;
  const problems: string[] = [];
  if (peak.machines > f.machines) problems.push(`${peak.machines} machines live at once, over the fleet's ${f.machines}`);
  if (peak.vcpus > f.vcpus) problems.push(`${peak.vcpus} vCPUs live at once, over the fleet's ${f.vcpus}`);
  if (peak.memory_mb > f.memory_mb) problems.push(`${peak.memory_mb} MB live at once, over the fleet's ${f.memory_mb}`);
  return {
    mode: "fleet: limits",
    batchId: "(all three)",
    figures: {
      "fleet limits (machines / vCPUs / MB)": `${f.machines} / ${f.vcpus} / ${f.memory_mb}`,
      "peak live, every create (machines / vCPUs / MB)": `${peak.machines} / ${peak.vcpus} / ${peak.memory_mb}`,
      "times a batch began waiting for fleet capacity": waited,
    },
    faultsInjected: {},
    failureCauses: {},
    problems,
  };
}

/** Follows the three batches to their ends: the small ones submitted once the large one is under way, the eviction and the restart on cue, stall detection. */
async function drive(
  args: { "stall-seconds": number },
  stack: Stack,
  api: OrchestratorClient,
  batches: FleetBatch[],
  faults: CallbackFaults,
  events: { evictedAt: number | null; killedAt: number | null; restartedAt: number | null },
  submit: (b: FleetBatch) => Promise<void>,
): Promise<void> {
  const started = Date.now();
  let lastChange = Date.now();
  let lastSig = "";
  let lastPrint = 0;
  for (;;) {
    const statuses: (BatchStatus | null)[] = [];
    for (const b of batches) statuses.push(b.submitted ? await api.status(b.id).catch(() => null) : null);
    batches.forEach((b, i) => {
      const s = statuses[i];
      if (s && (s.status === "DONE" || s.status === "ERROR" || s.status === "FAILED")) b.final ??= s;
    });
    const known = statuses.filter((s): s is BatchStatus => s !== null);
    const total = batches.reduce((n, b) => n + b.samples.length, 0);
    const finished = known.reduce((n, s) => n + s.progress.tasks_completed + s.progress.tasks_failed, 0);
    const sig = known.map((s) => [s.status, s.progress.tasks_completed, s.progress.tasks_failed, s.progress.pending, s.progress.running].join("/")).join("|");
    const now = Date.now();
    if (sig !== lastSig) {
      lastSig = sig;
      lastChange = now;
    }
    if (now - lastPrint >= 5000) {
      lastPrint = now;
      const u = stack.emulator.core.usage();
      console.log(
        `[Soak] fleet ${((now - started) / 1000).toFixed(1).padStart(6)}s  ` +
          known.map((s) => `${s.batch_id.replace(/^soak-fleet-/, "")} ${s.status} ${s.progress.tasks_completed}/${s.progress.tasks_total}`).join(" · ") +
          `  | live ${u.now.machines} machines ${u.now.vcpus} vCPUs (peak ${u.peak.machines}/${u.peak.vcpus}) · held callbacks ${faults.pending()}`,
      );
    }
    if (batches.every((b) => b.final)) return;
    if (!batches[1].submitted && finished >= SOAK.fleet.smallAt * batches[0].samples.length) {
      await submit(batches[1]);
      await submit(batches[2]);
      lastChange = Date.now();
    }
    if (events.evictedAt === null && finished >= SOAK.evictAt * total) {
      events.evictedAt = Date.now();
      const res = await fetch(`${stack.orchestratorUrl}/admin/debug/evict-fly-budget`, { method: "POST", headers: { authorization: `Bearer ${stack.adminToken}` } });
      console.log(`[Soak] fleet: evicted the FlyBudget DO at ${finished}/${total} finished (HTTP ${res.status})`);
      if (!res.ok) throw new Error(`the FlyBudget eviction hook answered HTTP ${res.status}`);
    }
    if (events.killedAt === null && finished >= SOAK.restartAt * total) {
      events.killedAt = Date.now();
      console.log(`[Soak] fleet: SIGKILL of the orchestrator at ${finished}/${total} finished`);
      await stack.stopOrchestrator("SIGKILL");
      await stack.startOrchestrator();
      events.restartedAt = Date.now();
      lastChange = Date.now();
    }
    if (now - lastChange > args["stall-seconds"] * 1000) {
      throw new Error(`no progress for ${args["stall-seconds"]}s in the fleet run: ${known.map((s) => `${s.batch_id} ${s.status} ${JSON.stringify(s.progress)}`).join("; ")}; live machines ${stack.emulator.core.liveMachineCount()}`);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}
