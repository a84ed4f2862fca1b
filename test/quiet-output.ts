// Lines the tools print on a passing run that tell a reader nothing, dropped from the vitest
// process's own stdout and stderr (vitest.config.ts imports this). Each pattern says why it is
// noise; everything else — test output, failures, any other warning — passes untouched.
// Where a line could be silenced at its source it is (local/s3.ts loads quiet-warnings.ts for
// node:sqlite's ExperimentalWarning; fly-worker/log.ts writes through console, which vitest keeps
// for failing tests; vitest.config.ts chooses isolation, so vitest does not advise on it); these
// come from inside wrangler, the vitest plugin, miniflare and workerd, which offer no switch for them.

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
  {
    // A test cancels the event streams it reads (events.test.ts: the cap of 20, a stream read to a point).
    pattern: /^exception = workerd\/api\/streams\/(internal\.c\+\+:\d+: disconnected: pump canceled|identity-transform-stream\.c\+\+:\d+: disconnected: reader canceled)$/,
    why: "an SSE stream its reader cancelled",
  },
  {
    // health.test.ts points the deep checks at a closed port (127.0.0.1:9) and an unresolvable
    // host on purpose; workerd logs the failed connection, and the fetch's own rejection (caught by
    // orchestrator/health.ts) once more as "uncaught" from inside its connection code.
    pattern: /^(exception = rust\/worker\/ffi\.rs:\d+: disconnected: Connection refused \(os error 111\)|uncaught exception; (source = Uncaught \(in promise\); stack = Error|exception = workerd\/jsg\/value\.h:\d+: disconnected: jsg\.Error): Network connection lost\.)$/,
    why: "a deep health check of a closed port, on purpose",
  },
  {
    pattern: /^e = rust\/worker\/ffi\.rs:\d+: failed: failed to lookup address information: Name or service not known$/,
    why: "a deep health check of an unresolvable host, on purpose",
  },
  {
    // dead-letter.test.ts fails a message on purpose so that the queue moves it to the DLQ.
    pattern: /^\[mf:warn\] Moving message "[0-9a-f]+" on queue "fanout-batches" to dead letter queue "fanout-batches-dlq" after \d+ failed attempts/,
    why: "the dead-letter round trip dead-letter.test.ts makes",
  },
];

/** workerd's follow-up lines: a native stack after an exception line, and the "internal error" it names by reference. */
const STACK = /^stack: (\/\S+\/workerd@[0-9a-f]+ ?)+(; sentryErrorContext = \w+; wdErrId = (\w+))?$/;
const INTERNAL = /^uncaught exception; (source = Uncaught \(in promise\); stack = Error|exception = workerd\/jsg\/value\.h:\d+: failed: jsg\.Error): internal error; reference = (\w+)$/;

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

/** Keeps what it knows across lines (a dropped exception's stack; the error references of dropped lines). */
export class NoiseFilter {
  #dropStack = false;
  readonly #references = new Set<string>();

  /** `text` without its noise lines; null when nothing but noise (and blank lines) was in it. */
  filter(text: string): string | null {
    const lines = text.split("\n");
    const kept = lines.filter((line) => !this.#noise(line.replace(ANSI, "").replace(/^▲ \[WARNING\] /, "").trim()));
    if (kept.length === lines.length) return text;
    return kept.some((l) => l.trim() !== "") ? kept.join("\n") : null;
  }

  #noise(line: string): boolean {
    if (line === "") return false;
    const stack = STACK.exec(line);
    if (stack) {
      const drop = this.#dropStack;
      if (drop && stack[3]) this.#references.add(stack[3]);
      this.#dropStack = false;
      return drop;
    }
    const internal = INTERNAL.exec(line);
    const noise = NOISE.some((n) => n.pattern.test(line)) || (internal !== null && this.#references.has(internal[2]));
    this.#dropStack = noise;
    return noise;
  }
}

/** One filter's view of one chunk (tests). */
export function withoutNoise(text: string, filter = new NoiseFilter()): string | null {
  return filter.filter(text);
}

/** One filter for both streams: workerd may write an exception to one and its stack to the other. */
const shared = new NoiseFilter();

function quiet(stream: NodeJS.WriteStream, filter: NoiseFilter): void {
  const write = stream.write.bind(stream) as (chunk: unknown, ...rest: unknown[]) => boolean;
  stream.write = ((chunk: unknown, ...rest: unknown[]) => {
    if (typeof chunk !== "string" && !(chunk instanceof Uint8Array)) return write(chunk, ...rest);
    const text = filter.filter(typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8"));
    if (text === null) {
      const done = rest.find((r) => typeof r === "function") as (() => void) | undefined;
      done?.();
      return true;
    }
    return write(text, ...rest);
  }) as NodeJS.WriteStream["write"];
}

quiet(process.stdout, shared);
quiet(process.stderr, shared);
