// `fanout logs <machineId>`: a machine's output — locally the emulator's record (or the log file
// it leaves in the state dir), otherwise `fly logs`.
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { APP_NAME } from "../paths.ts";
import { loadEnv, localStack } from "./context.ts";
import { EXIT, UsageError } from "./output.ts";

export async function logs(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { app: { type: "string", short: "a" } } });
  const machineId = positionals[0];
  if (!machineId || !/^[A-Za-z0-9_-]{1,64}$/.test(machineId)) throw new UsageError("logs needs a machine id, e.g. npm run fanout -- logs 3d8d9e1b2c4f07");
  // Task ids (tiff-000042) and the orchestrator's machine names (tiff-000042-a2, pool-0003) are
  // not Fly machine ids (14 hex digits): say which was given and where the machine id is.
  const named = /^([a-z][a-z0-9]*)-(\d{6})(-a\d+)?$/.exec(machineId) ?? /^(pool)-(\d{4})$/.exec(machineId);
  if (named) {
    const what = named[1] === "pool" ? "a pool machine's name" : named[3] ? "a machine's name (task and attempt)" : "a task id";
    throw new UsageError(
      `${machineId} is ${what}, not a machine id. A task's machine ids are in \`npm run fanout -- tasks <batchId> --json\` (machine_id) and in status's recent failures; then: npm run fanout -- logs <machineId>`,
    );
  }
  const env = loadEnv();
  const stack = localStack(env.FANOUT_STATE_DIR);
  const targetsLocal = env.ORCHESTRATOR_URL === undefined || stack?.orchestrator_url === env.ORCHESTRATOR_URL;
  const file = join(env.FANOUT_STATE_DIR, "logs", "machines", `${machineId}.log`);
  if (targetsLocal && (stack || existsSync(file))) {
    if (stack) {
      try {
        const res = await fetch(`${stack.fly_api}/_emulator/machines/${encodeURIComponent(machineId)}/logs`, { signal: AbortSignal.timeout(5000) });
        if (res.ok) {
          process.stdout.write(await res.text());
          return EXIT.ok;
        }
        await res.body?.cancel();
      } catch {
        // the emulator is gone: the log file below has the same lines
      }
    }
    if (existsSync(file)) {
      process.stdout.write(readFileSync(file, "utf8"));
      return EXIT.ok;
    }
    throw new Error(`the local stack has no machine ${machineId} (looked in the emulator and ${file})`);
  }
  const app = values.app ?? env.FLY_APP_NAME ?? APP_NAME;
  const argv = ["logs", "-a", app, "-i", machineId, "--no-tail"];
  console.error(`$ fly ${argv.join(" ")}`);
  return await new Promise<number>((done) => {
    const child = spawn("fly", argv, { stdio: "inherit" });
    child.once("error", (error) => {
      console.error(`fanout: cannot run flyctl (${(error as NodeJS.ErrnoException).code ?? error.message}). Install it (https://fly.io/docs/flyctl/install/) and log in, then run: fly ${argv.join(" ")}`);
      done(EXIT.failed);
    });
    child.once("exit", (code) => done(code ?? EXIT.failed));
  });
}
