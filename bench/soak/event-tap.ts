// The batch's live event stream followed as an operator's client follows it (GET /status/:id/events,
// reconnecting with Last-Event-ID across the orchestrator's SIGKILL): what it sent, how fast, how big.
import type { OrchestratorClient } from "../../local/api.ts";

export interface StreamEvent {
  type: string;
  id: number | null;
  at: number;
  /** Bytes on the wire: the id, event and data lines of the frame. */
  bytes: number;
  data: Record<string, unknown>;
}

export interface EventRecord {
  events: StreamEvent[];
  /** Streams opened after the first (a dropped stream resumed with Last-Event-ID). */
  reconnects: number;
  /** Why each stream ended before the batch did. */
  drops: string[];
  /** Discrete event ids out of sequence: a gap (missed) or a repeat (replayed twice). */
  idProblems: string[];
}

export interface EventTap {
  /** Waits up to `graceMs` for the batch's final event, stops following, and returns what was seen. */
  stop(graceMs: number): Promise<EventRecord>;
}

const FINAL = new Set(["done", "failed", "error"]);

export function startEventTap(api: OrchestratorClient, batchId: string): EventTap {
  const record: EventRecord = { events: [], reconnects: 0, drops: [], idProblems: [] };
  const abort = new AbortController();
  let lastEventId: string | undefined;
  let lastDiscrete = 0;
  const follow = async () => {
    while (!abort.signal.aborted) {
      // A stream that delivered events before it dropped is resumed: that is a reconnect.
      if (record.events.length > 0 && record.drops.length > 0) record.reconnects++;
      try {
        for await (const e of api.events(batchId, { lastEventId, signal: abort.signal })) {
          if (e.id) lastEventId = e.id;
          const id = e.id ? Number(e.id) : null;
          const type = e.event ?? "message";
          let data: Record<string, unknown> = {};
          try {
            data = JSON.parse(e.data) as Record<string, unknown>;
          } catch {
            // counted, not parsed
          }
          const bytes = Buffer.byteLength(`${e.id ? `id: ${e.id}\n` : ""}event: ${type}\ndata: ${e.data}\n\n`);
          record.events.push({ type, id, at: Date.now(), bytes, data });
          // progress repeats the last discrete id; every other event takes the next one.
          if (type !== "progress" && id !== null) {
            if (id !== lastDiscrete + 1) record.idProblems.push(id <= lastDiscrete ? `id ${id} again (after ${lastDiscrete})` : `ids ${lastDiscrete + 1}–${id - 1} never received`);
            lastDiscrete = Math.max(lastDiscrete, id);
          }
          if (FINAL.has(type)) return;
        }
        if (record.events.length > 0) record.drops.push("the stream ended before a final event");
      } catch (error) {
        if (abort.signal.aborted) return;
        // Before the queue delivered the batch (404) and while the orchestrator restarts: try again.
        if (record.events.length > 0) record.drops.push(error instanceof Error ? error.message : String(error));
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  };
  const done = follow();
  return {
    async stop(graceMs) {
      await Promise.race([done, new Promise((r) => setTimeout(r, graceMs))]);
      abort.abort();
      await done;
      return record;
    },
  };
}
