// `npm start` as an operator runs it: the npm process is signalled (not the process group, as a
// terminal's Ctrl-C would), and every process it started must be gone and every port free. When
// a part of the stack dies on its own, `npm start` must say so and exit non-zero.
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../local/paths.ts";
import { OrchestratorClient } from "../../local/api.ts";
import { watchBatch, WatchError } from "../../local/progress.ts";
import { generateSamples } from "../../local/samples.ts";
import { freePort, startStack, type ComponentExit } from "../../local/stack.ts";
import { s3Client, uploadBatch } from "../../local/submit.ts";

interface Run {
  npm: ChildProcess;
  out: string[];
  ports: number[];
  stateDir: string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

// Each test starts a whole stack; readiness itself fails on 180 s without output.
const TEST_TIMEOUT_MS = 400_000;
const started: Run[] = [];
afterAll(async () => {
  // Whatever a failing test left: the group of each npm we started (never anything else).
  for (const run of started) {
    for (const pid of await descendants(run.npm.pid!)) signal(pid, "SIGKILL");
    signal(-run.npm.pid!, "SIGKILL");
    await rm(run.stateDir, { recursive: true, force: true });
  }
});

async function npmStart(): Promise<Run> {
  const stateDir = await mkdtemp(join(tmpdir(), "fanout-start-"));
  const ports = [await freePort(), await freePort(), await freePort()];
  const npm = spawn("npm", ["start", "--", "--quiet"], {
    cwd: REPO_ROOT,
    env: {
      ...process.env,
      FANOUT_STATE_DIR: stateDir,
      FANOUT_PORT: String(ports[0]),
      FANOUT_S3_PORT: String(ports[1]),
      FANOUT_FLY_PORT: String(ports[2]),
    },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true, // its own group, so a terminal-style group signal never reaches it by accident
  });
  const out: string[] = [];
  npm.stdout!.setEncoding("utf8").on("data", (d: string) => out.push(d));
  npm.stderr!.setEncoding("utf8").on("data", (d: string) => out.push(d));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => npm.once("exit", (code, sig) => resolve({ code, signal: sig })));
  const run = { npm, out, ports, stateDir, exit };
  started.push(run);
  // Ready when it says so; fails at once if it exits first, or after 3 minutes of no output.
  let seen = 0;
  let quietSince = Date.now();
  let gone = false;
  void exit.then(() => (gone = true));
  for (;;) {
    const text = out.join("");
    if (text.includes("fanout is running")) return run;
    if (gone) throw new Error(`npm start exited before it was ready:\n${text}`);
    if (text.length !== seen) {
      seen = text.length;
      quietSince = Date.now();
    }
    if (Date.now() - quietSince > 180_000) throw new Error(`npm start printed nothing for 180s and is not ready:\n${text}`);
    await sleep(200);
  }
}

/** Every process below pid (from /proc), children first found last. */
async function descendants(pid: number): Promise<number[]> {
  const parentOf = new Map<number, number>();
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, "utf8");
      // pid (comm) state ppid …; comm may hold spaces and parentheses.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parentOf.set(Number(entry), ppid);
    } catch {
      // exited while listing
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [child, parent] of parentOf) {
      if (parent === p) {
        out.push(child);
        walk(child);
      }
    }
  };
  walk(pid);
  return out;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie has exited; only its parent has not collected it yet.
  return !/^\d+ \(.*\) Z/s.test(readProcStat(pid));
}

function readProcStat(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return "";
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

async function portFree(port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** Waits while the set of live processes keeps shrinking; returns those still alive. */
async function waitGone(pids: number[], quietMs = 30_000): Promise<number[]> {
  let left = pids.filter(alive);
  let changedAt = Date.now();
  while (left.length > 0 && Date.now() - changedAt < quietMs) {
    await sleep(200);
    const now = left.filter(alive);
    if (now.length !== left.length) changedAt = Date.now();
    left = now;
  }
  return left;
}

/** npm's exit after a signal; fails saying what is still running if it takes over 90 s. */
async function exited(run: Run, what: string) {
  const timer = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 90_000).unref());
  const result = await Promise.race([run.exit, timer]);
  if (result === "timeout") {
    const left = (await descendants(run.npm.pid!)).length;
    throw new Error(`npm (pid ${run.npm.pid}) did not exit within 90s of ${what}; ${left} processes below it still run. Output:\n${run.out.join("")}`);
  }
  return result;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function expectNothingLeft(run: Run, tree: number[]): Promise<void> {
  const left = await waitGone(tree);
  const where = `(output:\n${run.out.join("")})`;
  expect(left, `processes still alive ${where}`).toEqual([]);
  for (const port of run.ports) expect(await portFree(port), `port ${port} still taken ${where}`).toBe(true);
}

describe("npm start stops cleanly when npm is signalled", () => {
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    it(`${sig} to the npm process: every child gone, every port free`, async () => {
      const run = await npmStart();
      const tree = await descendants(run.npm.pid!);
      // npm → node local/start.ts → wrangler → workerd at least (sh is exec'd away).
      expect(tree.length).toBeGreaterThanOrEqual(3);
      signal(run.npm.pid!, sig);
      const exit = await exited(run, sig);
      // INT/TERM reach start.ts, which stops the stack and exits 0; npm dies of a HUP at once.
      if (sig === "SIGHUP") expect(exit.signal ?? exit.code).toBeTruthy();
      else expect(exit, run.out.join("")).toEqual({ code: 0, signal: null });
      await expectNothingLeft(run, tree);
      if (sig !== "SIGHUP") expect(run.out.join("")).toContain("Stopped.");
    }, TEST_TIMEOUT_MS);
  }
});

describe("npm start exits non-zero when a part of the stack dies", () => {
  it("the orchestrator killed: one line naming it, exit 1, nothing left", async () => {
    const run = await npmStart();
    const tree = await descendants(run.npm.pid!);
    const stack = JSON.parse(await readFile(join(run.stateDir, "stack.json"), "utf8")) as { orchestrator_pid: number };
    expect(tree).toContain(stack.orchestrator_pid);
    signal(-stack.orchestrator_pid, "SIGKILL"); // wrangler and workerd, as an OOM kill would
    const exit = await exited(run, "the orchestrator's death");
    const text = run.out.join("");
    expect(exit.code, text).toBe(1);
    expect(text).toMatch(/npm start: the orchestrator \(wrangler dev, pid \d+\) exited with signal SIGKILL; its output is in .*orchestrator\.log/);
    await expectNothingLeft(run, tree);
  }, TEST_TIMEOUT_MS);

  it("the local S3 stopping is reported once, naming it (startStack, as npm start uses it)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "fanout-parts-"));
    const exits: ComponentExit[] = [];
    const stack = await startStack({ stateDir: join(dir, "stack"), fresh: true, onComponentExit: (e) => exits.push(e) });
    try {
      // A batch whose manifest cannot be read once S3 is gone: it stalls in discovery, and a
      // watch with stallMs gives up saying where it stood (what the long e2e tests rely on).
      const api = new OrchestratorClient({ url: stack.orchestratorUrl, adminToken: stack.adminToken });
      const client = s3Client({ endpoint: stack.s3.endpoint, bucket: stack.bucket, ...stack.s3.credentials });
      const samples = join(dir, "samples");
      await generateSamples(samples, { count: 2, width: 32, height: 24 });
      const uploaded = await uploadBatch(client, stack.bucket, { dir: samples, batchId: "stalls" });
      await stack.s3.stop();
      await stack.s3.closed; // the stack's own listener on it was added first, so it has run
      expect(exits).toEqual([{ component: "local S3", message: `the local S3 at ${stack.s3.endpoint} stopped listening` }]);
      await api.enqueue({ batch_id: "stalls", manifest_r2_key: uploaded.manifestKey });
      const watched = await watchBatch(api, "stalls", { intervalMs: 200, stallMs: 5000 }).catch((e: unknown) => e);
      expect(watched).toBeInstanceOf(WatchError);
      expect((watched as WatchError).message).toMatch(/^batch stalls made no progress for 5s: status [A-Z_]+(\/[a-z_]+)?, 0\/\d+ done, 0 failed, 0 running, 0 starting, 0 retrying, \d+ pending$/);
      await stack.emulator.stop();
      await stack.emulator.closed;
      expect(exits).toHaveLength(1); // reported once: the first death is the one that matters
    } finally {
      await stack.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }, TEST_TIMEOUT_MS);

  it("the emulator stopping is reported; a deliberate stopOrchestrator() is not", async () => {
    const dir = await mkdtemp(join(tmpdir(), "fanout-parts-"));
    const exits: ComponentExit[] = [];
    const stack = await startStack({ stateDir: join(dir, "stack"), fresh: true, onComponentExit: (e) => exits.push(e) });
    try {
      await stack.stopOrchestrator(); // deliberate: not a death (resolves once the process has exited)
      expect(exits).toEqual([]);
      await stack.emulator.stop();
      await stack.emulator.closed;
      expect(exits.map((e) => e.component)).toEqual(["Fly Machines API emulator"]);
    } finally {
      await stack.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }, TEST_TIMEOUT_MS);

  it("stop() itself reports nothing: every part closed, no exit reported", async () => {
    const dir = await mkdtemp(join(tmpdir(), "fanout-parts-"));
    const exits: ComponentExit[] = [];
    const stack = await startStack({ stateDir: join(dir, "stack"), fresh: true, onComponentExit: (e) => exits.push(e) });
    try {
      const pid = stack.orchestratorPid();
      expect(pid).not.toBeNull();
      await stack.stop();
      // Every part has closed (the stack's own listeners on them were added first, so they have run).
      await Promise.all([stack.s3.closed, stack.emulator.closed]);
      expect(await waitGone([pid!])).toEqual([]);
      expect(exits).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, TEST_TIMEOUT_MS);
});
