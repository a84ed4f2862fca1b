// `npm start` echoes a batch's milestones and the orchestrator's errors, not every machine,
// callback and request line (local/echo.ts); the log file keeps them all. The demo's summary
// names the batch's warnings and failures (summaryNotes).
import { describe, expect, it } from "vitest";
import { BatchStatus } from "../../local/api.ts";
import { echoLine } from "../../local/echo.ts";
import { summaryNotes } from "../../local/progress.ts";

// What wrangler dev printed for a 3-task batch with one corrupt TIFF (shapes as in orchestrator.log).
const RUN = [
  "[wrangler:info] Ready on http://127.0.0.1:8787",
  "[wrangler:info] GET /health 200 OK (12ms)",
  '[HTTP] {"event":"batch_enqueued","batch_id":"b1"}',
  '[Queue] {"event":"batch_recorded","batch_id":"b1"}',
  '[DO] {"event":"batch_started","batch_id":"b1","phase":"TIFF_CONVERSION"}',
  '[DO] {"event":"discovered","batch_id":"b1","files":3}',
  '[DO] {"event":"phase_planned","batch_id":"b1","phase":"TIFF_CONVERSION","tasks":3}',
  ...[0, 1, 2].flatMap((i) => [
    `[Fly] {"event":"create","batch_id":"b1","worker_id":"tiff-00000${i}-a1","status":200}`,
    `[DO] {"event":"machine_created","batch_id":"b1","worker_id":"tiff-00000${i}-a1","task_id":"tiff-00000${i}","attempt":1,"machine_id":"ceb00fd0f35c1${i}","region":"iad"}`,
    "[wrangler:info] GET /status/b1 200 OK (4ms)",
  ]),
  '[Callback] {"event":"task_done","batch_id":"b1","task_id":"tiff-000000","phase":"TIFF_CONVERSION","attempt":1,"outputs":1,"late":false}',
  '[Callback] {"event":"task_done","batch_id":"b1","task_id":"tiff-000001","phase":"TIFF_CONVERSION","attempt":1,"outputs":1,"late":false}',
  '[DO] {"event":"task_failed","batch_id":"b1","task_id":"tiff-000002","phase":"TIFF_CONVERSION","attempt":1,"machine_id":"ceb00fd0f35c12","error":"not a TIFF: the file starts with \\"this is\\""}',
  "[wrangler:info] POST /callback/b1/tiff-000002 200 OK (9ms)",
  '[DO] {"event":"phase_finished","batch_id":"b1","phase":"TIFF_CONVERSION","done":2,"failed":1}',
  '[DO] {"event":"batch_done","batch_id":"b1","files":5}',
  '[DO] {"event":"step_failed","batch_id":"b2","stage":"discover","failures":1,"error":"manifest batches/b2/manifest.json: not found"}',
  "✘ [ERROR] Uncaught (in promise) Error: boom",
];

describe("what npm start echoes", () => {
  it("a batch's milestones, a task failed for good, and errors, one short line each; not machines, callbacks or requests", () => {
    expect(RUN.map(echoLine).filter((l) => l !== null)).toEqual([
      "[DO] b1 batch_started phase=TIFF_CONVERSION",
      '[DO] b1 task_failed task_id=tiff-000002 phase=TIFF_CONVERSION attempt=1 machine_id=ceb00fd0f35c12 error="not a TIFF: the file starts with \\"this is\\""',
      "[DO] b1 phase_finished phase=TIFF_CONVERSION done=2 failed=1",
      "[DO] b1 batch_done files=5",
      '[DO] b2 step_failed stage=discover failures=1 error="manifest batches/b2/manifest.json: not found"',
      "✘ [ERROR] Uncaught (in promise) Error: boom",
    ]);
  });
});

describe("the demo's summary", () => {
  it("lists the batch's warnings, then its recent failures named by file", () => {
    const s = BatchStatus.parse({
      batch_id: "demo-1",
      status: "DONE",
      progress: { tasks_total: 2, tasks_completed: 1, tasks_failed: 1 },
      started_at: null,
      updated_at: null,
      completed_at: null,
      error: null,
      warnings: ["tiff-000000: page 2 skipped: uses JPEG 2000 compression (Compression 34712), which the converter cannot decode"],
      recent_failures: [{ task_id: "tiff-000001", input_key: "batches/demo-1/box-01/scan-0002-rgb8.tif", attempt: 1, machine_id: "e2865a1b2c3d4f", error: "not a TIFF", logs: null }],
    });
    expect(summaryNotes(s)).toEqual([
      "warning: tiff-000000: page 2 skipped: uses JPEG 2000 compression (Compression 34712), which the converter cannot decode",
      "batches/demo-1/box-01/scan-0002-rgb8.tif (tiff-000001) attempt 1 on e2865a1b2c3d4f: not a TIFF",
    ]);
  });
});
