// `npm run demo`: the main job end to end on this machine. Brings the local stack up,
// generates sample TIFFs of different kinds, uploads them with a manifest, enqueues the batch,
// shows live progress, prints the outputs and where they are, and stops everything.
// Exit code: 0 when the batch is DONE with every task converted, 1 otherwise.
import "./quiet-warnings.ts";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { z } from "zod";
import { describeZodError } from "../shared/contracts.ts";
import { OrchestratorClient } from "./api.ts";
import { followBatch, formatBytes, summaryNotes, table } from "./progress.ts";
import { generateSamples } from "./samples.ts";
import { REPO_ROOT } from "./orchestrator-process.ts";
import { startStack, type Stack } from "./stack.ts";
import { getBytes, listObjects, s3Client, submitBatch } from "./submit.ts";

const Args = z.object({
  count: z.coerce.number().int().min(1).max(500).default(8),
  timeout: z.coerce.number().int().min(10).max(3600).default(300),
});

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { count: { type: "string" }, timeout: { type: "string" }, help: { type: "boolean", short: "h" } } });
  if (values.help) {
    console.log("usage: npm run demo [-- --count N --timeout SECONDS]   (default 8 TIFFs, 300 s)");
    return 0;
  }
  const parsed = Args.safeParse(values);
  if (!parsed.success) {
    console.error(`demo: ${describeZodError(parsed.error)}`);
    return 2;
  }
  const { count, timeout } = parsed.data;
  const demoDir = join(REPO_ROOT, ".local", "demo");
  const batchId = `demo-${new Date().toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15)}`;
  const started = Date.now();

  step(`Generating ${count} sample TIFFs`);
  const samplesDir = join(demoDir, "samples", batchId);
  const samples = await generateSamples(samplesDir, { count, perFolder: 4 });
  console.log(`  ${samples.map((s) => s.kind).filter((k, i, a) => a.indexOf(k) === i).join(", ")}  →  ${samplesDir}`);

  step("Starting the local stack (local S3, Fly Machines API emulator, orchestrator under wrangler dev)");
  let stack: Stack | undefined;
  let stopping = false;
  const stop = async () => {
    if (stopping || !stack) return;
    stopping = true;
    await stack.stop();
  };
  process.once("SIGINT", () => void stop().then(() => process.exit(130)));
  process.once("SIGTERM", () => void stop().then(() => process.exit(143)));
  try {
    stack = await startStack({ stateDir: join(demoDir, "stack") });
    console.log(`  orchestrator ${stack.orchestratorUrl} · S3 ${stack.s3.endpoint} · Fly API ${stack.emulator.url} · ${stack.vars.MAX_CONCURRENT_MACHINES} machines at once`);

    step(`Uploading and enqueueing batch ${batchId}`);
    const api = new OrchestratorClient({ url: stack.orchestratorUrl, adminToken: stack.adminToken });
    const client = s3Client({ endpoint: stack.s3.endpoint, bucket: stack.bucket, ...stack.s3.credentials });
    const submitted = await submitBatch(api, client, stack.bucket, { dir: samplesDir, batchId });
    console.log(`  ${submitted.files.length} files + manifest s3://${stack.bucket}/${submitted.manifestKey}`);
    console.log("  POST /admin/batches → queue → BatchDO → machines");

    step("Converting");
    const final = await followBatch(api, batchId, { out: process.stdout, timeoutMs: timeout * 1000 });

    // Outputs: every JPEG under the batch prefix, with its size and the machine's conversion time.
    const done = await api.allTasks(batchId, "done");
    const machineOf = new Map(done.map((t) => [t.output_key, t.machine_id]));
    const timeOf = new Map<string, number>();
    for (const m of stack.machines.list()) if (m.totalTimeMs !== null) timeOf.set(m.id, m.totalTimeMs);
    const jpegs = (await listObjects(client, stack.bucket, submitted.prefix)).filter((o) => o.key.endsWith(".jpg"));
    const outDir = join(demoDir, "output", batchId);
    await mkdir(outDir, { recursive: true });
    for (const o of jpegs) {
      const path = join(outDir, o.key.slice(submitted.prefix.length));
      await mkdir(join(path, ".."), { recursive: true });
      await writeFile(path, await getBytes(client, stack.bucket, o.key));
    }
    const rows = jpegs.map((o) => {
      const base = o.key.replace(/-p[0-9]{3}\.jpg$/, ".jpg");
      const machine = machineOf.get(o.key) ?? machineOf.get(base) ?? null;
      const ms = machine ? timeOf.get(machine) : undefined;
      return [o.key, formatBytes(o.size), ms === undefined ? "" : `${(ms / 1000).toFixed(2)} s`, machine ?? ""];
    });
    step(`Outputs (${jpegs.length} JPEGs from ${final.progress.tasks_completed} TIFFs)`);
    console.log(table(["key", "size", "time", "machine"], rows));
    console.log(`
  in the local S3:   ${stack.s3.endpoint}/${stack.bucket}/${submitted.prefix}  (kept in ${join(demoDir, "stack", "s3")})
  copied to disk:    ${outDir}
  machine logs:      ${join(stack.logDir, "machines")}/<machine>.log
  orchestrator log:  ${join(stack.logDir, "orchestrator.log")}`);

    const p = final.progress;
    const ok = final.status === "DONE" && p.tasks_failed === 0 && p.tasks_completed === samples.length;
    step(
      `${final.status}: ${p.tasks_completed}/${p.tasks_total} converted, ${p.tasks_failed} failed in ${((Date.now() - started) / 1000).toFixed(1)}s${final.error ? ` — ${final.error}` : ""}`,
    );
    for (const note of summaryNotes(final)) console.log(`  ${note}`);
    return ok ? 0 : 1;
  } finally {
    step("Stopping the stack");
    await stop();
  }
}

function step(text: string): void {
  console.log(`\n▸ ${text}`);
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`\ndemo failed: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
