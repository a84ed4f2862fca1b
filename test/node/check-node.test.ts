// The Node guard (scripts/check-node.js) runs on the Node it guards against: the system's older
// Node (20 here, TOOLCHAIN.md), which cannot load a .ts file. There it stops `npm test` with one
// paragraph saying what to do, and at install it notes the system Node once; on Node 22 it is silent.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { delimiter, join } from "node:path";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../local/paths.ts";

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

function run(node: string, args: string[], env: Record<string, string> = {}): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(node, ["scripts/check-node.js", ...args], { cwd: REPO_ROOT, env: { PATH: process.env.PATH ?? "", ...env } }, (error, stdout, stderr) =>
      resolve({ code: typeof error?.code === "number" ? error.code : error ? -1 : 0, stdout, stderr }),
    );
  });
}

/** The first `node` on PATH outside node_modules: the system's, as npm would fall back to it. */
function systemNode(): string | null {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir || dir.includes("node_modules")) continue;
    if (existsSync(join(dir, "node"))) return join(dir, "node");
  }
  return null;
}

const version = (node: string) =>
  new Promise<string>((resolve, reject) => execFile(node, ["--version"], (error, stdout) => (error ? reject(error) : resolve(stdout.trim()))));
const older = (v: string) => {
  const [major, minor] = v.replace(/^v/, "").split(".").map(Number);
  return major < 22 || (major === 22 && minor < 12);
};

describe("scripts/check-node.js", () => {
  it("on the project's Node 22: silent, exit 0; at install it notes an older Node that runs npm, once", async () => {
    expect(await run(process.execPath, [])).toEqual({ code: 0, stdout: "", stderr: "" });
    expect(await run(process.execPath, ["--install"], { npm_config_user_agent: `npm/11.19.1 node/${process.version} linux x64 workspaces/false` })).toEqual({ code: 0, stdout: "", stderr: "" });
    const note = await run(process.execPath, ["--install"], { npm_config_user_agent: "npm/11.19.1 node/v20.20.2 linux x64 workspaces/false" });
    expect(note.code).toBe(0);
    expect(note.stderr).toBe(
      `fanout: the system Node is v20.20.2; fanout runs on Node ${process.version}, which this install put in node_modules/.bin.\n` +
        "`npm run …` and `npx …` use it; a bare `node …` does not. (npm's own EBADENGINE warnings, which say the\n" +
        "same for each package, are off: .npmrc sets loglevel=error.)\n",
    );
  });

  it("on the system's Node: runs (no ERR_UNKNOWN_FILE_EXTENSION); when that Node is older than 22.12 it stops with what to do", async () => {
    const node = systemNode();
    expect(node, "no system node on PATH").not.toBeNull();
    const v = await version(node!);
    const r = await run(node!, []);
    expect(r.stderr).not.toContain("ERR_UNKNOWN_FILE_EXTENSION");
    if (!older(v)) {
      // A system Node that is new enough passes the guard like the project's own.
      expect(r).toEqual({ code: 0, stdout: "", stderr: "" });
      return;
    }
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `fanout needs Node >= 22.12, and this is ${v} (${node}).\n` +
        "`npm install` puts Node 22 into node_modules/.bin for `npm run …` to use; after `npm install --ignore-scripts`\n" +
        "it is missing: run `npm rebuild node` (or `npm install` without --ignore-scripts), then `npm run …` again.\n",
    );
    // As preinstall after --ignore-scripts left no Node 22 behind: the same Node runs the script.
    const install = await run(node!, ["--install"], { npm_config_user_agent: `npm/11.19.1 node/${v} linux x64 workspaces/false` });
    expect(install.code).toBe(0);
    expect(install.stderr).toMatch(/^fanout: Node 22 is not in node_modules\/\.bin \(this is v\d+\.\d+\.\d+\): the `node` package's install script did not\nrun\. Run `npm rebuild node`/);
  });
});
