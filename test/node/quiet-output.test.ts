// A passing test run prints what a reader needs and nothing else: no "Missing required secrets"
// (wrangler), no node:inspector probe (vitest plugin and workerd), no NOSENTRY alarm notes (workerd),
// no node:sqlite ExperimentalWarning (fauxqs). Runs vitest itself, as `npm test` does, on one
// workers file that runs alarms by hand and one node file that starts a local S3.
import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../local/paths.ts";
import { withoutNoise } from "../quiet-output.ts";

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
    const run = await vitest(["--project", "workers", "--project", "node", "test/workers/events.test.ts", "test/node/storage-s3.test.ts"]);
    expect(run.code, run.out).toBe(0);
    expect(run.out).toMatch(/Test Files\s+2 passed/);
    for (const noise of ["Missing required secrets", "Using secrets defined in process.env", "node:inspector", "node%3Ainspector", "NOSENTRY", "ExperimentalWarning"]) {
      expect(run.out, `"${noise}" printed:\n${run.out}`).not.toContain(noise);
    }
  }, 300_000);

  it("drops a noise line but keeps what shares its chunk, and leaves other warnings alone", () => {
    expect(withoutNoise("NOSENTRY SQLite alarm overdue, running despite AlarmManager mismatch; scheduledTime = 1s\n")).toBeNull();
    expect(withoutNoise("\x1b[33m▲ \x1b[43;33m[\x1b[43;30mWARNING\x1b[43;33m]\x1b[0m \x1b[1mMissing required secrets: A, B. Add them to .dev.vars, .env, or set as environment variables.\x1b[0m\n\n")).toBeNull();
    expect(withoutNoise("NOSENTRY SQLite alarm handler canceled with requestScheduledAlarm.; x\n ✓ a test\n")).toBe(" ✓ a test\n");
    expect(withoutNoise("▲ [WARNING] Missing required secrets for staging\n")).toBe("▲ [WARNING] Missing required secrets for staging\n");
    expect(withoutNoise('[vitest-plugin] "node:fs", imported from "x.js", is not available\n')).toBe('[vitest-plugin] "node:fs", imported from "x.js", is not available\n');
  });
});
