// Lines the tools print on a passing run that tell a reader nothing, dropped from the vitest
// process's own stdout and stderr (vitest.config.ts imports this). Each pattern says why it is
// noise; everything else — test output, failures, any other warning — passes untouched.
// Where a line could be silenced at its source it is (local/s3.ts loads quiet-warnings.ts for
// node:sqlite's ExperimentalWarning); these come from inside wrangler, the vitest plugin and
// workerd, which offer no switch for them.

const NOISE: { pattern: RegExp; why: string }[] = [
  {
    // wrangler checks secrets.required against .dev.vars/.env/process.env only; the workers
    // project gives them as miniflare bindings (vitest.config.ts), which that check does not see.
    pattern: /Missing required secrets: [A-Z0-9_, ]+\. Add them to \.dev\.vars, \.env, or set as environment variables\./,
    why: "the workers project's secrets are miniflare bindings",
  },
  { pattern: /^Using secrets defined in process\.env$/, why: "same check: no secret comes from process.env in tests" },
  {
    // vitest probes node:inspector (isInspectorOpen, in a try/catch) in every test worker; the
    // orchestrator runs without nodejs_compat on purpose (wrangler.jsonc), so workerd has none.
    pattern: /^\[vitest-plugin\] "node:inspector", required from ".*\/vitest\/dist\/chunks\/inspector\.[^"]+\.js", is not available/,
    why: "vitest's inspector probe, caught by vitest",
  },
  { pattern: /^Fallback service failed to fetch module; payload = ; spec = .*specifier=node%3Ainspector&/, why: "workerd's line for the same probe" },
  {
    // workerd's internal notes when a test runs a Durable Object's alarm by hand
    // (runDurableObjectAlarm) while one is scheduled: expected in these tests, never an error.
    pattern: /^NOSENTRY SQLite alarm (overdue, running despite AlarmManager mismatch|handler canceled with requestScheduledAlarm)/,
    why: "workerd's alarm bookkeeping under runDurableObjectAlarm",
  },
];

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

/** `text` without its noise lines; null when nothing but noise (and blank lines) was in it. */
export function withoutNoise(text: string): string | null {
  const lines = text.split("\n");
  const kept = lines.filter((line) => !NOISE.some((n) => n.pattern.test(line.replace(ANSI, "").replace(/^▲ \[WARNING\] /, "").trim())));
  if (kept.length === lines.length) return text;
  return kept.some((l) => l.trim() !== "") ? kept.join("\n") : null;
}

function filter(stream: NodeJS.WriteStream): void {
  const write = stream.write.bind(stream) as (chunk: unknown, ...rest: unknown[]) => boolean;
  stream.write = ((chunk: unknown, ...rest: unknown[]) => {
    if (typeof chunk !== "string" && !(chunk instanceof Uint8Array)) return write(chunk, ...rest);
    const text = withoutNoise(typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8"));
    if (text === null) {
      const done = rest.find((r) => typeof r === "function") as (() => void) | undefined;
      done?.();
      return true;
    }
    return write(text, ...rest);
  }) as NodeJS.WriteStream["write"];
}

filter(process.stdout);
filter(process.stderr);
