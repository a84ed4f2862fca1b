// A batch of 25 TIFFs of mixed kinds through the whole local stack, submitted with the CLI:
// upload + manifest → POST /admin/batches → queue → BatchDO → Fly emulator → fly-worker
// processes → local S3 → callbacks → DONE.
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSamples, type GeneratedSample } from "../../local/samples.ts";
import { freePort } from "../../local/stack.ts";
import { cli, cliEnv } from "./support/cli.ts";
import { BACKSTOP_MS, checkJpegs, expectedJpegKeys, jpegKeys, startE2EStack, waitNoLiveMachines, type E2EStack } from "./support/stack.ts";

describe("a batch of 25 mixed TIFFs", () => {
  let stack: E2EStack;
  let env: Record<string, string>;
  let samples: GeneratedSample[];
  const batchId = "e2e-mixed-25";

  beforeAll(async () => {
    stack = await startE2EStack();
    env = cliEnv(stack);
    samples = await generateSamples(join(stack.workDir, "mixed"), { count: 25, width: 640, height: 480, perFolder: 10 });
  }, BACKSTOP_MS); // a stack start and 25 sharp encodes: minutes on a loaded 2-core machine
  afterAll(async () => {
    await stack?.dispose();
  });

  it("is submitted with the CLI, watched to DONE, and every JPEG is in S3 and decodes", async () => {
    const started = Date.now();
    const run = await cli(["submit", join(stack.workDir, "mixed"), "--batch-id", batchId, "--watch"], env);
    // Piped: the upload says how far it got on stderr, one line at a time.
    expect(run.stderr).toMatch(/^(uploaded \d+\/25 files\n)*uploaded 25\/25 files\n$/);
    expect(run.code, run.stdout).toBe(0);
    expect(run.stdout).toContain(`batch ${batchId} enqueued: 25 files`);
    expect(run.stdout, run.stdout).toMatch(/100%\s+25\/25 done\s+DONE/);

    const status = await stack.api.status(batchId);
    expect(status.status).toBe("DONE");
    expect(status.progress).toMatchObject({
      tasks_total: 25,
      tasks_completed: 25,
      tasks_failed: 0,
      pending: 0,
      starting: 0,
      running: 0,
      retrying: 0,
    });
    expect(status.error).toBeNull();
    expect(status.completed_at).not.toBeNull();

    const prefix = `batches/${batchId}/`;
    const expected = expectedJpegKeys(prefix, samples);
    expect(expected.length).toBeGreaterThan(25); // multi-page inputs give a JPEG per page
    expect((await jpegKeys(stack, prefix)).sort()).toEqual(expected);
    expect(await checkJpegs(stack, expected)).toEqual([]);

    const done = await stack.api.allTasks(batchId, "done");
    expect(done).toHaveLength(25);
    expect(new Set(done.map((t) => t.machine_id)).size).toBe(25);
    expect(await waitNoLiveMachines(stack)).toEqual({ live: 0, pids: [] });
    console.log(`[e2e] 25 mixed TIFFs → DONE in ${Date.now() - started} ms`);
  });

  it("CLI: status, tasks and logs read the finished batch", async () => {
    const status = await cli(["status", batchId], env);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/25\/25 done\s+DONE/);

    const tasks = await cli(["tasks", batchId, "--status", "failed"], env);
    expect(tasks.code).toBe(0);
    expect(tasks.stdout).toContain(`no failed tasks in ${batchId}`);

    const all = await cli(["tasks", batchId, "--json"], env);
    const list = JSON.parse(all.stdout) as { machine_id: string }[];
    expect(list).toHaveLength(25);

    // A local stack's machine logs come from the emulator (the stack file says where it is).
    const machineId = list[0].machine_id;
    const { writeFile, mkdir } = await import("node:fs/promises");
    const stateDir = join(stack.workDir, "cli-state");
    await mkdir(stateDir, { recursive: true });
    await writeFile(
      join(stateDir, "stack.json"),
      JSON.stringify({ orchestrator_url: stack.orchestratorUrl, s3_endpoint: stack.s3.endpoint, bucket: stack.bucket, fly_api: stack.emulator.url }),
    );
    const logs = await cli(["logs", machineId], { ...env, FANOUT_STATE_DIR: stateDir });
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout).toContain('"task.converted"');
    expect(logs.stdout).toContain(machineId);
  });

  it("CLI: clear errors for a wrong token, an unreachable orchestrator and a bad batch id", async () => {
    const wrong = await cli(["reset", batchId], { ...env, ADMIN_TOKEN: "not-the-token" });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain("refused the admin token (401");
    expect(wrong.stderr).not.toContain(stack.adminToken);

    const closed = await freePort();
    const down = await cli(["status", batchId], { ...env, ORCHESTRATOR_URL: `http://127.0.0.1:${closed}` });
    expect(down.code).toBe(4);
    expect(down.stderr).toContain(`cannot reach the orchestrator at http://127.0.0.1:${closed} (ECONNREFUSED)`);

    const unknown = await cli(["status", "no-such-batch"], env);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("no such batch");

    const bad = await cli(["status", "bad id!"], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("batch_id must be");

    const noUrl = await cli(["status", batchId], {});
    expect(noUrl.code).toBe(4);
    expect(noUrl.stderr).toContain("ORCHESTRATOR_URL is not set");

    const done = await cli(["reset", batchId], env);
    expect(done.code).toBe(1);
    expect(done.stderr).toContain("409");
  });
});
