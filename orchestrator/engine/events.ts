// Live progress: Server-Sent Events from the batch's Durable Object. Discrete events (task_failed,
// phase, redrive, done/failed/error) are stored with ids, so Last-Event-ID resumes without gaps;
// progress is the status body's counts, coalesced to at most 2 a second; comments keep proxies open.
// Every event names the run of the batch it belongs to (`run`: 0 the first, N redrive N).
import type { StatusBody } from "./views.ts";

/** Open streams one batch serves at most; past it, 429. */
export const MAX_STREAMS = 20;
const PROGRESS_EVERY_MS = 500;
const KEEPALIVE_MS = 15_000;
const TERMINAL = new Set(["done", "failed", "error"]);
const TERMINAL_STATUS: Record<string, string> = { DONE: "done", FAILED: "failed", ERROR: "error" };

const encoder = new TextEncoder();

export function sseFrame(type: string, data: unknown, id?: number): string {
  return `${id !== undefined ? `id: ${id}\n` : ""}event: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
}

export class LiveStreams {
  private readonly writers = new Set<WritableStreamDefaultWriter<Uint8Array>>();
  private readonly snapshot: () => StatusBody | null;
  private lastProgress = "";
  private lastId = 0;
  private flushTimer: ReturnType<typeof setTimeout> | undefined;
  private keepalive: ReturnType<typeof setInterval> | undefined;
  private lastFlushAt = 0;

  constructor(snapshot: () => StatusBody | null) {
    this.snapshot = snapshot;
  }

  get size(): number {
    return this.writers.size;
  }

  /** A new stream: stored events after `after`, the current progress, then live events. */
  open(after: number, eventsAfter: (id: number) => { id: number; type: string; data: string }[], lastId: number): Response {
    if (this.writers.size >= MAX_STREAMS) {
      return Response.json({ error: `too many open event streams for this batch (at most ${MAX_STREAMS}); poll GET /status instead` }, { status: 429, headers: { "retry-after": "10" } });
    }
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    const writer = writable.getWriter();
    this.lastId = Math.max(this.lastId, lastId);
    let replay = "";
    let ended = false;
    for (let cursor = after; ; ) {
      const page = eventsAfter(cursor);
      for (const e of page) {
        replay += `id: ${e.id}\nevent: ${e.type}\ndata: ${e.data}\n\n`;
        if (TERMINAL.has(e.type)) ended = true;
        else if (e.type === "redrive") ended = false;
      }
      if (page.length < 1000) break;
      cursor = page[page.length - 1].id;
    }
    let text = "retry: 2000\n\n";
    const status = this.snapshot();
    const terminal = status ? TERMINAL_STATUS[status.status] : undefined;
    if (status && terminal) {
      // A finished batch: its counts, what happened since the resume point, and how it ended
      // (said again when the final event is older than the resume point); then the stream ends.
      text += sseFrame("progress", progressOf(status), this.lastId) + replay;
      if (!ended) text += sseFrame(terminal, { status: status.status, error: status.error, run: status.run }, this.lastId);
      void writer.write(encoder.encode(text)).then(() => writer.close()).catch(() => undefined);
      return this.response(readable);
    }
    // The current counts (and run) come first, without an id: a follower knows which run is live
    // before the replay, whose done/failed/error of an earlier run it must not end on.
    if (status) text += sseFrame("progress", progressOf(status));
    text += replay;
    void writer.write(encoder.encode(text)).catch(() => this.drop(writer));
    this.writers.add(writer);
    this.keepalive ??= setInterval(() => this.send(": keep-alive\n\n"), KEEPALIVE_MS);
    return this.response(readable);
  }

  private response(body: ReadableStream<Uint8Array>): Response {
    return new Response(body, { headers: { "content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no" } });
  }

  /** A stored event, to every open stream; a terminal one ends them. */
  publish(id: number, type: string, data: Record<string, unknown>): void {
    this.lastId = Math.max(this.lastId, id);
    if (this.writers.size === 0) return;
    if (TERMINAL.has(type)) this.flush();
    this.send(sseFrame(type, data, id));
    if (TERMINAL.has(type)) {
      for (const w of [...this.writers]) {
        void w.close().catch(() => undefined);
        this.drop(w);
      }
    }
  }

  /** Counts may have moved: a progress event within PROGRESS_EVERY_MS, once. */
  progressChanged(): void {
    if (this.writers.size === 0 || this.flushTimer) return;
    const wait = Math.max(0, this.lastFlushAt + PROGRESS_EVERY_MS - Date.now());
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      this.flush();
    }, wait);
  }

  private flush(): void {
    this.lastFlushAt = Date.now();
    const status = this.snapshot();
    if (!status) return;
    const progress = JSON.stringify(progressOf(status));
    if (progress === this.lastProgress) return;
    this.lastProgress = progress;
    this.send(`id: ${this.lastId}\nevent: progress\ndata: ${progress}\n\n`);
  }

  private send(text: string): void {
    const bytes = encoder.encode(text);
    for (const w of this.writers) void w.write(bytes).catch(() => this.drop(w));
  }

  private drop(w: WritableStreamDefaultWriter<Uint8Array>): void {
    this.writers.delete(w);
    if (this.writers.size === 0 && this.keepalive) {
      clearInterval(this.keepalive);
      this.keepalive = undefined;
    }
  }
}

/** The counts only: a phase's machine-seconds move every moment and would make every event "changed". */
function progressOf(s: StatusBody) {
  return { status: s.status, phase: s.phase, stage: s.stage, run: s.run, ...s.progress, phases: s.phases.map(({ machines: _machines, ...counts }) => counts) };
}
