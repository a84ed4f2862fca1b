// A passing test run prints what a reader needs and nothing else: no "Missing required secrets"
// (wrangler), no node:inspector probe (vitest plugin and workerd), no NOSENTRY alarm notes or
// cancelled-stream exceptions (workerd), no node:sqlite ExperimentalWarning (fauxqs), no advice on
// isolation (vitest). Runs vitest itself, as `npm test` does, on a workers file that runs alarms by
// hand and cancels streams, one whose deep checks fetch a closed port and an unknown host, and a node
// file that starts a local S3.
import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../local/paths.ts";
import { NoiseFilter, withoutNoise } from "../quiet-output.ts";

/** This environment without vitest's own markers, so the child is a top-level run. */
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(VITEST|TEST$|NODE_OPTIONS$)/.test(k)));

function vitest(args: string[]): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, ["node_modules/vitest/vitest.mjs", "run", ...args], { cwd: REPO_ROOT, env: { ...env, NO_COLOR: "1" }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (out += d));
  return new Promise((resolve) => child.once("close", (code) => resolve({ code, out })));
}

describe("a passing run's output", () => {
  it("has none of the known noise lines, and still says what passed", async () => {
    const run = await vitest(["--project", "workers", "--project", "node", "test/workers/events.test.ts", "test/workers/health.test.ts", "test/node/storage-s3.test.ts"]);
    expect(run.code, run.out).toBe(0);
    expect(run.out).toMatch(/Test Files\s+3 passed/);
    for (const noise of ["Missing required secrets", "Using secrets defined in process.env", "node:inspector", "node%3Ainspector", "NOSENTRY", "ExperimentalWarning", "pump canceled", "workerd@", "faster with"]) {
      expect(run.out, `"${noise}" printed:\n${run.out}`).not.toContain(noise);
    }
  }, 300_000);

  it("drops a noise line but keeps what shares its chunk, and leaves other warnings alone", () => {
    // A deep health check of an unresolvable host: workerd's line, its stack, and the two
    // "uncaught" lines that name it by reference all go; an internal error of another reference stays.
    const f = new NoiseFilter();
    expect(f.filter("e = rust/worker/ffi.rs:110: failed: failed to lookup address information: Name or service not known\n")).toBeNull();
    expect(f.filter("stack: /x/workerd@28a3c60 /x/workerd@3ac7580; sentryErrorContext = jsgInternalError; wdErrId = abc123\n")).toBeNull();
    expect(f.filter("uncaught exception; source = Uncaught (in promise); stack = Error: internal error; reference = abc123\n")).toBeNull();
    expect(f.filter("uncaught exception; exception = workerd/jsg/value.h:1535: failed: jsg.Error: internal error; reference = abc123\nstack: /x/workerd@3a4d9d0\n")).toBeNull();
    expect(f.filter("uncaught exception; source = Uncaught (in promise); stack = Error: internal error; reference = zzz999\nstack: /x/workerd@3a4d9d0\n")).toBe(
      "uncaught exception; source = Uncaught (in promise); stack = Error: internal error; reference = zzz999\nstack: /x/workerd@3a4d9d0\n",
    );
    expect(withoutNoise("exception = workerd/api/streams/identity-transform-stream.c++:296: disconnected: reader canceled\nstack: /x/workerd@3e22c07 /x/workerd@3a5bead\n")).toBeNull();
    expect(withoutNoise("NOSENTRY SQLite alarm overdue, running despite AlarmManager mismatch; scheduledTime = 1s\n")).toBeNull();
    expect(withoutNoise("\x1b[33m▲ \x1b[43;33m[\x1b[43;30mWARNING\x1b[43;33m]\x1b[0m \x1b[1mMissing required secrets: A, B. Add them to .dev.vars, .env, or set as environment variables.\x1b[0m\n\n")).toBeNull();
    expect(withoutNoise("NOSENTRY SQLite alarm handler canceled with requestScheduledAlarm.; x\n ✓ a test\n")).toBe(" ✓ a test\n");
    expect(withoutNoise("▲ [WARNING] Missing required secrets for staging\n")).toBe("▲ [WARNING] Missing required secrets for staging\n");
    expect(withoutNoise('[vitest-plugin] "node:fs", imported from "x.js", is not available\n')).toBe('[vitest-plugin] "node:fs", imported from "x.js", is not available\n');
  });
});
