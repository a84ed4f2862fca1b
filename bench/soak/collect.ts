// Everything the soak's checks read once a batch has ended: the orchestrator's status and task
// rows, each task's attempts, what the Fly emulator saw and ran, what the S3 tap saw written, what
// the bucket holds, and what the callback proxy did.
import { z } from "zod";
import type { BatchStatus, OrchestratorClient, TaskItem } from "../../local/api.ts";
import type { RecordedRequest } from "../../local/fly-emulator/api.ts";
import type { MachineEntry } from "../../local/machine-ledger.ts";
import type { GeneratedSample } from "../../local/samples.ts";
import type { Stack } from "../../local/stack.ts";
import { listObjects, type s3Client, type StoredObject } from "../../local/submit.ts";
import type { CallbackFaults, DuplicateRecord, HeldCallback } from "./callback-faults.ts";
import type { ObjectWrite, S3Tap } from "./s3-tap.ts";

const AttemptDetail = z.looseObject({
  attempt: z.number(),
  machine_name: z.string().nullable(),
  machine_id: z.string().nullable(),
  outcome: z.string(),
  error: z.string().nullable(),
  note: z.string().nullable(),
  started_at: z.string().nullable(),
  ended_at: z.string().nullable(),
});
const TaskDetail = z.looseObject({
  task_id: z.string(),
  status: z.string().optional(),
  attempt: z.number(),
  output_key: z.string(),
  outputs: z.array(z.looseObject({ page: z.number(), r2_key: z.string() })),
  attempts: z.array(AttemptDetail),
});
export type TaskDetail = z.infer<typeof TaskDetail>;

export interface SoakEvidence {
  final: BatchStatus;
  /** GET /status after everything settled (late deliveries, machine clean-up). */
  status: BatchStatus;
  tasks: TaskItem[];
  details: TaskDetail[];
  flyRequests: RecordedRequest[];
  machinesCreated: number;
  machines: MachineEntry[];
  alive: { live: number; pids: number[] };
  objects: StoredObject[];
  writes: ObjectWrite[];
  held: HeldCallback[];
  duplicates: DuplicateRecord[];
  callbacksReceived: number;
  heldSettled: boolean;
  inputs: string[];
  manifestKey: string;
  prefix: string;
  samples: GeneratedSample[];
  orchestratorLines: string[];
}

export async function collect(o: {
  stack: Stack;
  api: OrchestratorClient;
  s3: ReturnType<typeof s3Client>;
  batchId: string;
  prefix: string;
  manifestKey: string;
  tap: S3Tap;
  faults: CallbackFaults;
  final: BatchStatus;
  samples: GeneratedSample[];
}): Promise<SoakEvidence> {
  const { stack, api, batchId } = o;
  console.log(`[Soak] ${batchId} ended ${o.final.status}; waiting for held callbacks (${o.faults.pending()}) and machines (${stack.emulator.core.liveMachineCount()} live) to settle`);
  const heldSettled = await o.faults.settled(6 * 60_000);
  const alive = await waitNoMachines(stack, 120_000);
  const status = await api.status(batchId);
  const tasks = await api.allTasks(batchId);
  const details = await mapLimit(tasks, 8, async (t) => {
    const res = await fetch(`${stack.orchestratorUrl}/status/${encodeURIComponent(batchId)}/tasks/${encodeURIComponent(t.task_id)}`);
    const body: unknown = await res.json();
    const parsed = TaskDetail.safeParse(body);
    if (!parsed.success) throw new Error(`GET /status/${batchId}/tasks/${t.task_id}: HTTP ${res.status}, unexpected body: ${JSON.stringify(body).slice(0, 300)}`);
    return parsed.data;
  });
  const objects = await listObjects(o.s3, stack.bucket, "");
  console.log(`[Soak] ${batchId}: read ${tasks.length} task rows, ${details.length} task histories, ${objects.length} objects, ${o.tap.writes().length} writes`);
  return {
    final: o.final,
    status,
    tasks,
    details,
    flyRequests: [...stack.emulator.core.requests],
    machinesCreated: stack.emulator.core.machines().length,
    machines: stack.machines.list(),
    alive,
    objects,
    writes: o.tap.writes(),
    held: o.faults.held(),
    duplicates: o.faults.duplicates(),
    callbacksReceived: o.faults.received(),
    heldSettled,
    inputs: o.samples.map((s) => `${o.prefix}${s.relative}`),
    manifestKey: o.manifestKey,
    prefix: o.prefix,
    samples: o.samples,
    orchestratorLines: [...stack.orchestratorLines],
  };
}

async function waitNoMachines(stack: Stack, timeoutMs: number): Promise<{ live: number; pids: number[] }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const live = stack.emulator.core.liveMachineCount();
    const pids = stack.machines.pids();
    if ((live === 0 && pids.length === 0) || Date.now() > deadline) return { live, pids };
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]);
      }
    }),
  );
  return out;
}
