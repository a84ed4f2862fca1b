// The soak's proxy between machines and the orchestrator. Per task attempt (the attempt its
// credential names) it draws one fate from a seeded PRNG and keeps it for every retry of that
// attempt: pass, duplicate (delivered twice), late (held, machine left waiting, delivered once the
// orchestrator has given up on the attempt — its deadline passed), or stale (held until the next
// attempt of the task has a machine, then delivered — as sent (success) or as an error body under
// the same genuine credential). Everything else (leases, heartbeats, output reservations) passes.
import type { ServerResponse } from "node:http";
import { z } from "zod";
import { seededRandom } from "../../local/fly-emulator/faults.ts";
import { forward, listenLoopback, readForwarded, relay, type Forwarded } from "../../local/forward.ts";

export type Fate = "pass" | "duplicate" | "late" | "stale_success" | "stale_error";

export interface FaultRates {
  duplicate: number;
  late: number;
  stale: number;
}

export interface HeldCallback {
  taskId: string;
  attempt: number;
  fate: Fate;
  heldAt: number;
  deliveredAt: number | null;
  /** What the orchestrator answered the delayed delivery: status and its `outcome`/`reason`. */
  status: number | null;
  outcome: string | null;
  reason: string | null;
  /** The task's current attempt when it was delivered (stale: a later one). */
  currentAttemptAtDelivery: number | null;
  /** Delivered because it waited too long for its condition, not because the condition held. */
  forced: boolean;
  /** Delivered because a later attempt of the task called (its callback or output reservation). */
  releasedByNextAttempt: boolean;
}

export interface DuplicateRecord {
  taskId: string;
  attempt: number;
  firstStatus: number;
  duplicateStatus: number | null;
  duplicateOutcome: string | null;
}

export interface CallbackFaults {
  url: string;
  held(): HeldCallback[];
  duplicates(): DuplicateRecord[];
  /** Callback requests from machines (retries included). */
  received(): number;
  fateOf(taskId: string, attempt: number): Fate | undefined;
  /** Held callbacks not yet delivered. */
  pending(): number;
  /** Resolves when every held callback and duplicate has been delivered. */
  settled(timeoutMs: number): Promise<boolean>;
  stop(): Promise<void>;
}

export interface CallbackFaultOptions {
  target: string;
  batchId: () => string | null;
  rates: FaultRates;
  seed: number;
  /** Late or stale only for attempts below this, so holding one never spends a task's last attempt. */
  maxAttempts: number;
  /** A held callback whose condition never comes is delivered after this long anyway (and marked forced). */
  maxHoldMs: number;
  pollMs?: number;
}

const Attempt = z.looseObject({ attempt: z.number(), outcome: z.string(), machine_id: z.string().nullable() });
const TaskDetail = z.looseObject({ attempt: z.number(), status: z.string().optional(), attempts: z.array(Attempt) });

const TOKEN_ATTEMPT = /^Bearer v2\.([0-9]+)\./;

/** A callback forwarded or delivered late gives up after this (the orchestrator may be restarting). */
const FORWARD_TIMEOUT_MS = 30_000;

interface Entry {
  fate: Fate;
  body: Buffer;
  authorization: string;
  path: string;
  waiting: ServerResponse[];
  record: HeldCallback | null;
  /** Ends the hold at once: a later attempt of the task is calling (so this one was given up). */
  release: () => void;
  released: Promise<void>;
  delivered: Promise<void> | null;
}

export async function startCallbackFaults(options: CallbackFaultOptions): Promise<CallbackFaults> {
  const target = options.target.replace(/\/+$/, "");
  const random = seededRandom(options.seed);
  const entries = new Map<string, Entry>();
  const held: HeldCallback[] = [];
  const duplicates: DuplicateRecord[] = [];
  const inFlight = new Set<Promise<unknown>>();
  let received = 0;
  let staleCount = 0;
  let stopped = false;

  const track = <T>(p: Promise<T>): Promise<T> => {
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p)).catch(() => undefined);
    return p;
  };

  const draw = (attempt: number): Fate => {
    const r = random();
    const { late, stale, duplicate } = options.rates;
    const canHold = attempt < options.maxAttempts;
    if (r < late) return canHold ? "late" : "pass";
    if (r < late + stale) {
      if (!canHold) return "pass";
      return staleCount++ % 2 === 0 ? "stale_error" : "stale_success";
    }
    if (r < late + stale + duplicate) return "duplicate";
    return "pass";
  };

  const server = await listenLoopback(
    async (req, res) => {
      const call = await readForwarded(req);
      const { path, body } = call;
      const m = /^\/(callback|outputs)\/[^/]+\/([^/?]+)/.exec(path);
      const attemptMatch = TOKEN_ATTEMPT.exec(req.headers.authorization ?? "");
      if (call.method !== "POST" || !m || !attemptMatch) return pass(res, call);
      const taskId = decodeURIComponent(m[2]);
      const attempt = Number(attemptMatch[1]);
      // A later attempt of the task is at work: a held callback of an earlier one goes in first, so
      // a stale one always meets a started next attempt (polling alone can miss a quick one).
      for (const earlier of entries.values()) {
        if (earlier.record?.taskId === taskId && earlier.record.attempt < attempt && earlier.record.deliveredAt === null) {
          earlier.release();
          await earlier.delivered;
        }
      }
      if (m[1] === "outputs") return pass(res, call);
      received++;
      const key = `${taskId}#${attempt}`;
      let entry = entries.get(key);
      if (!entry) {
        let release = () => {};
        const released = new Promise<void>((resolve) => (release = resolve));
        entry = { fate: draw(attempt), body, authorization: req.headers.authorization!, path, waiting: [], record: null, release, released, delivered: null };
        entries.set(key, entry);
      }
      if (entry.fate === "pass") return pass(res, call);
      if (entry.fate === "duplicate") {
        const first = await pass(res, call);
        if (first === null || first >= 300 || duplicates.some((d) => d.taskId === taskId && d.attempt === attempt)) return;
        const record: DuplicateRecord = { taskId, attempt, firstStatus: first, duplicateStatus: null, duplicateOutcome: null };
        duplicates.push(record);
        await track(
          (async () => {
            await sleep(200);
            const again = await deliver(call);
            record.duplicateStatus = again.status;
            record.duplicateOutcome = again.outcome;
          })(),
        );
        return;
      }
      // Late or stale: the machine is left waiting (it retries on its own timeout; those wait too).
      entry.waiting.push(res);
      if (!entry.record) {
        entry.record = {
          taskId,
          attempt,
          fate: entry.fate,
          heldAt: Date.now(),
          deliveredAt: null,
          status: null,
          outcome: null,
          reason: null,
          currentAttemptAtDelivery: null,
          forced: false,
          releasedByNextAttempt: false,
        };
        held.push(entry.record);
        entry.delivered = track(hold(entry, taskId, attempt));
      }
    },
    { keepAliveTimeoutMs: 65_000 },
  );

  /** Forwards as is and answers the machine; returns the status (null when unreachable). */
  function pass(res: ServerResponse, call: Forwarded): Promise<number | null> {
    return relay(res, target, call, FORWARD_TIMEOUT_MS);
  }

  /** Delivers until the orchestrator answers something other than 5xx or nothing (it may be restarting). */
  async function deliver(call: Forwarded) {
    for (let tries = 0; ; tries++) {
      try {
        const answer = await forward(target, { ...call, method: "POST" }, FORWARD_TIMEOUT_MS);
        const text = await answer.text();
        if (answer.status < 500 || tries >= 120) {
          const json = safeJson(text);
          return { status: answer.status, text, outcome: str(json?.outcome), reason: str(json?.reason) };
        }
      } catch {
        if (tries >= 120) return { status: 0, text: "", outcome: null, reason: null };
      }
      await sleep(1000);
    }
  }

  async function taskDetail(taskId: string) {
    const batchId = options.batchId();
    if (!batchId) return null;
    try {
      const res = await fetch(`${target}/status/${encodeURIComponent(batchId)}/tasks/${encodeURIComponent(taskId)}`, { signal: AbortSignal.timeout(10_000) });
      if (!res.ok) return null;
      const parsed = TaskDetail.safeParse(await res.json());
      return parsed.success ? parsed.data : null;
    } catch {
      return null;
    }
  }

  async function hold(entry: Entry, taskId: string, attempt: number): Promise<void> {
    const record = entry.record!;
    let current: number | null;
    let released = false;
    void entry.released.then(() => (released = true));
    for (;;) {
      if (stopped) return;
      await Promise.race([sleep(options.pollMs ?? 1000), entry.released]);
      if (released) {
        record.releasedByNextAttempt = true;
        current = null;
        break;
      }
      const t = await taskDetail(taskId);
      if (!t) continue;
      current = t.attempt;
      const mine = t.attempts.find((a) => a.attempt === attempt);
      const settled = t.status === "done" || t.status === "failed";
      const givenUp = mine !== undefined && mine.outcome !== "open";
      const nextHasMachine = t.attempts.some((a) => a.attempt > attempt && a.machine_id !== null);
      const ready = record.fate === "late" ? givenUp || settled : (givenUp && nextHasMachine) || settled;
      if (ready) break;
      if (Date.now() - record.heldAt > options.maxHoldMs) {
        record.forced = true;
        break;
      }
    }
    const headers = { "content-type": "application/json", authorization: entry.authorization };
    let body = entry.body;
    if (record.fate === "stale_error") {
      const original = safeJson(entry.body.toString("utf8"));
      body = Buffer.from(
        JSON.stringify({
          task_id: original?.task_id ?? taskId,
          batch_id: original?.batch_id ?? options.batchId(),
          status: "error",
          error: "soak: stale error from a superseded attempt",
        }),
      );
    }
    const answer = await deliver({ method: "POST", path: entry.path, headers, body });
    record.deliveredAt = Date.now();
    record.status = answer.status;
    record.outcome = answer.outcome;
    record.reason = answer.reason;
    record.currentAttemptAtDelivery = current;
    // The machine is usually gone by now; if it still waits, it gets the orchestrator's answer.
    for (const res of entry.waiting) {
      if (res.writableEnded || res.destroyed) continue;
      res.writeHead(answer.status || 502, { "content-type": "application/json" });
      res.end(answer.text || "{}");
    }
  }

  return {
    url: server.url,
    held: () => [...held],
    duplicates: () => [...duplicates],
    received: () => received,
    fateOf: (taskId, attempt) => entries.get(`${taskId}#${attempt}`)?.fate,
    pending: () => held.filter((h) => h.deliveredAt === null).length,
    settled: async (timeoutMs) => {
      const deadline = Date.now() + timeoutMs;
      while (inFlight.size > 0) {
        if (Date.now() > deadline) return false;
        await sleep(250);
      }
      return true;
    },
    stop: async () => {
      stopped = true;
      await server.close();
    },
  };
}

function safeJson(text: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === "object" && v !== null ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

const str = (v: unknown) => (typeof v === "string" ? v : null);

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
