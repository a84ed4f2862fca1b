// The CLI as a script sees it: no tty (stdout and stderr are pipes), its help and exit codes as
// README's CLI section documents them, first with no stack running, then against a real local
// stack started by `node local/start.ts` (what `npm start` runs) in a temp state dir.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GetObjectCommand, HeadObjectCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../local/paths.ts";
import { generateSamples } from "../../local/samples.ts";
import { freePort } from "../../local/stack.ts";
import { listObjects, s3Client } from "../../local/submit.ts";

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

const CLEAN_ENV = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !/^(ORCHESTRATOR_URL|ADMIN_TOKEN|R2_|FLY_APP_NAME|FORCE_COLOR)/.test(k)),
);

/** The CLI as a child process; `output()` is what it printed so far (tests act on it mid-run). */
function spawnCli(args: string[], env: Record<string, string>): { result: Promise<Ran>; output: () => string } {
  const child = spawn(process.execPath, ["local/cli/main.ts", ...args], { cwd: REPO_ROOT, env: { ...CLEAN_ENV, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const result = new Promise<Ran>((resolve) => {
    child.once("close", (code, signal) => resolve({ code: code ?? (signal ? -1 : null), stdout, stderr: signal ? `${stderr}(killed by ${signal})` : stderr }));
  });
  return { result, output: () => stdout + stderr };
}

function cli(args: string[], env: Record<string, string>): Promise<Ran> {
  return spawnCli(args, env).result;
}

const said = (r: Ran) => `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;

describe("fanout CLI with no stack running", () => {
  let dir: string;
  let env: Record<string, string>;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "fanout-cli-none-"));
    env = { FANOUT_STATE_DIR: dir };
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("help and --version exit 0; no command prints the usage and exits 2", async () => {
    const help = await cli(["help"], env);
    expect(help.code, said(help)).toBe(0);
    expect(help.stdout).toContain("exit codes:");
    expect(help.stdout).toContain("doctor");
    const version = await cli(["--version"], env);
    expect(version).toMatchObject({ code: 0, stdout: "fanout 0.1.0\n" });
    const none = await cli([], env);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain("usage: npm run fanout");
    const one = await cli(["reset", "--help"], env);
    expect(one).toMatchObject({ code: 0, stdout: "usage: npm run fanout -- reset <batchId> [--json]\n" });
  });

  it("a mistyped command gets a suggestion and exit 2, without the whole usage", async () => {
    const r = await cli(["stauts", "b1"], env);
    expect(r.code, said(r)).toBe(2);
    expect(r.stderr).toBe('fanout: unknown command "stauts". Did you mean "status"?\nSee `npm run fanout -- help`.\n');
  });

  it("a malformed batch id names the argument, not (root)", async () => {
    const r = await cli(["status", "bad id!"], env);
    expect(r.code, said(r)).toBe(2);
    expect(r.stderr).toMatch(/^fanout: <batchId> "bad id!": batch_id must be/);
    expect(r.stderr).not.toContain("(root)");
    expect(r.stderr).not.toContain("exit codes:");
    const slots = await cli(["submit", dir, "--slots", "0"], env);
    expect(slots.code, said(slots)).toBe(2);
    expect(slots.stderr).toMatch(/^fanout: --slots "0": must be 1-16/);
    const both = await cli(["submit", dir, "--no-pool", "--slots", "2"], env);
    expect(both.code, said(both)).toBe(2);
    expect(both.stderr).toMatch(/^fanout: --slots is a pool-mode setting: it cannot go with --no-pool/);
  });

  it("no stack running exits 4 (not the usage code) with one line saying what to do", async () => {
    const r = await cli(["status", "b1"], env);
    expect(r.code, said(r)).toBe(4);
    expect(r.stderr).toBe("fanout: no local stack is running and ORCHESTRATOR_URL is not set. Start one with `npm start`, or set ORCHESTRATOR_URL to a deployed orchestrator.\n");
    const unreachable = await cli(["doctor"], { ...env, ORCHESTRATOR_URL: `http://127.0.0.1:${await freePort()}` });
    expect(unreachable.code, said(unreachable)).toBe(4);
    expect(unreachable.stderr).toMatch(/^fanout: cannot reach the orchestrator at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);
  });
});

describe("fanout CLI against a running local stack", () => {
  let work: string;
  let env: Record<string, string>;
  let start: ChildProcess | undefined;
  let startOut = "";
  let s3: ReturnType<typeof s3Client>;
  let stack: { orchestrator_url: string; s3_endpoint: string; bucket: string; s3_access_key_id: string; s3_secret_access_key: string };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "fanout-cli-"));
    env = { FANOUT_STATE_DIR: join(work, "stack") };
    start = spawn(process.execPath, ["local/start.ts", "--quiet"], {
      cwd: REPO_ROOT,
      env: { ...CLEAN_ENV, ...env, FANOUT_PORT: String(await freePort()), FANOUT_S3_PORT: String(await freePort()), FANOUT_FLY_PORT: String(await freePort()) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    start.stdout!.setEncoding("utf8").on("data", (d: string) => (startOut += d));
    start.stderr!.setEncoding("utf8").on("data", (d: string) => (startOut += d));
    let exited = false;
    start.once("exit", () => (exited = true));
    let seen = 0;
    let quietSince = Date.now();
    while (!startOut.includes("fanout is running")) {
      if (exited) throw new Error(`local/start.ts exited before it was ready:\n${startOut}`);
      if (startOut.length !== seen) [seen, quietSince] = [startOut.length, Date.now()];
      if (Date.now() - quietSince > 180_000) throw new Error(`local/start.ts printed nothing for 180s:\n${startOut}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const { readFile } = await import("node:fs/promises");
    stack = JSON.parse(await readFile(join(work, "stack", "stack.json"), "utf8")) as typeof stack;
    s3 = s3Client({ endpoint: stack.s3_endpoint, bucket: stack.bucket, accessKeyId: stack.s3_access_key_id, secretAccessKey: stack.s3_secret_access_key });
  }, 240_000);

  afterAll(async () => {
    if (start?.exitCode === null) {
      const gone = new Promise((r) => start!.once("exit", r));
      start.kill("SIGTERM");
      await gone;
    }
    await rm(work, { recursive: true, force: true });
  }, 120_000);

  async function head(key: string) {
    return await s3.send(new HeadObjectCommand({ Bucket: stack.bucket, Key: key }));
  }

  it("submit --json uploads with content types by extension, says its progress on a pipe, and refuses a batch id that exists", async () => {
    const dir = join(work, "in-a");
    await generateSamples(dir, { count: 3, width: 64, height: 48 });
    await writeFile(join(dir, "notes.txt"), "scanned 2026-11\n");
    await writeFile(join(dir, "meta.json"), "{}\n");
    const r = await cli(["submit", dir, "--batch-id", "cli-a", "--json"], env);
    expect(r.code, said(r)).toBe(0);
    const summary = JSON.parse(r.stdout) as { batch_id: string; files: number; prefix: string; manifest_key: string };
    expect(summary).toMatchObject({ batch_id: "cli-a", files: 5, prefix: "batches/cli-a/" });
    expect(r.stderr).toContain("uploaded 5/5 files");
    expect(r.stderr).not.toContain("\r");
    const tiff = (await listObjects(s3, stack.bucket, "batches/cli-a/")).find((o) => o.key.endsWith(".tif"))!;
    expect((await head(tiff.key)).ContentType).toBe("image/tiff");
    expect((await head("batches/cli-a/notes.txt")).ContentType).toBe("text/plain; charset=utf-8");
    expect((await head("batches/cli-a/meta.json")).ContentType).toBe("application/json");

    // The batch is recorded once the queue delivers it; then the same id is refused, nothing uploaded.
    for (let i = 0; i < 300 && (await cli(["status", "cli-a"], env)).code !== 0; i++) await new Promise((r) => setTimeout(r, 500));
    const manifestBefore = (await head(summary.manifest_key)).ETag;
    const other = join(work, "in-b");
    await mkdir(other, { recursive: true });
    await writeFile(join(other, "other.txt"), "another batch\n");
    const again = await cli(["submit", other, "--batch-id", "cli-a"], env);
    expect(again.code, said(again)).toBe(1);
    expect(again.stderr).toMatch(/^fanout: batch cli-a already exists \(status [A-Z_]+\); nothing was uploaded\./);
    expect((await head(summary.manifest_key)).ETag).toBe(manifestBefore);
    expect((await listObjects(s3, stack.bucket, "batches/cli-a/")).map((o) => o.key)).not.toContain("batches/cli-a/other.txt");

    // Watching on a pipe: one line per change (no carriage returns), then DONE and exit 0.
    const watched = await cli(["status", "cli-a", "--watch"], env);
    expect(watched.code, said(watched)).toBe(0);
    expect(watched.stdout).not.toContain("\r");
    expect(watched.stdout).toContain("cli-a: DONE — 3 done, 0 failed of 3");
    // No pool settings: the sizing's choice, with the machines' time and estimated cost, the all-in
    // cost item by item, and the plan with what it was sized from.
    expect(watched.stdout).toMatch(/^machines \((pool|single) mode\): [1-9]\d* \(\d+ running\), \d+\.\d machine-seconds, estimated \$\d+\.\d{4}, \$\d+\.\d{6} per task done$/m);
    expect(watched.stdout).toMatch(
      /^cost all in: \$\d+\.\d{6} \(\$\d+\.\d{6} per task done\) = machines \$\d+\.\d{6} \+ egress \$\d+\.\d{6} \+ R2 \$\d+\.\d{6} \+ Durable Object \$\d+\.\d{6} \([1-9]\d* rows written\) \+ Worker requests \$\d+\.\d{6}$/m,
    );
    expect(watched.stdout).toMatch(/^plan \(fast\): (one .* machine per task|\d+ × .*, \d+ slot\(s\)), sized from (the starting figure|\d+ measured tasks .*)/m);
    const manifest = JSON.parse(await (await s3.send(new GetObjectCommand({ Bucket: stack.bucket, Key: summary.manifest_key }))).Body!.transformToString()) as {
      directories: { files: { file_name: string; content_type: string }[] }[];
    };
    const types = Object.fromEntries(manifest.directories.flatMap((d) => d.files.map((f) => [f.file_name, f.content_type])));
    expect(types["notes.txt"]).toBe("text/plain; charset=utf-8");
  }, 300_000);

  it("submit --pool --slots, then reset prints a sentence, and status of the ERROR batch exits 1 without a full bar", async () => {
    const dir = join(work, "in-pool");
    // Enough tasks that the batch is still running when the reset comes.
    await generateSamples(dir, { count: 150, width: 64, height: 48 });
    const r = await cli(["submit", dir, "--batch-id", "cli-pool", "--pool", "--slots", "2"], env);
    expect(r.code, said(r)).toBe(0);
    expect(r.stdout).toMatch(/^batch cli-pool enqueued in pool mode \(2 slots per machine\): 150 files/);
    let json: Ran = { code: null, stdout: "", stderr: "" };
    for (let i = 0; i < 300; i++) {
      json = await cli(["status", "cli-pool", "--json"], env);
      if (json.stdout) break; // recorded once the queue delivered it
      await new Promise((res) => setTimeout(res, 500));
    }
    expect(JSON.parse(json.stdout), said(json)).toMatchObject({ batch_id: "cli-pool", mode: "pool" });
    expect(json.code, said(json)).toBe(0);

    // Every event stream the batch serves is taken: --watch is refused one (429), says so and polls.
    const held = new AbortController();
    const streams = await Promise.all(
      Array.from({ length: 20 }, () => fetch(`${stack.orchestrator_url}/status/cli-pool/events`, { signal: held.signal })),
    );
    expect(streams.map((r) => r.status)).toEqual(Array(20).fill(200));
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
    expect(reset.stdout).toMatch(/^batch cli-pool reset: marked ERROR, \d+ open tasks? failed, \d+ machines? destroyed(; \d+ machines? still being destroyed)?\. Submit it again under a new batch id\.\n$/);

    const status = await cli(["status", "cli-pool"], env);
    expect(status.code, said(status)).toBe(1);
    expect(status.stdout).toContain("ERROR");
    expect(status.stdout).not.toMatch(/\] 100%/);
  }, 300_000);

  it("submit --watch follows the live event stream: each failed attempt with its reason as it happens; a batch whose every task failed ends FAILED, exit 1", async () => {
    const dir = join(work, "in-bad");
    await mkdir(dir, { recursive: true });
    // Little-endian TIFF magic, then nothing a decoder can use.
    for (const name of ["bad-1.tif", "bad-2.tif"]) await writeFile(join(dir, name), Buffer.concat([Buffer.from("II*\0"), Buffer.alloc(64, 7)]));
    const r = await cli(["submit", dir, "--batch-id", "cli-bad", "--no-pool", "--watch"], env);
    expect(r.code, said(r)).toBe(1);
    expect(r.stdout).toMatch(/^batch cli-bad enqueued in single-task mode: 2 files/);
    // Only the event stream says this: /status keeps a few recent failures, not each attempt as it fails.
    expect(r.stdout).toMatch(/^tiff-[0-9a-f]+ attempt 1 failed( \(retried\))?: .+$/m);
    expect(r.stdout).toMatch(/^ {4}logs: fly logs /m);
    expect(r.stdout).not.toContain("live events unavailable");
    expect(r.stdout).toContain("cli-bad: FAILED — 0 done, 2 failed of 2");
    expect(r.stdout).toMatch(/error: every task of TIFF_CONVERSION failed \(2 of 2\)/);
  }, 300_000);

  it("reset of an unknown batch names that batch", async () => {
    const r = await cli(["reset", "nope-batch"], env);
    expect(r.code, said(r)).toBe(1);
    expect(r.stderr).toBe(`fanout: no such batch on ${stack.orchestrator_url}: nope-batch\n`);
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
