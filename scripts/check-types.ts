// The Worker's Env and runtime types are generated from wrangler.jsonc by `wrangler types` and
// committed; this regenerates them beside the committed file and fails when the two differ.
// `node scripts/check-types.ts --write` (npm run types) updates the committed file instead.
// (`wrangler types --check` compares only a hash of the config, so a hand-edited file would pass it.)
// Regenerating takes ~20 s (workerd dumps the runtime types): inputs already verified identical
// (config, wrangler and workerd versions, committed file) are remembered in node_modules/.cache.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const TYPES_FILE = "orchestrator/worker-configuration.d.ts";
/** Vars are typed `string`, not their default's literal: they are overridden per deploy and in tests. */
const FLAGS = ["--strict-vars=false"];
const WRANGLER = join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js");
const CACHE = join(ROOT, "node_modules", ".cache", "fanout", "types-verified.json");

/** Everything the generated file depends on, and the file itself. */
async function fingerprint(config: string, typesFile: string): Promise<string> {
  const hash = createHash("sha256");
  hash.update(JSON.stringify(FLAGS));
  for (const file of [config, typesFile, "node_modules/wrangler/package.json", "node_modules/workerd/package.json"]) {
    hash.update(`\0${file}\0`);
    hash.update(await readFile(join(ROOT, file)).catch(() => Buffer.from("(missing)")));
  }
  return hash.digest("hex");
}

async function verified(): Promise<string[]> {
  try {
    const list: unknown = JSON.parse(await readFile(CACHE, "utf8"));
    return Array.isArray(list) ? list.filter((x): x is string => typeof x === "string") : [];
  } catch {
    return [];
  }
}

async function remember(print: string): Promise<void> {
  await mkdir(dirname(CACHE), { recursive: true });
  await writeFile(CACHE, JSON.stringify([print, ...(await verified()).filter((p) => p !== print)].slice(0, 20)));
}

function wranglerTypes(outFile: string, config: string): Promise<void> {
  return new Promise((done, fail) => {
    execFile(
      process.execPath,
      [WRANGLER, "types", relative(ROOT, outFile), "--config", config, ...FLAGS],
      { cwd: ROOT, env: { ...process.env, WRANGLER_SEND_METRICS: "false", NO_COLOR: "1" }, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => (error ? fail(new Error(`wrangler types failed: ${error.message}\n${stdout}${stderr}`)) : done()),
    );
  });
}

/** Regenerates into a scratch file beside the committed one (so relative imports match) and compares. */
export async function typesAreCurrent(
  config = "wrangler.jsonc",
  typesFile = TYPES_FILE,
  options: { cache?: boolean } = {},
): Promise<{ current: boolean; cached?: boolean; problem?: string }> {
  const print = await fingerprint(config, typesFile);
  if (options.cache !== false && (await verified()).includes(print)) return { current: true, cached: true };
  const committedPath = join(ROOT, typesFile);
  const scratch = join(dirname(committedPath), `.check-${process.pid}-${Date.now()}.d.ts`);
  try {
    await wranglerTypes(scratch, config);
    // The header names the output path; the scratch file's name is the only expected difference.
    const fresh = (await readFile(scratch, "utf8")).split(relative(ROOT, scratch)).join(typesFile);
    const committed = await readFile(committedPath, "utf8").catch(() => null);
    if (committed === null) return { current: false, problem: `${typesFile} does not exist` };
    if (committed === fresh) {
      await remember(print);
      return { current: true, cached: false };
    }
    const a = committed.split("\n");
    const b = fresh.split("\n");
    // The header's hash changes with any config change: point at the first difference below it.
    const below = a.findIndex((l, i) => i > 1 && l !== b[i]);
    const line = below >= 0 ? below : a.findIndex((l, i) => l !== b[i]);
    return { current: false, problem: `${typesFile} differs from \`wrangler types\` output at line ${line + 1}: committed ${JSON.stringify(a[line] ?? "")}, fresh ${JSON.stringify(b[line] ?? "")}` };
  } finally {
    await rm(scratch, { force: true });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (process.argv.includes("--write")) {
    await wranglerTypes(join(ROOT, TYPES_FILE), "wrangler.jsonc");
    console.log(`[Types] ${JSON.stringify({ event: "written", file: TYPES_FILE })}`);
  } else {
    const result = await typesAreCurrent();
    if (!result.current) {
      console.error(`[Types] ${JSON.stringify({ event: "stale", problem: result.problem, fix: "npm run types (after changing wrangler.jsonc), then commit the file" })}`);
      process.exit(1);
    }
    console.log(`[Types] ${JSON.stringify({ event: "current", file: TYPES_FILE, cached: result.cached })}`);
  }
}
