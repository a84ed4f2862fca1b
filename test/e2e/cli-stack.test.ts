// The CLI against a real local stack started by `node local/start.ts` (what `npm start` runs) in a
// temp state dir, as a script sees it (no tty): the exit codes that need an orchestrator — 0 done,
// 1 refused / ERROR / FAILED, 3 DONE with failed tasks or nothing to do — for submit, status,
// tasks, reset, redrive, list, logs and doctor (cli.test.ts has the codes that need none).
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GetObjectCommand, HeadObjectCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSamples } from "../../local/samples.ts";
import { listObjects, s3Client } from "../../local/submit.ts";
import { cli, said, spawnCli, startLocalStack, type Ran, type StartedStack } from "../node/support/cli.ts";

/** Little-endian TIFF magic, then nothing a decoder can use: the machine refuses it. */
const CORRUPT_TIFF = Buffer.concat([Buffer.from("II*\0"), Buffer.alloc(64, 7)]);
/** The cost line: machine-seconds and dollars with two significant digits, never "$0.0000". */
const MACHINE_LINE = /^machines \((pool|single) mode\): [1-9]\d* \(\d+ running\), \d+\.\d machine-seconds, estimated \$(0\.0*[1-9]\d|[1-9]\d*\.\d\d), \$(0\.0*[1-9]\d|[1-9]\d*\.\d\d) per task done$/m;

describe("fanout CLI against a running local stack", () => {
  let work: string;
  let env: Record<string, string>;
  let started: StartedStack;
  let s3: ReturnType<typeof s3Client>;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "fanout-cli-"));
    env = { FANOUT_STATE_DIR: join(work, "stack") };
    started = await startLocalStack(env.FANOUT_STATE_DIR);
    s3 = s3Client({ endpoint: started.stack.s3_endpoint, bucket: started.stack.bucket, accessKeyId: started.stack.s3_access_key_id, secretAccessKey: started.stack.s3_secret_access_key });
  }, 240_000);

  afterAll(async () => {
    await started?.stop();
    await rm(work, { recursive: true, force: true });
  }, 120_000);

  const head = (key: string) => s3.send(new HeadObjectCommand({ Bucket: started.stack.bucket, Key: key }));
  /** Waits until the queue has delivered the batch (status answers), without a fixed sleep. */
  async function recorded(batchId: string): Promise<void> {
    let last: Ran | undefined;
    for (let i = 0; i < 300; i++) {
      last = await cli(["status", batchId, "--json"], env);
      if (last.stdout && JSON.parse(last.stdout).ok !== false) return;
      await new Promise((r) => setTimeout(r, 500));
    }
    throw new Error(`batch ${batchId} never recorded: ${last ? said(last) : ""}`);
  }

  it("submit --json uploads with content types by extension, says its progress on a pipe, and refuses a batch id that exists; --watch ends DONE, exit 0, with the cost", async () => {
    const dir = join(work, "in-a");
    await generateSamples(dir, { count: 3, width: 64, height: 48 });
    await writeFile(join(dir, "notes.txt"), "scanned 2026-11\n");
    await writeFile(join(dir, "meta.json"), "{}\n");
    const r = await cli(["submit", dir, "--batch-id", "cli-a", "--json"], env);
    expect(r.code, said(r)).toBe(0);
    const summary = JSON.parse(r.stdout) as { batch_id: string; files: number; prefix: string; manifest_key: string; warnings: string[] };
    expect(summary).toMatchObject({ batch_id: "cli-a", files: 5, prefix: "batches/cli-a/", warnings: [] });
    expect(r.stderr).toContain("uploaded 5/5 files");
    expect(r.stderr).not.toContain("\r");
    const tiff = (await listObjects(s3, started.stack.bucket, "batches/cli-a/")).find((o) => o.key.endsWith(".tif"))!;
    expect((await head(tiff.key)).ContentType).toBe("image/tiff");
    expect((await head("batches/cli-a/notes.txt")).ContentType).toBe("text/plain; charset=utf-8");
    expect((await head("batches/cli-a/meta.json")).ContentType).toBe("application/json");

    // Once the queue delivered it, the same id is refused (exit 1) and nothing is uploaded.
    await recorded("cli-a");
    const manifestBefore = (await head(summary.manifest_key)).ETag;
    const other = join(work, "in-b");
    await mkdir(other, { recursive: true });
    await writeFile(join(other, "other.txt"), "another batch\n");
    const again = await cli(["submit", other, "--batch-id", "cli-a"], env);
    expect(again.code, said(again)).toBe(1);
    expect(again.stderr).toMatch(/^fanout: batch cli-a already exists \(status [A-Z_]+\); nothing was uploaded\./);
    expect((await head(summary.manifest_key)).ETag).toBe(manifestBefore);
    expect((await listObjects(s3, started.stack.bucket, "batches/cli-a/")).map((o) => o.key)).not.toContain("batches/cli-a/other.txt");

    // Watching on a pipe: one line per change (no carriage returns), then DONE and exit 0.
    const watched = await cli(["status", "cli-a", "--watch"], env);
    expect(watched.code, said(watched)).toBe(0);
    expect(watched.stdout).not.toContain("\r");
    expect(watched.stdout).toContain("cli-a: DONE — 3 done, 0 failed of 3");
    // No pool settings: the sizing's choice (one machine per task or a pool), with the machines' time
    // and estimated cost, the all-in cost item by item, and the plan with what it was sized from.
    expect(watched.stdout).toMatch(MACHINE_LINE);
    const $ = String.raw`\$(0|0\.0*[1-9]\d?|[1-9]\d*\.\d\d)`;
    expect(watched.stdout).toMatch(
      new RegExp(String.raw`^cost all in: ${$} \(${$} per task done\) = machines ${$} \+ egress ${$} \+ R2 ${$} \+ Durable Object ${$} \([1-9]\d* rows written\) \+ Worker requests ${$}$`, "m"),
    );
    expect(watched.stdout).toMatch(/^plan \(balanced\): (one .* machine per task|\d+ × .*, \d+ slot\(s\)), sized from (the starting figure|\d+ measured tasks .*)/m);
    const manifest = JSON.parse(await (await s3.send(new GetObjectCommand({ Bucket: started.stack.bucket, Key: summary.manifest_key }))).Body!.transformToString()) as {
      directories: { files: { file_name: string; content_type: string }[] }[];
    };
    const types = Object.fromEntries(manifest.directories.flatMap((d) => d.files.map((f) => [f.file_name, f.content_type])));
    expect(types["notes.txt"]).toBe("text/plain; charset=utf-8");
  }, 300_000);

  it("a folder with no TIFF is submitted with a warning and exit 3; it ends DONE with nothing to do, and status says so (exit 3)", async () => {
    const dir = join(work, "in-none");
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "readme.txt"), "no scans in here\n");
    const r = await cli(["submit", dir, "--batch-id", "cli-none"], env);
    expect(r.code, said(r)).toBe(3);
    expect(r.stderr).toContain(`fanout: warning: none of the 1 files in ${dir} is a TIFF (.tif/.tiff): batch cli-none was submitted but has nothing to convert\n`);
    expect(r.stdout).toMatch(/^batch cli-none enqueued: 1 files/);
    const watched = await cli(["status", "cli-none", "--watch"], env);
    expect(watched.code, said(watched)).toBe(3);
    expect(watched.stdout).toContain("cli-none: DONE — 0 done, 0 failed of 0");
    expect(watched.stdout).toContain("warning: nothing to do: no file of the batch (1 file) needed any of TIFF_CONVERSION, PDF_SPLITTING\n");
    const status = await cli(["status", "cli-none"], env);
    expect(status.code, said(status)).toBe(3);
    expect(status.stdout).toContain("warning: nothing to do");
  }, 300_000);

  it("a batch with a corrupt TIFF ends DONE with failed tasks: exit 3, the failure named by its file with the local logs command; tasks, logs and list show it", async () => {
    const dir = join(work, "in-mixed");
    await generateSamples(dir, { count: 2, width: 64, height: 48 });
    await writeFile(join(dir, "broken.tif"), CORRUPT_TIFF);
    const r = await cli(["submit", dir, "--batch-id", "cli-mixed", "--no-pool", "--watch"], env);
    expect(r.code, said(r)).toBe(3);
    expect(r.stdout).toContain("cli-mixed: DONE — 2 done, 1 failed of 3");
    // As it happened (the event stream) and at the end (recent failures): the file, then the task.
    expect(r.stdout).toMatch(/^batches\/cli-mixed\/broken\.tif \(tiff-\d{6}\) attempt 1 failed( \(retried\))?: .+$/m);
    expect(r.stdout).toMatch(/^ {4}logs: npm run fanout -- logs [0-9a-f]{14}$/m);
    expect(r.stdout).not.toContain("fly logs");
    expect(r.stdout).toMatch(/^ {2}batches\/cli-mixed\/broken\.tif \(tiff-\d{6}\) attempt \d+ {2}[0-9a-f]{14} {2}\S/m);
    expect(r.stdout).toMatch(MACHINE_LINE);

    const failed = await cli(["tasks", "cli-mixed", "--status", "failed"], env);
    expect(failed.code, said(failed)).toBe(0);
    expect(failed.stdout).toMatch(/tiff-\d{6}\s+failed\s+\d+\s+batches\/cli-mixed\/broken\.tif\s+[0-9a-f]{14}\s+\S/);
    const json = await cli(["tasks", "cli-mixed", "--json"], env);
    expect(json.code, said(json)).toBe(0);
    const tasks = JSON.parse(json.stdout) as { status: string; input_key: string; machine_id: string; logs: string }[];
    expect(tasks).toHaveLength(3);
    const broken = tasks.find((t) => t.status === "failed")!;
    expect(broken.input_key).toBe("batches/cli-mixed/broken.tif");
    // On the local stack the command that works here, not `fly logs` (LOGS_COMMAND, set by local/stack.ts).
    expect(broken.logs).toBe(`npm run fanout -- logs ${broken.machine_id}`);

    const logs = await cli(["logs", broken.machine_id], env);
    expect(logs.code, said(logs)).toBe(0);
    expect(logs.stdout).toContain('"batch_id":"cli-mixed"');
    expect(logs.stdout).toContain(`"machine_id":"${broken.machine_id}"`);

    const list = await cli(["list"], env);
    expect(list.code, said(list)).toBe(0);
    await expectListed("cli-mixed", /cli-mixed\s+DONE\s+2\s+1\s+3\s+single/);
    const page = await cli(["list", "--status", "DONE", "--json", "--all", "--limit", "1"], env);
    expect(page.code, said(page)).toBe(0);
    const body = JSON.parse(page.stdout) as { batches: { batch_id: string; status: string }[]; next_cursor: string | null };
    expect(body.batches.map((b) => b.batch_id)).toEqual(expect.arrayContaining(["cli-a", "cli-mixed"]));
    expect(body.batches.every((b) => b.status === "DONE")).toBe(true);
    expect(body.next_cursor).toBeNull();
  }, 300_000);

  /** The batch index may lag a transition by a moment (it is written after the DO's own state). */
  async function expectListed(batchId: string, row: RegExp): Promise<void> {
    let last: Ran | undefined;
    for (let i = 0; i < 60; i++) {
      last = await cli(["list"], env);
      if (row.test(last.stdout)) return;
      await new Promise((r) => setTimeout(r, 500));
    }
    throw new Error(`${batchId} never listed as ${row}: ${last ? said(last) : ""}`);
  }

  it("submit --pool --slots; --watch refused a stream polls; reset says what it did and how to re-run (exit 0), status of the ERROR batch exits 1; redrive re-runs it and --watch follows the redrive to DONE", async () => {
    const dir = join(work, "in-pool");
    // Enough tasks that the batch is still running when the reset comes.
    await generateSamples(dir, { count: 150, width: 64, height: 48 });
    const r = await cli(["submit", dir, "--batch-id", "cli-pool", "--pool", "--slots", "2"], env);
    expect(r.code, said(r)).toBe(0);
    expect(r.stdout).toMatch(/^batch cli-pool enqueued in pool mode \(2 slots per machine\): 150 files/);
    await recorded("cli-pool");
    const json = await cli(["status", "cli-pool", "--json"], env);
    expect(JSON.parse(json.stdout), said(json)).toMatchObject({ batch_id: "cli-pool", mode: "pool", run: 0 });
    expect(json.code, said(json)).toBe(0);

    // Every event stream this client may hold is taken (4 a client, engine/events.ts): --watch, from the
    // same address, is refused one (429), says so and polls.
    const held = new AbortController();
    const streams = await Promise.all(
      Array.from({ length: 4 }, () => fetch(`${started.stack.orchestrator_url}/status/cli-pool/events`, { signal: held.signal })),
    );
    expect(streams.map((s) => s.status)).toEqual(Array(4).fill(200));
    const watcher = spawnCli(["status", "cli-pool", "--watch"], env);
    for (let i = 0; i < 600 && !watcher.output().includes("polling /status instead"); i++) await new Promise((res) => setTimeout(res, 100));
    expect(watcher.output()).toMatch(/live events unavailable \(GET \/status\/cli-pool\/events answered 429: too many open event streams/);

    const reset = await cli(["reset", "cli-pool"], env);
    expect(reset.code, said(reset)).toBe(0);
    // The poller sees the reset: ERROR, exit 1.
    const watched = await watcher.result;
    held.abort();
    expect(watched.code, said(watched)).toBe(1);
    expect(watched.stdout).toContain("cli-pool: ERROR");
    expect(reset.stdout).toMatch(/^batch cli-pool reset: marked ERROR, \d+ open tasks? failed, \d+ machines? destroyed(; \d+ machines? still being destroyed)?\. Re-run its failed tasks with: npm run fanout -- redrive cli-pool\n$/);
    const status = await cli(["status", "cli-pool"], env);
    expect(status.code, said(status)).toBe(1);
    expect(status.stdout).toContain("ERROR");
    expect(status.stdout).not.toMatch(/\] 100%/);
    const resetJson = await cli(["reset", "cli-pool", "--json"], env);
    expect(resetJson.code, said(resetJson)).toBe(0);
    expect(JSON.parse(resetJson.stdout)).toMatchObject({ ok: true, batch_id: "cli-pool", status: "ERROR", tasks_failed: 0 });

    // The redrive runs the batch again (run 1). A watcher that starts now must follow that run to
    // its end: the stream still holds the reset's `error` (run 0), which is not this run's end.
    const redrive = await cli(["redrive", "cli-pool"], env);
    expect(redrive.code, said(redrive)).toBe(0);
    expect(redrive.stdout).toMatch(/^batch cli-pool: \d+ failed tasks? re-running \(redrive 1\); follow it with: npm run fanout -- status cli-pool --watch\n$/);
    const followed = await cli(["status", "cli-pool", "--watch"], env);
    expect(followed.code, said(followed)).toBe(0);
    expect(followed.stdout).toContain("cli-pool: DONE — 150 done, 0 failed of 150");
    // Nothing left to redrive: the orchestrator's 409, as JSON under --json (exit 1).
    const nothing = await cli(["redrive", "cli-pool", "--json"], env);
    expect(nothing.code, said(nothing)).toBe(1);
    expect(JSON.parse(nothing.stdout)).toEqual({ ok: false, error: expect.stringContaining("no failed task to redrive"), exit_code: 1, http_status: 409 });
  }, 300_000);

  it("submit --watch follows the live event stream: each failed attempt with its reason as it happens; a batch whose every task failed ends FAILED, exit 1", async () => {
    const dir = join(work, "in-bad");
    await mkdir(dir, { recursive: true });
    for (const name of ["bad-1.tif", "bad-2.tif"]) await writeFile(join(dir, name), CORRUPT_TIFF);
    const r = await cli(["submit", dir, "--batch-id", "cli-bad", "--no-pool", "--watch"], env);
    expect(r.code, said(r)).toBe(1);
    expect(r.stdout).toMatch(/^batch cli-bad enqueued in single-task mode: 2 files/);
    // Only the event stream says this: /status keeps a few recent failures, not each attempt as it fails.
    expect(r.stdout).toMatch(/^batches\/cli-bad\/bad-[12]\.tif \(tiff-\d{6}\) attempt 1 failed( \(retried\))?: .+$/m);
    expect(r.stdout).not.toContain("live events unavailable");
    expect(r.stdout).toContain("cli-bad: FAILED — 0 done, 2 failed of 2");
    expect(r.stdout).toMatch(/error: every task of TIFF_CONVERSION failed \(2 of 2\)/);
  }, 300_000);

  it("reset of an unknown batch names that batch (exit 1); redrive of a batch with no failed task is refused (exit 1)", async () => {
    const r = await cli(["reset", "nope-batch"], env);
    expect(r.code, said(r)).toBe(1);
    expect(r.stderr).toBe(`fanout: no such batch on ${started.stack.orchestrator_url}: nope-batch\n`);
    const done = await cli(["redrive", "cli-a"], env);
    expect(done.code, said(done)).toBe(1);
    expect(done.stderr).toMatch(/^fanout: POST \/admin\/redrive\/cli-a failed: the orchestrator answered 409: the batch has no failed task to redrive\n$/);
  });

  it("fleet prints the app's fleet (limits, batches, API tokens); --json is GET /fleet's answer", async () => {
    const text = await cli(["fleet"], env);
    expect(text.code, said(text)).toBe(0);
    expect(text.stdout).toMatch(/^fleet of fanout-worker: \d+ of \d+ machines, \d+ of 64 vCPUs, \d+ of 131072 MB live\n/);
    expect(text.stdout).toMatch(/\nFly API tokens: create [0-9.]+\/10 \(5\/s\), list [0-9.]+\/3 \(1\/s\), get [0-9.]+\/10 \(5\/s\), destroy [0-9.]+\/3 \(1\/s\)\n$/);
    const json = await cli(["fleet", "--json"], env);
    expect(json.code, said(json)).toBe(0);
    const body = JSON.parse(json.stdout) as { app: string; limits: { configured: { machines: number } }; batches: unknown[]; waiting: string[] };
    expect(body).toMatchObject({ app: "fanout-worker", waiting: [] });
    expect(body.limits.configured.machines).toBeGreaterThanOrEqual(2);
    const bad = await cli(["fleet", "--wide"], env);
    expect(bad.code, said(bad)).toBe(2);
  });

  it("doctor checks config, Fly API, storage and the callback URL; a wrong admin token is a sentence and exit 1", async () => {
    const ok = await cli(["doctor"], env);
    expect(ok.code, said(ok)).toBe(0);
    for (const check of ["config", "fly_api", "storage_s3", "callback_reachable"]) expect(ok.stdout).toContain(`✓ ${check}`);
    expect(ok.stdout).toContain("Everything checked is in order.");

    const wrong = await cli(["doctor"], { ...env, ADMIN_TOKEN: "not-the-token" });
    expect(wrong.code, said(wrong)).toBe(1);
    expect(wrong.stdout).toContain("refused ADMIN_TOKEN");
    expect(wrong.stdout).not.toContain("not-the-token");
  });
});
