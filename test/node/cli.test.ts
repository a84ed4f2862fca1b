// The CLI's table, as a script sees it (no tty: stdout and stderr are pipes), with no stack
// running: every command's usage, and the exit codes and error shapes README's CLI section
// documents that need no orchestrator (2 usage, 4 none to talk to, 1 a tool missing), as one
// line on stderr or, under --json, one JSON object on stdout. cli-stack.test.ts covers the
// codes that need a running stack (0, 1, 3) command by command.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { COMMANDS } from "../../local/cli/commands.ts";
import { USAGE } from "../../local/cli/help.ts";
import { freePort } from "../../local/stack.ts";
import { cli, said } from "./support/cli.ts";

const NO_STACK = "fanout: no local stack is running and ORCHESTRATOR_URL is not set. Start one with `npm start`, or set ORCHESTRATOR_URL to a deployed orchestrator.\n";

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

  it("help lists every command's usage (reset … --json included); each `<command> --help` prints it; --version; no command prints the usage and exits 2", async () => {
    const help = await cli(["help"], env);
    expect(help.code, said(help)).toBe(0);
    expect(help.stdout).toBe(`${USAGE}\n`);
    expect(help.stdout).toContain("exit codes:");
    for (const [name, command] of Object.entries(COMMANDS)) {
      // The usage line's command and its options as help shows them (help wraps long ones).
      expect(help.stdout, name).toContain(command.usage.split(" [")[0]);
      const one = await cli([name, "--help"], env);
      expect(one.code, said(one)).toBe(0);
      expect(one.stdout.split("\n")[0], name).toBe(`usage: npm run fanout -- ${command.usage}`);
    }
    expect(help.stdout).toMatch(/^ {2}reset <batchId> \[--json\] /m);
    const version = await cli(["--version"], env);
    expect(version).toMatchObject({ code: 0, stdout: "fanout 0.1.0\n" });
    const none = await cli([], env);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain("usage: npm run fanout");
  });

  it("usage errors (exit 2) are one line and a pointer to --help, never the whole usage text", async () => {
    const cases: [string[], RegExp][] = [
      [["stauts", "b1"], /^fanout: unknown command "stauts"\. Did you mean "status"\?$/],
      [["status", "bad id!"], /^fanout: <batchId> "bad id!": batch_id must be /],
      [["submit", ".", "--slots", "0"], /^fanout: --slots "0": must be 1-16$/],
      [["submit", ".", "--no-pool", "--slots", "2"], /^fanout: --slots is a pool-mode setting: it cannot go with --no-pool$/],
      [["tasks", "b1", "--status", "weird"], /^fanout: --status must be one of pending, retrying, starting, running, done, failed, got "weird"$/],
      [["list", "--status", "bogus"], /^fanout: --status "bogus": must be `active` or a status such as DONE/],
      [["list", "--status", "done;drop"], /^fanout: --status "done;drop": must be `active`/],
      [["list", "--limit", "0"], /^fanout: --limit "0": must be 1-200$/],
      [["list", "--limit", "x"], /^fanout: --limit "x": must be a number$/],
      [["list", "--frobnicate"], /^fanout: Unknown option '--frobnicate'/],
      [["redrive"], /^fanout: <batchId> is required$/],
      [["logs"], /^fanout: logs needs a machine id/],
    ];
    for (const [args, first] of cases) {
      const r = await cli(args, env);
      expect(r.code, `${args.join(" ")}\n${said(r)}`).toBe(2);
      const lines = r.stderr.trimEnd().split("\n");
      expect(lines[0], args.join(" ")).toMatch(first);
      expect(lines.slice(1), args.join(" ")).toEqual([`See \`npm run fanout -- ${args[0] === "stauts" ? "help" : `${args[0]} --help`}\`.`]);
      expect(r.stdout, args.join(" ")).toBe("");
    }
  });

  it("a task id or a machine name given to logs is named as such, with where the machine id is (exit 2)", async () => {
    for (const [given, what] of [
      ["tiff-000000", "a task id"],
      ["tiff-000042-a2", "a machine's name (task and attempt)"],
      ["pool-0003", "a pool machine's name"],
    ]) {
      const r = await cli(["logs", given], env);
      expect(r.code, said(r)).toBe(2);
      expect(r.stderr.split("\n")[0]).toBe(
        `fanout: ${given} is ${what}, not a machine id. A task's machine ids are in \`npm run fanout -- tasks <batchId> --json\` (machine_id) and in status's recent failures; then: npm run fanout -- logs <machineId>`,
      );
    }
  });

  it("no stack running: every command that needs an orchestrator exits 4 with one line saying what to do", async () => {
    for (const args of [["status", "b1"], ["status", "b1", "--watch"], ["tasks", "b1"], ["reset", "b1"], ["redrive", "b1"], ["list"], ["doctor"], ["submit", dir]]) {
      const r = await cli(args, env);
      expect(r.code, `${args.join(" ")}\n${said(r)}`).toBe(4);
      expect(r.stderr, args.join(" ")).toBe(NO_STACK);
    }
  });

  it("an unreachable orchestrator is exit 4; a malformed ORCHESTRATOR_URL is a usage error (2), for list as for the rest", async () => {
    const away = `http://127.0.0.1:${await freePort()}`;
    for (const args of [["list"], ["doctor"], ["status", "b1"], ["redrive", "b1"]]) {
      const r = await cli(args, { ...env, ORCHESTRATOR_URL: away, ADMIN_TOKEN: "an-admin-token" });
      expect(r.code, `${args.join(" ")}\n${said(r)}`).toBe(4);
      expect(r.stderr, args.join(" ")).toMatch(/^fanout: cannot reach the orchestrator at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);
    }
    for (const args of [["list"], ["status", "b1"]]) {
      const r = await cli(args, { ...env, ORCHESTRATOR_URL: "ftp://example" });
      expect(r.code, `${args.join(" ")}\n${said(r)}`).toBe(2);
      expect(r.stderr.split("\n")[0]).toMatch(/^fanout: bad environment: ORCHESTRATOR_URL/);
    }
  });

  it("--json: every command's error is JSON on stdout (ok false, the error, its exit code), nothing on stderr", async () => {
    for (const args of [["status", "b1"], ["status", "b1", "--watch"], ["tasks", "b1"], ["reset", "b1"], ["redrive", "b1"], ["list"], ["doctor"], ["submit", dir]]) {
      const r = await cli([...args, "--json"], env);
      expect(r.code, `${args.join(" ")}\n${said(r)}`).toBe(4);
      expect(JSON.parse(r.stdout), args.join(" ")).toEqual({ ok: false, error: NO_STACK.slice("fanout: ".length, -1), exit_code: 4 });
      expect(r.stderr).toBe("");
    }
    const usage = await cli(["list", "--limit", "0", "--json"], env);
    expect(usage.code, said(usage)).toBe(2);
    expect(JSON.parse(usage.stdout)).toEqual({ ok: false, error: '--limit "0": must be 1-200', exit_code: 2, usage: "npm run fanout -- list --help" });
  });

  it("logs of a machine with no stack and no flyctl on PATH: exit 1, saying how to install it and the command to run", async () => {
    const r = await cli(["logs", "3d8d9e1b2c4f07"], { ...env, PATH: dirname(process.execPath) });
    expect(r.code, said(r)).toBe(1);
    expect(r.stderr).toContain("$ fly logs -a fanout-worker -i 3d8d9e1b2c4f07 --no-tail\n");
    expect(r.stderr).toContain("fanout: cannot run flyctl (ENOENT). Install it (https://fly.io/docs/flyctl/install/) and log in, then run: fly logs -a fanout-worker -i 3d8d9e1b2c4f07 --no-tail");
  });
});
