// The PDF job (PHASE=PDF_SPLITTING): download the PDF, check it is one (`%PDF-`, whatever its name),
// open and measure every page with pdf.js before anything is written, reserve two keys a page, write
// each page's single-page PDF (pdf-lib, the page's own objects) and its JPEG (pdf.js + sharp), one
// page on disk and in memory at a time, and build the callback.
import { open, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { fileName } from "../shared/keys.ts";
import { JPEG_CONTENT_TYPE, PDF_CONTENT_TYPE, PDF_SIGNATURE_WINDOW, pdfOutputsOfPage, pdfSignatureAt, type PdfOutput, type PdfSuccess } from "../shared/pdf.ts";
import type { WorkerEnv } from "./env.ts";
import { TaskError } from "./errors.ts";
import { log, since } from "./log.ts";
import { openPdf, openSplitter, planPages, renderPage, type OpenedPdf, type PagePlan, type RenderSettings } from "./pdf-document.ts";
import { taskStorage, whenDownloadFree } from "./storage.ts";
import { peakRssMb, type TaskProgress } from "./task.ts";

/** Runs the PDF task `env` names in `workDir`; `progress.timings` stays readable when it throws. */
export async function runPdf(env: WorkerEnv, workDir: string, progress: TaskProgress): Promise<PdfSuccess> {
  if (!env.INPUT_URL) {
    // The old contract's key pair derives TIFF page keys on the machine; a PDF's keys are the orchestrator's to reserve.
    throw new TaskError("internal", "PDF_SPLITTING needs scoped storage access (INPUT_URL, OUTPUTS_URL): set MACHINE_STORAGE=scoped", { retryable: false });
  }
  const timings = progress.timings;
  const storage = taskStorage(env);
  const input = join(workDir, "input.pdf");
  try {
    const downloaded = await whenDownloadFree(async (queuedMs) => {
      log.info("PdfSplitting", "download.start", { key: env.INPUT_R2_KEY, queued_ms: queuedMs });
      const t = performance.now();
      const d = await storage.download(input);
      timings.download_time_ms = since(t);
      log.info("PdfSplitting", "download.done", { bytes: d.bytes, content_type: d.contentType, duration_ms: timings.download_time_ms });
      return d;
    });
    await checkSignature(input, downloaded.bytes);

    let t = performance.now();
    const settings: RenderSettings = { dpi: env.PDF_RENDER_DPI, quality: env.JPEG_QUALITY, mozjpeg: env.MOZJPEG, chroma: env.JPEG_CHROMA, machineMb: env.memory.mb };
    // Measured first and closed: pdf.js and pdf-lib each hold the file, never both at once.
    const { pages, plans } = await withPdf(input, async (pdf) => {
      if (pdf.pages > env.PDF_MAX_PAGES) {
        throw new TaskError("input", `the PDF has ${pdf.pages} pages, over the limit of ${env.PDF_MAX_PAGES} (PDF_MAX_PAGES); split it into smaller PDFs before ingest`, { retryable: false });
      }
      return { pages: pdf.pages, plans: await planPages(pdf, settings, downloaded.bytes) };
    });
    timings.inspect_time_ms = since(t);
    const skipped = plans.filter((p) => p.skip !== null).map((p) => ({ page: p.page, reason: p.skip! }));
    log.info("PdfSplitting", "inspect.done", {
      pages,
      dpi: settings.dpi,
      largest: plans.reduce((a, b) => (b.width * b.height > a.width * a.height ? b : a), plans[0]),
      streaming_pages: plans.filter((p) => p.skip === null && !p.mozjpeg && settings.mozjpeg).length,
      pages_skipped: skipped,
      duration_ms: timings.inspect_time_ms,
      peak_rss_mb: peakRssMb(),
    });
    for (const s of skipped) log.warn("PdfSplitting", "page.no_jpeg", s);

    const splitter = await openSplitter(input);
    if (splitter.pages !== pages) {
      throw new TaskError("input", `the PDF is damaged: pdf.js reads ${pages} pages and pdf-lib ${splitter.pages}; repair it (e.g. re-save it) before ingest`, { retryable: false });
    }
    // Every key is reserved by the orchestrator before it is written: a JPEG and a PDF per page.
    const keys = await storage.reserve(2 * pages);
    const outputs: PdfOutput[] = [];
    const upload = async (n: number, path: string, contentType: string) => {
      const started = performance.now();
      const uploaded = await storage.upload(n, path, contentType);
      timings.upload_time_ms += since(started);
      await rm(path, { force: true }); // disk holds one output at a time
      return uploaded.bytes;
    };

    for (let page = 1; page <= pages; page++) {
      t = performance.now();
      const n = pdfOutputsOfPage(page).pdf;
      const path = join(workDir, `page-${page}.pdf`);
      await splitter.writePage(page, path);
      timings.conversion_time_ms += since(t);
      outputs.push({ r2_key: keys[n - 1], file_size: await upload(n, path, PDF_CONTENT_TYPE), content_type: PDF_CONTENT_TYPE, page });
    }
    log.info("PdfSplitting", "split.done", { pages, encryption: splitter.encryption, peak_rss_mb: peakRssMb() });

    await withPdf(input, async (pdf) => {
      for (const plan of plans) {
        if (plan.skip !== null) continue;
        const n = pdfOutputsOfPage(plan.page).jpeg;
        const path = join(workDir, `page-${plan.page}.jpg`);
        const r = await renderPage(pdf, plan, settings, path);
        timings.conversion_time_ms += r.render_ms + r.encode_ms;
        const bytes = await upload(n, path, JPEG_CONTENT_TYPE);
        outputs.push({ r2_key: keys[n - 1], file_size: bytes, content_type: JPEG_CONTENT_TYPE, page: plan.page, width: r.width, height: r.height, ...fallback(plan, settings) });
        log.info("PdfSplitting", "page.done", { page: plan.page, width: r.width, height: r.height, bytes, render_ms: r.render_ms, encode_ms: r.encode_ms, peak_rss_mb: peakRssMb() });
      }
    });

    // Page order, each page's JPEG before its PDF: the order the keys were reserved in.
    const order = new Map(keys.map((k, i) => [k, i]));
    outputs.sort((a, b) => order.get(a.r2_key)! - order.get(b.r2_key)!);
    const first = outputs[0];
    return {
      task_id: env.TASK_ID,
      batch_id: env.BATCH_ID,
      status: "success",
      output_r2_key: first.r2_key,
      output_file_name: fileName(first.r2_key),
      output_file_size: first.file_size,
      outputs,
      pages,
      ...(skipped.length > 0 ? { pages_skipped: skipped } : {}),
      dpi: settings.dpi,
      jpeg: { quality: settings.quality, chroma: settings.chroma, mozjpeg: settings.mozjpeg },
      input: { r2_key: env.INPUT_R2_KEY, bytes: downloaded.bytes, encryption: splitter.encryption },
    };
  } finally {
    storage.close();
  }
}

/** A page encoded without mozjpeg though it was asked for (too large for the machine's memory) says so. */
function fallback(plan: PagePlan, s: RenderSettings): { mozjpeg?: false; encoder_reason?: string } {
  if (plan.mozjpeg || !s.mozjpeg) return {};
  return { mozjpeg: false, encoder_reason: `mozjpeg would not fit the memory budget (${s.machineMb} MB machine): streaming baseline encoder used` };
}

/** Opens the PDF at `path` with pdf.js for `fn`, and closes it whatever happens. */
async function withPdf<T>(path: string, fn: (pdf: OpenedPdf) => Promise<T>): Promise<T> {
  const file = await readFile(path);
  // A view of the file's own buffer: pdf.js takes it over instead of copying it.
  const pdf = await openPdf(new Uint8Array(file.buffer, file.byteOffset, file.byteLength));
  try {
    return await fn(pdf);
  } finally {
    await pdf.close();
  }
}

/** Refuses what is not a PDF, naming what it looks like: a content type or a name can be wrong, the bytes cannot. */
async function checkSignature(path: string, size: number): Promise<void> {
  const handle = await open(path, "r");
  const head = Buffer.alloc(Math.min(size, PDF_SIGNATURE_WINDOW));
  try {
    await handle.read(head, 0, head.length, 0);
  } finally {
    await handle.close();
  }
  if (size === 0) throw new TaskError("input", "the PDF is empty (0 bytes)", { retryable: false });
  if (pdfSignatureAt(head) < 0) {
    throw new TaskError("input", `not a PDF: no %PDF- header in the first ${PDF_SIGNATURE_WINDOW} bytes (${looksLike(head)})`, { retryable: false });
  }
}

function looksLike(head: Buffer): string {
  const hex = head.subarray(0, 4).toString("hex");
  if (hex === "49492a00" || hex === "4d4d002a") return "it is a TIFF";
  if (hex === "89504e47") return "it is a PNG";
  if (hex.startsWith("ffd8ff")) return "it is a JPEG";
  if (hex === "504b0304") return "it is a ZIP archive";
  if (/^\s*<(!doctype|html|\?xml)/i.test(head.subarray(0, 64).toString("latin1"))) return "it is HTML or XML";
  return `it starts with bytes ${head.subarray(0, 8).toString("hex")}`;
}
