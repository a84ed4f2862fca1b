// Pipelines per batch, in workerd: the message names its phases (validated against the registry at
// POST /admin/batches and at the queue), or the batch runs the default pipeline; the engine chains
// TIFF_CONVERSION → PDF_SPLITTING → CHECKSUM for one batch from what it recorded, naming none of them.
// Machines are the Fly emulator's; PDF and CHECKSUM machines do what their fly-worker jobs do at the
// contract's boundary: reserve keys (POST /outputs), write objects, call back with their phase's body.
import { env, exports } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { machineProcessEnv } from "../../local/fly-emulator/runner.ts";
import { CHECKSUM_PHASE } from "../../shared/checksum.ts";
import { PDF_PHASE } from "../../shared/pdf.ts";
import { ADMIN, callbackTo, finalFiles, getStatus, installWorld, putTiffs, stub, waitForStatus, withStore, type World } from "./support/engine.ts";

let world: World;
beforeEach(() => {
  world = installWorld();
});
afterEach(async () => {
  await world.restore();
});

const enqueue = (body: unknown) =>
  exports.default.fetch("http://orchestrator.test/admin/batches", { method: "POST", headers: { ...ADMIN, "content-type": "application/json" }, body: JSON.stringify(body) });

/** A PDF machine's run as the fly-worker's PDF job does it, for a PDF of `pages` pages. */
async function splitPdf(m: Record<string, string>, pages: number): Promise<string[]> {
  const reserve = await exports.default.fetch(m.OUTPUTS_URL, {
    method: "POST",
    headers: { authorization: `Bearer ${m.CALLBACK_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ pages: 2 * pages }),
  });
  expect(reserve.status, await reserve.clone().text()).toBe(200);
  const reserved = (await reserve.json()) as { outputs: { page: number; r2_key: string; headers: Record<string, string> }[] };
  // Each PUT URL signs its output's content type: page n's JPEG (odd outputs) or single-page PDF (even).
  expect(JSON.parse(m.OUTPUT_HEADERS)["content-type"]).toBe("image/jpeg");
  expect(reserved.outputs.map((o) => [o.page, o.headers["content-type"]])).toEqual(reserved.outputs.map((o) => [o.page, o.page % 2 === 1 ? "image/jpeg" : "application/pdf"]));
  const keys = [m.OUTPUT_R2_KEY, ...reserved.outputs.map((o) => o.r2_key)];
  const outputs = keys.map((key, i) => ({ r2_key: key, file_size: 100 + i, content_type: i % 2 === 0 ? "image/jpeg" : "application/pdf", page: Math.floor(i / 2) + 1 }));
  for (const o of outputs) await env.BUCKET.put(o.r2_key, new Uint8Array(o.file_size));
  const body = {
    task_id: m.TASK_ID,
    batch_id: m.BATCH_ID,
    status: "success",
    output_r2_key: keys[0],
    output_file_name: keys[0].split("/").pop(),
    output_file_size: outputs[0].file_size,
    outputs,
    pages,
    dpi: 300,
    jpeg: { quality: 95, chroma: "4:2:0", mozjpeg: true },
    input: { r2_key: m.INPUT_R2_KEY, bytes: 9, encryption: "none" },
  };
  const res = await callbackTo(m.BATCH_ID, m.TASK_ID, body, m.CALLBACK_TOKEN);
  expect(await res.json()).toMatchObject({ outcome: "done" });
  return keys;
}

/** A CHECKSUM machine's run: the sidecar written, the input's digest called back (a digest derived from the key, for the test). */
async function hashFile(m: Record<string, string>): Promise<string> {
  const sha256 = [...m.INPUT_R2_KEY].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7).toString(16).padStart(8, "0").repeat(8);
  await env.BUCKET.put(m.OUTPUT_R2_KEY, new Uint8Array(90));
  const body = { task_id: m.TASK_ID, batch_id: m.BATCH_ID, status: "success", output_r2_key: m.OUTPUT_R2_KEY, output_file_name: "x.sha256", output_file_size: 90, sha256, input: { r2_key: m.INPUT_R2_KEY, bytes: 1 } };
  const res = await callbackTo(m.BATCH_ID, m.TASK_ID, body, m.CALLBACK_TOKEN);
  expect(await res.json()).toMatchObject({ outcome: "done" });
  return sha256;
}

const started = (phase: string) => world.runner.started.map(machineProcessEnv).filter((m) => m.PHASE === phase);

describe("a batch's pipeline", () => {
  it("TIFF_CONVERSION → PDF_SPLITTING → CHECKSUM for one batch: PDFs found by type, name or %PDF- signature; every input and output hashed; the phases' events in order", async () => {
    const b = "pipe-chain";
    await putTiffs(`${b}/`, 2);
    // By content type, by name, by signature (no type, no .pdf); a file of no type that is not a PDF.
    await env.BUCKET.put(`${b}/report`, "%PDF-1.7\n…", { httpMetadata: { contentType: "application/pdf" } });
    await env.BUCKET.put(`${b}/letter.PDF`, "%PDF-1.4\n…");
    await env.BUCKET.put(`${b}/scan.bin`, "\r\n%PDF-1.5\n…", { httpMetadata: { contentType: "application/octet-stream" } });
    await env.BUCKET.put(`${b}/notes.bin`, "not a pdf at all", { httpMetadata: { contentType: "application/octet-stream" } });
    world.runner.behaviour = (m) => (machineProcessEnv(m).PHASE === "TIFF_CONVERSION" ? "succeed" : "hang");
    await stub(b).start({ batch_id: b, r2_prefix: `${b}/`, phases: ["TIFF_CONVERSION", PDF_PHASE, CHECKSUM_PHASE] });

    await vi.waitFor(() => expect(started(PDF_PHASE)).toHaveLength(3), { timeout: 20_000 });
    const pdfs = started(PDF_PHASE).sort((x, y) => x.INPUT_R2_KEY.localeCompare(y.INPUT_R2_KEY));
    expect(pdfs.map((m) => [m.INPUT_R2_KEY, m.OUTPUT_R2_KEY])).toEqual([
      [`${b}/letter.PDF`, `${b}/letter-p001.jpg`],
      [`${b}/report`, `${b}/report-p001.jpg`],
      [`${b}/scan.bin`, `${b}/scan-p001.jpg`],
    ]);
    expect((await getStatus(b)).status).toBe(PDF_PHASE);
    const pages: Record<string, number> = { [`${b}/letter.PDF`]: 1, [`${b}/report`]: 3, [`${b}/scan.bin`]: 2 };
    const written: string[] = [];
    for (const m of pdfs) written.push(...(await splitPdf(m, pages[m.INPUT_R2_KEY])));
    expect(written.filter((k) => k.startsWith(`${b}/report-`))).toEqual(["report-p001.jpg", "report-p001.pdf", "report-p002.jpg", "report-p002.pdf", "report-p003.jpg", "report-p003.pdf"].map((k) => `${b}/${k}`));

    // CHECKSUM hashes every file there is by then: 2 TIFFs, their 2 JPEGs, 4 inputs of no TIFF kind, 12 pages' outputs.
    await vi.waitFor(() => expect(started(CHECKSUM_PHASE)).toHaveLength(20), { timeout: 20_000 });
    const digests = new Map<string, string>();
    for (const m of started(CHECKSUM_PHASE)) digests.set(m.INPUT_R2_KEY, await hashFile(m));
    const s = await waitForStatus(b, (x) => x.status === "DONE");
    expect(s.phases.map((p) => [p.name, p.total, p.done, p.failed])).toEqual([
      ["TIFF_CONVERSION", 2, 2, 0],
      [PDF_PHASE, 3, 3, 0],
      [CHECKSUM_PHASE, 20, 20, 0],
    ]);
    const final = { files: (await finalFiles(world.downstream)) as { r2_key: string; sha256?: string; source_r2_key?: string; source_page?: number; content_type: string }[] };
    expect(final.files).toHaveLength(40);
    for (const f of final.files.filter((x) => !x.r2_key.endsWith(".sha256"))) expect(f.sha256, f.r2_key).toBe(digests.get(f.r2_key));
    expect(final.files.find((f) => f.r2_key === `${b}/report-p002.pdf`)).toMatchObject({ source_r2_key: `${b}/report`, source_page: 2, content_type: "application/pdf" });
    const events = await withStore(b, (_s, sql) => sql.exec<{ data: string }>("SELECT data FROM events WHERE type = 'phase' ORDER BY id").toArray().map((r) => JSON.parse(r.data) as { phase: string; next: string | null }));
    expect(events.map((e) => [e.phase, e.next])).toEqual([["TIFF_CONVERSION", PDF_PHASE], [PDF_PHASE, CHECKSUM_PHASE], [CHECKSUM_PHASE, null]]);
  });

  it("without phases: the default pipeline converts the TIFFs and splits the PDFs, never runs CHECKSUM, and a batch of TIFFs alone shows TIFF_CONVERSION to the end", async () => {
    const b = "pipe-default";
    await putTiffs(`${b}/`, 1);
    await env.BUCKET.put(`${b}/doc.pdf`, "%PDF-1.7\n…", { httpMetadata: { contentType: "application/pdf" } });
    world.runner.behaviour = (m) => (machineProcessEnv(m).PHASE === PDF_PHASE ? "hang" : "succeed");
    await stub(b).start({ batch_id: b, r2_prefix: `${b}/` });
    await vi.waitFor(() => expect(started(PDF_PHASE)).toHaveLength(1), { timeout: 20_000 });
    await splitPdf(started(PDF_PHASE)[0], 1);
    const s = await waitForStatus(b, (x) => x.status === "DONE");
    expect(s.phases.map((p) => p.name)).toEqual(["TIFF_CONVERSION", PDF_PHASE]);
    expect(started(CHECKSUM_PHASE)).toHaveLength(0);

    const t = "pipe-tiffs";
    await putTiffs(`${t}/`, 2);
    world.downstream.script = [503];
    await stub(t).start({ batch_id: t, r2_prefix: `${t}/` });
    // Finalising (downstream answered 503 once): PDF_SPLITTING had nothing to do and passed without a trace.
    const finalising = await waitForStatus(t, (x) => x.stage === "finalise" || x.status === "DONE");
    expect(finalising.phase).toBe("TIFF_CONVERSION");
    const done = await waitForStatus(t, (x) => x.status === "DONE", 30_000);
    expect(done.phases.map((p) => p.name)).toEqual(["TIFF_CONVERSION"]);
    expect(done.warnings).toEqual([]);
  });

  it("POST /admin/batches refuses a pipeline it cannot run with a 400 naming the phase and the registered ones; nothing is queued", async () => {
    const cases: [unknown, RegExp][] = [
      [["TIFF_CONVERSION", "OCR"], /^invalid body: phases: unknown phase "OCR"; registered phases: TIFF_CONVERSION, PDF_SPLITTING, CHECKSUM/],
      [["CHECKSUM", "CHECKSUM"], /^invalid body: phases: CHECKSUM named more than once/],
      [[], /^invalid body: phases: phases must name at least one phase$/],
      [["tiff_conversion"], /^invalid body: phases\.0: a phase name is upper-case letters/],
      ["TIFF_CONVERSION", /^invalid body: phases: /],
    ];
    for (const [phases, message] of cases) {
      const res = await enqueue({ batch_id: "pipe-bad", r2_prefix: "pipe-bad/", phases });
      const body = (await res.json()) as { error: string };
      expect([res.status, body.error], JSON.stringify(phases)).toEqual([400, expect.stringMatching(message)]);
    }
    expect(await stub("pipe-bad").status()).toBeNull();
    const ok = await enqueue({ batch_id: "pipe-ok", r2_prefix: "pipe-ok/", phases: [PDF_PHASE, CHECKSUM_PHASE] });
    expect(ok.status).toBe(202);
  });

  it("a queue message naming an unknown phase ends its batch in ERROR saying so (the queue boundary checks what the HTTP one does)", async () => {
    await stub("pipe-q").start({ batch_id: "pipe-q", r2_prefix: "pipe-q/", phases: ["TIFF_CONVERSION", "OCR"] });
    const s = await getStatus("pipe-q");
    expect(s.status).toBe("ERROR");
    expect(s.error).toMatch(/^invalid queue message: phases: unknown phase "OCR"; registered phases: /);
  });
});
