// A success counts only when every output it names is really there and really what its URL let
// the machine store: a key reserved for the task, of the reported size, whose first bytes are the
// signature of the content type signed into its PUT (shared/signatures.ts: a JPEG's frame header
// with the reported width and height, and so on). One ranged read per output — never a decode,
// never the whole object — at most six at a time (the request's Outbound, orchestrator/outbound.ts).
import type { FileEntry } from "../../shared/contracts.ts";
import { fileName } from "../../shared/keys.ts";
import { SIGNATURE_CHUNK, signatureProblem } from "../../shared/signatures.ts";
import type { Phase } from "../phases/types.ts";
import type { ObjectStore } from "../storage.ts";
import type { TaskRow } from "../store/index.ts";
import type { Engine } from "./context.ts";
import { outputContentTypeOf } from "./outputs.ts";

export type Verified = { ok: true; files: FileEntry[] } | { ok: false; error: string };

/**
 * Checks each output a success names and returns the file entries as the orchestrator knows them:
 * named by the reserved key (`file_name` its last segment), with the size storage holds and the
 * content type its URL signed — whatever the machine said.
 */
export async function verifyOutputs(e: Engine, phase: Phase, task: TaskRow, outputs: FileEntry[]): Promise<Verified> {
  const reserved = new Map(e.store.outputsOf(task.task_id).map((o) => [o.key, o.page]));
  const seen = new Set<string>();
  for (const [i, o] of outputs.entries()) {
    if (seen.has(o.r2_key)) return { ok: false, error: `output ${o.r2_key} is listed twice` };
    seen.add(o.r2_key);
    if (reserved.has(o.r2_key)) continue;
    // Images on the old contract (opt-in) derive page keys themselves: reserve them now if free.
    const legacy = e.config.MACHINE_STORAGE === "legacy-keys" && e.store.reserveOutput(o.r2_key, task.task_id, i + 1);
    if (!legacy) return { ok: false, error: `output ${o.r2_key} was not reserved for ${task.task_id}` };
    reserved.set(o.r2_key, i + 1);
  }
  const store = e.objects();
  const checked = await Promise.all(outputs.map((o) => checkOne(store, o, outputContentTypeOf(phase, reserved.get(o.r2_key)!))));
  const problem = checked.find((c) => typeof c === "string");
  if (typeof problem === "string") return { ok: false, error: problem };
  return { ok: true, files: checked as FileEntry[] };
}

/** One output: why it does not count, or its entry as the orchestrator names it. */
async function checkOne(store: ObjectStore, o: FileEntry, contentType: string): Promise<FileEntry | string> {
  const key = o.r2_key;
  if (o.file_size === 0) return `output ${key} is reported as 0 bytes: an empty object is no output`;
  const first = await store.getStream(key, 0, Math.min(o.file_size, SIGNATURE_CHUNK));
  if (!first) return `output ${key} does not exist`;
  if (first.size !== o.file_size) {
    await first.body.cancel();
    return `output ${key} is ${first.size} bytes, not the ${o.file_size} reported`;
  }
  const head = await bytesOf(first.body);
  const kind = contentType.split(";")[0].trim().toLowerCase();
  const read = async (offset: number, length: number) => {
    if (offset === 0 && length <= head.length) return head.subarray(0, length);
    const more = await store.getStream(key, offset, length);
    if (!more) throw new Error(`output ${key} disappeared while it was read`);
    return bytesOf(more.body);
  };
  const evidence = await signatureProblem(kind, head, read, first.size, { width: numberOr(o.width), height: numberOr(o.height) });
  if (!evidence.ok) return `output ${key} (${kind}) ${evidence.problem}`;
  const entry: FileEntry = { ...o, file_name: fileName(key), file_size: first.size, content_type: contentType };
  return evidence.width !== undefined ? { ...entry, width: evidence.width, height: evidence.height } : entry;
}

const numberOr = (v: unknown): number | undefined => (typeof v === "number" ? v : undefined);

async function bytesOf(body: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let n = 0;
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    n += value.byteLength;
  }
  const out = new Uint8Array(n);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}
