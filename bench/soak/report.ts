// The soak's verdict: every figure the issue asks for, each check that failed named with its
// evidence, and bench/SOAK.md.
import { expectedJpegKeys } from "../../local/samples.ts";
import type { RecordedRequest } from "../../local/fly-emulator/api.ts";
import type { EmulatorFault } from "../../local/fly-emulator/errors.ts";
import type { SoakConfig } from "./config.ts";
import type { SoakEvidence, TaskDetail } from "./collect.ts";
import type { EventRecord } from "./event-tap.ts";

export interface ModeResult {
  mode: string;
  batchId: string;
  figures: Record<string, number | string>;
  faultsInjected: Record<string, number>;
  failureCauses: Record<string, number>;
  problems: string[];
}

interface Events {
  evictedAt: number | null;
  killedAt: number | null;
  restartedAt: number | null;
  wallMs: number;
  config: SoakConfig;
  /** The live event stream, followed from submit to the final event. */
  stream: EventRecord;
}

const isCreate = (r: RecordedRequest) => r.method === "POST" && /\/machines$/.test(r.path.split("?")[0]);
const faultCount = (rs: RecordedRequest[], f: EmulatorFault) => rs.filter((r) => r.fault === f).length;

export function check(mode: string, batchId: string, ev: SoakEvidence, events: Events): ModeResult {
  const problems: string[] = [];
  const cfg = events.config;
  const expect = (ok: boolean, what: string) => {
    if (!ok) problems.push(what);
  };
  const p = ev.status.progress;
  const rows = countBy(ev.tasks.map((t) => t.status ?? "unknown"));
  const total = ev.tasks.length;
  const lost = p.tasks_total - p.tasks_completed - p.tasks_failed;

  // 1. The batch and its counters against its task rows.
  expect(ev.final.status === "DONE", `batch ended ${ev.final.status} (error: ${ev.final.error ?? "none"}), not DONE`);
  expect(total === ev.samples.length, `${total} task rows for ${ev.samples.length} TIFFs`);
  expect(new Set(ev.tasks.map((t) => t.task_id)).size === total, "task ids repeat in the task list");
  expect(lost === 0, `${lost} tasks lost (neither done nor failed)`);
  expect(p.tasks_total === total, `progress.tasks_total ${p.tasks_total} ≠ ${total} task rows`);
  expect(p.tasks_completed === (rows.done ?? 0), `progress.tasks_completed ${p.tasks_completed} ≠ ${rows.done ?? 0} done rows`);
  expect(p.tasks_failed === (rows.failed ?? 0), `progress.tasks_failed ${p.tasks_failed} ≠ ${rows.failed ?? 0} failed rows`);
  for (const k of ["pending", "starting", "running", "retrying"] as const) {
    expect(p[k] === 0 && (rows[k] ?? 0) === 0, `${k}: progress ${p[k]}, rows ${rows[k] ?? 0} after the batch ended`);
  }

  // 2. Objects in S3 against the batch's keys.
  const objects = new Map(ev.objects.map((o) => [o.key, o.size]));
  const reserved = new Map<string, string>();
  for (const d of ev.details) for (const o of d.outputs) reserved.set(o.r2_key, d.task_id);
  const expected = expectedJpegKeys(ev.prefix, ev.samples);
  const done = ev.details.filter((d) => d.status === "done");
  const missing = done.flatMap((d) => d.outputs.map((o) => o.r2_key)).filter((k) => !objects.has(k));
  expect(missing.length === 0, `${missing.length} outputs of done tasks missing in S3: ${missing.slice(0, 5).join(", ")}`);
  const jpegs = ev.objects.map((o) => o.key).filter((k) => k.endsWith(".jpg")).sort();
  expect(same(jpegs, expected), `JPEGs in S3 (${jpegs.length}) differ from the ${expected.length} the TIFFs must give: ${diff(jpegs, expected).slice(0, 5).join(", ")}`);
  // The orchestrator's own object: the batch's final file list (engine/file-list.ts), written once.
  const fileList = (ev.status as { finalisation?: { file_list?: { key?: string } | null } | null }).finalisation?.file_list?.key;
  const allowed = new Set([...ev.inputs, ev.manifestKey, ...reserved.keys(), ...(fileList ? [fileList] : [])]);
  const outside = ev.objects.map((o) => o.key).filter((k) => !allowed.has(k));
  expect(outside.length === 0, `${outside.length} objects outside the batch's keys: ${outside.slice(0, 5).join(", ")}`);
  const writesByKey = groupBy(ev.writes, (w) => w.key);
  const unreserved = [...writesByKey.keys()].filter((k) => !reserved.has(k) && k !== fileList);
  expect(unreserved.length === 0, `${unreserved.length} keys written that no task reserved: ${unreserved.slice(0, 5).join(", ")}`);
  const sameCredentialTwice: string[] = [];
  const rewritten: string[] = [];
  const attemptsOf = new Map(ev.details.map((d) => [d.task_id, d.attempts.length]));
  for (const [key, writes] of writesByKey) {
    const creds = countBy(writes.map((w) => w.credential));
    for (const [cred, n] of Object.entries(creds)) if (n > 1) sameCredentialTwice.push(`${key} (${n}× by one ${cred === "header-signed" ? "signed client" : "presigned URL"})`);
    if (writes.length > 1) {
      rewritten.push(key);
      const owner = reserved.get(key);
      const attempts = owner ? (attemptsOf.get(owner) ?? 0) : 0;
      expect(Object.keys(creds).length <= attempts, `${key} written by ${Object.keys(creds).length} credentials, but its task had ${attempts} attempts`);
    }
  }
  expect(sameCredentialTwice.length === 0, `outputs written twice by the same attempt: ${sameCredentialTwice.slice(0, 5).join(", ")}`);
  const doneOutputKeys = done.flatMap((d) => d.outputs.map((o) => o.r2_key));
  const neverWritten = doneOutputKeys.filter((k) => !writesByKey.has(k));
  expect(neverWritten.length === 0, `${neverWritten.length} outputs of done tasks never written through the S3 tap: ${neverWritten.slice(0, 5).join(", ")}`);

  // 3. Machines.
  expect(ev.alive.live === 0 && ev.alive.pids.length === 0, `machines left alive: ${ev.alive.live} in the emulator, ${ev.alive.pids.length} processes`);

  // 4. Create requests against the configured limit (the emulator enforces the same bucket).
  const creates = ev.flyRequests.filter(isCreate);
  const peak = peakPerWindow(creates.map((r) => r.time), 1000);
  const overLimit = faultCount(creates, "rate_limited");
  const when = (t: number) => {
    const marks: [string, number | null][] = [["eviction", events.evictedAt], ["restart", events.restartedAt]];
    const near = marks.filter(([, at]) => at !== null && t >= at && t - at < 60_000).map(([name, at]) => `${((t - at!) / 1000).toFixed(1)} s after the ${name}`);
    const second = creates.filter((r) => r.time > t - 1000 && r.time <= t);
    return `${near.join(", ") || "not near the eviction or restart"}; ${second.length} create requests in the second before it (${second.filter((r) => r.fault).length} refused: ${[...new Set(second.map((r) => r.fault ?? "ok"))].join(", ")})`;
  };
  expect(
    overLimit === 0,
    `${overLimit} create requests went over the configured limit (${cfg.createRate}/s, burst ${cfg.createBurst}), refused by the emulator's own limiter: ` +
      creates.filter((r) => r.fault === "rate_limited").slice(0, 5).map((r) => when(r.time)).join(" | "),
  );
  expect(peak <= cfg.createRate + cfg.createBurst, `peak ${peak} create requests in one second, over ${cfg.createRate}/s + burst ${cfg.createBurst}`);

  // 5. Callbacks the proxy held or duplicated.
  const late = ev.held.filter((h) => h.fate === "late");
  const staleErr = ev.held.filter((h) => h.fate === "stale_error");
  const staleOk = ev.held.filter((h) => h.fate === "stale_success");
  expect(ev.heldSettled && ev.held.every((h) => h.deliveredAt !== null), `held callbacks not delivered: ${ev.held.filter((h) => h.deliveredAt === null).length}`);
  const forced = ev.held.filter((h) => h.forced);
  expect(
    forced.length === 0,
    `${forced.length} held callbacks waited past the hold limit for their condition (late: attempt given up; stale: next attempt started), ` +
      `delivered anyway: ${forced.map((h) => `${h.fate} ${h.taskId}#${h.attempt}`).join(", ")} — see "retry waits" (a retry that never starts keeps a stale callback waiting)`,
  );
  // How long a task waited between a failed attempt and its next one (the backoff is seconds).
  const retryWaits: number[] = [];
  for (const d of ev.details) {
    const byNo = new Map(d.attempts.map((a) => [a.attempt, a]));
    for (const a of d.attempts) {
      const next = byNo.get(a.attempt + 1);
      if (a.ended_at && next?.started_at && (a.outcome === "failed" || (a.note ?? "").includes("had ended failed"))) {
        retryWaits.push(Date.parse(next.started_at) - Date.parse(a.ended_at));
      }
    }
  }
  retryWaits.sort((x, y) => x - y);
  const badDup = ev.duplicates.filter((d) => d.duplicateOutcome !== "ignored");
  expect(badDup.length === 0, `${badDup.length} duplicate callbacks not ignored: ${badDup.slice(0, 3).map((d) => `${d.taskId}#${d.attempt} → ${d.duplicateStatus} ${d.duplicateOutcome}`).join(", ")}`);
  for (const h of staleErr) {
    expect(h.status === 200 && h.outcome === "ignored" && h.reason === "superseded", `stale error ${h.taskId}#${h.attempt} answered ${h.status} ${h.outcome}/${h.reason}, not ignored/superseded`);
    const d = ev.details.find((x) => x.task_id === h.taskId);
    const a = d?.attempts.find((x) => x.attempt === h.attempt);
    expect(Boolean(a?.note?.includes("late callback")), `stale error ${h.taskId}#${h.attempt} not noted on its attempt (note: ${a?.note ?? "none"})`);
    expect(d?.status === "done", `task ${h.taskId} that got a stale error is ${d?.status}, not done`);
  }
  for (const h of [...late, ...staleOk]) {
    expect(h.status === 200 && (h.outcome === "done" || h.outcome === "ignored"), `${h.fate} success ${h.taskId}#${h.attempt} answered ${h.status} ${h.outcome}/${h.reason}`);
  }
  const lateCounted = [...late, ...staleOk].filter((h) => h.outcome === "done").length;

  // 6. Every failed attempt matched to an injected fault.
  const restart = events.killedAt && events.restartedAt ? { from: events.killedAt, to: events.restartedAt + cfg.runTimeoutMs + cfg.bootTimeoutMs } : null;
  const causes: Record<string, number> = {};
  const unexplained: string[] = [];
  const silent = new Set(ev.machines.filter((m) => m.diedSilently).map((m) => m.id));
  const createsByName = groupBy(creates, (r) => String((r.body as { name?: unknown } | undefined)?.name ?? ""));
  for (const d of ev.details) {
    for (const a of d.attempts) {
      const failedOnce = a.outcome === "failed" || (a.note ?? "").includes("had ended failed");
      if (!failedOnce) continue;
      const error = a.error ?? /had ended failed: (.*) before its callback arrived/.exec(a.note ?? "")?.[1] ?? "";
      const cause = explain(d, a, error, { ev, silent, createsByName, restart });
      if (cause) causes[cause] = (causes[cause] ?? 0) + 1;
      else unexplained.push(`${d.task_id}#${a.attempt} on ${a.machine_id ?? a.machine_name}: ${error}`);
    }
  }
  expect(unexplained.length === 0, `${unexplained.length} failed attempts no injected fault explains: ${unexplained.slice(0, 8).join(" | ")}`);
  expect(events.evictedAt !== null, "the FlyBudget DO was never evicted");

  // 7. The live event stream: every failed attempt sent once, ids without gaps across the restart.
  const stream = events.stream;
  const sentFailures = stream.events.filter((e) => e.type === "task_failed").map((e) => `${String(e.data.task_id)}#${String(e.data.attempt)}`);
  const failedAttempts = ev.details.flatMap((d) =>
    d.attempts.filter((a) => a.outcome === "failed" || (a.note ?? "").includes("had ended failed")).map((a) => `${d.task_id}#${a.attempt}`),
  );
  const unsent = diff(failedAttempts.slice().sort(), [...new Set(sentFailures)].sort());
  expect(unsent.length === 0, `failed attempts and task_failed events differ (+ failed, never sent; − sent, not failed): ${unsent.slice(0, 6).join(", ")}`);
  expect(sentFailures.length === new Set(sentFailures).size, `task_failed sent more than once for one attempt: ${sentFailures.length - new Set(sentFailures).size}`);
  expect(stream.idProblems.length === 0, `event ids out of sequence on the stream: ${stream.idProblems.slice(0, 5).join("; ")}`);
  const finalEvent = stream.events.find((e) => e.type === "done" || e.type === "failed" || e.type === "error");
  expect(finalEvent?.type === "done", `the event stream's final event: ${finalEvent?.type ?? "none received"} (drops: ${stream.drops.slice(-3).join("; ") || "none"})`);
  expect(events.killedAt !== null && events.restartedAt !== null, "the orchestrator was never killed and restarted");

  const machinesCreated = ev.machinesCreated;
  const faultsInjected: Record<string, number> = {
    "create 429 (injected, Retry-After)": faultCount(creates, "injected_429"),
    "API 5xx (injected)": faultCount(ev.flyRequests, "injected_5xx"),
    "capacity refusals (first region)": faultCount(creates, "capacity_region"),
    "capacity refusals (emulator full)": faultCount(creates, "capacity_full"),
    "silent machine deaths": silent.size,
    "duplicate callbacks": ev.duplicates.length,
    "late callbacks": late.length,
    "stale callbacks (error)": staleErr.length,
    "stale callbacks (success)": staleOk.length,
    "FlyBudget DO evictions": events.evictedAt ? 1 : 0,
    "orchestrator SIGKILL + restart": events.killedAt ? 1 : 0,
  };
  const figures: Record<string, number | string> = {
    status: ev.final.status,
    "tasks": total,
    "done": p.tasks_completed,
    "failed": p.tasks_failed,
    "lost": lost,
    "task rows done / failed / open": `${rows.done ?? 0} / ${rows.failed ?? 0} / ${total - (rows.done ?? 0) - (rows.failed ?? 0)}`,
    "attempts (all tasks)": ev.details.reduce((n, d) => n + d.attempts.length, 0),
    "outputs reserved / JPEGs in S3": `${reserved.size} / ${jpegs.length}`,
    "objects outside the batch's keys": outside.length,
    "writes (S3 tap) / keys written": `${ev.writes.length} / ${writesByKey.size}`,
    "keys rewritten by a later attempt": rewritten.length,
    "keys written twice by one attempt": sameCredentialTwice.length,
    "machines created": machinesCreated,
    "machines created per task": (machinesCreated / Math.max(1, total)).toFixed(3),
    "machines left alive": ev.alive.live + ev.alive.pids.length,
    "create requests": creates.length,
    "peak create requests in 1 s": peak,
    "configured create limit": `${cfg.createRate}/s, burst ${cfg.createBurst} (≤ ${cfg.createRate + cfg.createBurst} in any 1 s)`,
    "creates refused by the limit (not injected)": overLimit,
    "callbacks received (incl. retries)": ev.callbacksReceived,
    "late/stale successes that settled their task": lateCounted,
    "failed attempts": Object.values(causes).reduce((a, b) => a + b, 0) + unexplained.length,
    "failed attempts unexplained": unexplained.length,
    "retry waits (failed attempt → next attempt) p50 / max": retryWaits.length
      ? `${(retryWaits[Math.floor(retryWaits.length / 2)] / 1000).toFixed(1)} s / ${(retryWaits[retryWaits.length - 1] / 1000).toFixed(1)} s`
      : "n/a",
    "held callbacks released by a later attempt's call / at the hold limit": `${ev.held.filter((h) => h.releasedByNextAttempt).length} / ${forced.length}`,
    "restart: orchestrator down": events.killedAt && events.restartedAt ? `${((events.restartedAt - events.killedAt) / 1000).toFixed(1)} s` : "n/a",
    "wall time": `${(events.wallMs / 1000).toFixed(1)} s`,
    "event stream: events (progress / task_failed / other)": `${byType(stream, "progress")} / ${byType(stream, "task_failed")} / ${stream.events.length - byType(stream, "progress") - byType(stream, "task_failed")}`,
    "event stream: peak events in 1 s (all / progress)": `${peakPerWindow(stream.events.map((e) => e.at), 1000)} / ${peakPerWindow(stream.events.filter((e) => e.type === "progress").map((e) => e.at), 1000)}`,
    "event stream: bytes per event p50 (progress / task_failed)": `${median(stream.events.filter((e) => e.type === "progress").map((e) => e.bytes))} / ${median(stream.events.filter((e) => e.type === "task_failed").map((e) => e.bytes))}`,
    "event stream: resumed with Last-Event-ID / ids out of sequence": `${stream.reconnects} / ${stream.idProblems.length}`,
    "event stream: why it dropped": Object.entries(countBy(stream.drops.map((d) => d.replace(/\d+/g, "N")))).map(([why, n]) => `${n}× ${why}`).join("; ") || "never",
  };
  return { mode, batchId, figures, faultsInjected, failureCauses: causes, problems };
}

function explain(
  d: TaskDetail,
  a: TaskDetail["attempts"][number],
  error: string,
  ctx: {
    ev: SoakEvidence;
    silent: Set<string>;
    createsByName: Map<string, RecordedRequest[]>;
    restart: { from: number; to: number } | null;
  },
): string | null {
  const fate = ctx.ev.held.find((h) => h.taskId === d.task_id && h.attempt === a.attempt)?.fate;
  if (fate === "late") return "late callback (held past the deadline)";
  if (fate === "stale_error" || fate === "stale_success") return "stale callback (held until the next attempt)";
  const machine = /machine ([0-9a-f]{14})/.exec(error)?.[1] ?? a.machine_id ?? "";
  if (ctx.silent.has(machine) && /exited|lease expired|ran longer/.test(error)) return "silent machine death";
  const creates = [...ctx.createsByName.entries()].filter(([name]) => a.machine_name && name.endsWith(`-${a.machine_name}`)).flatMap(([, rs]) => rs);
  if (/^no capacity/.test(error) && creates.some((r) => r.fault === "capacity_region" || r.fault === "injected_5xx" || r.fault === "capacity_full")) {
    return "capacity refusals (+ 5xx in other regions)";
  }
  if (/create got no answer/.test(error) && creates.some((r) => r.fault === "injected_5xx")) return "API 5xx on create";
  const started = a.started_at ? Date.parse(a.started_at) : 0;
  const ended = a.ended_at ? Date.parse(a.ended_at) : Date.now();
  if (ctx.restart && started <= ctx.restart.to && ended >= ctx.restart.from) return "orchestrator restart (attempt spanned the outage)";
  return null;
}

export function markdown(results: ModeResult[], run: { tasks: number; seed: number; wallMs: number; config: SoakConfig }): string {
  const c = run.config;
  const lines = [
    "# Soak",
    "",
    `\`npm run soak -- --tasks ${run.tasks} --seed ${run.seed}\` — ${new Date().toISOString().slice(0, 10)}, total wall time ${(run.wallMs / 1000).toFixed(0)} s. ` +
      `Verdict: ${results.every((r) => r.problems.length === 0) ? "**PASSED**" : "**FAILED**"} (${results.map((r) => `${r.mode} ${r.problems.length === 0 ? "passed" : "failed"}`).join(", ")}).`,
    "",
    `Fault matrix: create 429s ${c.faults.createRateLimitRate * 100}% (Retry-After), API 5xx ${c.faults.serverErrorRate * 100}%, every create in iad refused for capacity, ` +
      `silent machine deaths ${c.faults.dieSilentlyRate * 100}%, duplicate callbacks ${c.callbacks.duplicate * 100}%, late callbacks ${c.callbacks.late * 100}%, ` +
      `stale callbacks ${c.callbacks.stale * 100}% (half error, half success), one FlyBudget DO eviction at ${c.evictAt * 100}% (debug hook), one orchestrator SIGKILL + restart at ${c.restartAt * 100}%. ` +
      `Limits: create ${c.createRate}/s burst ${c.createBurst}, ${c.maxMachines} machines, ${c.maxAttempts} attempts, boot ${c.bootTimeoutMs / 1000} s, run ${c.runTimeoutMs / 1000} s.`,
    "",
    "## Figures",
    "",
    table(["", ...results.map((r) => r.mode)], Object.keys(results[0]?.figures ?? {}).map((k) => [k, ...results.map((r) => String(r.figures[k] ?? ""))])),
    "",
    "## Faults injected",
    "",
    table(["fault", ...results.map((r) => r.mode)], Object.keys(results[0]?.faultsInjected ?? {}).map((k) => [k, ...results.map((r) => String(r.faultsInjected[k] ?? 0))])),
    "",
    "## Failed attempts by the fault that explains them",
    "",
    table(
      ["cause", ...results.map((r) => r.mode)],
      [...new Set(results.flatMap((r) => Object.keys(r.failureCauses)))].map((k) => [k, ...results.map((r) => String(r.failureCauses[k] ?? 0))]),
    ),
    "",
    "## Problems",
    "",
    ...results.map((r) => (r.problems.length === 0 ? `- ${r.mode}: none` : r.problems.map((p) => `- ${r.mode}: ${p}`).join("\n"))),
    "",
  ];
  return lines.join("\n");
}

function table(head: string[], rows: string[][]): string {
  const esc = (s: string) => s.replace(/\|/g, "\\|");
  return [`| ${head.map(esc).join(" | ")} |`, `|${head.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`, ...rows.map((r) => `| ${r.map(esc).join(" | ")} |`)].join("\n");
}



const byType = (r: EventRecord, type: string) => r.events.filter((e) => e.type === type).length;

function median(xs: number[]): number | string {
  if (xs.length === 0) return "n/a";
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function peakPerWindow(times: number[], windowMs: number): number {
  const t = [...times].sort((a, b) => a - b);
  let peak = 0;
  for (let i = 0, j = 0; j < t.length; j++) {
    while (t[j] - t[i] >= windowMs) i++;
    peak = Math.max(peak, j - i + 1);
  }
  return peak;
}

function countBy(values: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of values) out[v] = (out[v] ?? 0) + 1;
  return out;
}

function groupBy<T>(items: T[], key: (t: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const list = out.get(k);
    if (list) list.push(item);
    else out.set(k, [item]);
  }
  return out;
}

const same = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);
function diff(a: string[], b: string[]): string[] {
  const sa = new Set(a);
  const sb = new Set(b);
  return [...a.filter((x) => !sb.has(x)).map((x) => `+${x}`), ...b.filter((x) => !sa.has(x)).map((x) => `-${x}`)];
}
