// One JSON object per line, prefixed by component, so `fly logs -a APP -i MACHINE_ID --no-tail`
// reads as the story of one task. Secret values are scrubbed from every line.
import { AsyncLocalStorage } from "node:async_hooks";

export type Component = "TiffConversion" | "Checksum" | "PdfSplitting" | "Env" | "S3" | "Callback" | "FlyWorker" | "Pool";
type Fields = Record<string, unknown>;

let context: Fields = {};
const secrets: string[] = [];
// Per-task fields for code running inside withLogContext: a pool machine converts several tasks at once.
const scoped = new AsyncLocalStorage<Fields>();

/** Fields added to every later line (batch_id, task_id, machine_id). */
export function setLogContext(fields: Fields): void {
  const inner = scoped.getStore();
  if (inner) Object.assign(inner, fields);
  else context = { ...context, ...fields };
}

/** Runs `fn` with `fields` on every line it logs, without touching other concurrent work's lines. */
export function withLogContext<T>(fields: Fields, fn: () => Promise<T>): Promise<T> {
  return scoped.run({ ...scoped.getStore(), ...fields }, fn);
}

/** Values that must never appear in output; ignored when too short to be meaningful. */
export function registerSecrets(values: (string | undefined)[]): void {
  for (const v of values) if (v && v.length >= 4 && !secrets.includes(v)) secrets.push(v);
  secrets.sort((a, b) => b.length - a.length); // longest first, so a prefix never leaves a tail
}

/** Stops scrubbing values that are no longer in use (a pool machine's finished task's token). */
export function forgetSecrets(values: (string | undefined)[]): void {
  for (const v of values) {
    const i = v === undefined ? -1 : secrets.indexOf(v);
    if (i >= 0) secrets.splice(i, 1);
  }
}

export function redact(text: string): string {
  let out = text;
  for (const s of secrets) out = out.split(s).join("[redacted]");
  return out;
}

// A bigint is written as its exact decimal string: Number() would round a 64-bit file offset.
// Through console (stdout, stderr for errors; the same bytes on a machine): a test that runs the
// worker's code in-process then shows its lines only when it fails (vitest's silent: passed-only).
function emit(out: (line: string) => void, component: Component, level: string, event: string, fields: Fields): void {
  const line = JSON.stringify({ ts: new Date().toISOString(), level, event, ...context, ...scoped.getStore(), ...fields }, (_k, v: unknown) =>
    v instanceof Error ? v.message : typeof v === "bigint" ? String(v) : v,
  );
  out(`[${component}] ${redact(line)}`);
}

export const log = {
  info: (component: Component, event: string, fields: Fields = {}) => emit(console.log, component, "info", event, fields),
  warn: (component: Component, event: string, fields: Fields = {}) => emit(console.log, component, "warn", event, fields),
  error: (component: Component, event: string, fields: Fields = {}) => emit(console.error, component, "error", event, fields),
};

/** Milliseconds since `start` (a performance.now() value), rounded to 0.1 ms. */
export const since = (start: number) => Math.round((performance.now() - start) * 10) / 10;
