// PDF_SPLITTING: every PDF of the batch (by content type, a `.pdf` name, or — for a file whose type
// says nothing — its `%PDF-` signature) becomes, per page, a JPEG rendered at PDF_RENDER_DPI and a
// single-page PDF of the page's own objects, written by the fly-worker's PDF job. The PDF stays in the
// file list; its pages are added.
import { z } from "zod";
import type { FileEntry } from "../../shared/contracts.ts";
import { fileName } from "../../shared/keys.ts";
import {
  declaredPdf,
  JPEG_CONTENT_TYPE,
  MAX_PDF_PAGES,
  PDF_PHASE,
  PDF_SIGNATURE_WINDOW,
  PdfCallback,
  pdfFirstKeyCandidates,
  pdfOutputKeyCandidates,
  pdfOutputOf,
  pdfSignatureAt,
  undeclaredType,
} from "../../shared/pdf.ts";
import { chooseGuest, type TaskWork } from "../engine/sizing.ts";
import type { GuestSize } from "../fly/api.ts";
import { conversionSettings, CONVERSION_ENV } from "./tiff-conversion.ts";
import type { Phase, PhaseFile } from "./types.ts";

const MB = 1024 * 1024;

/**
 * The work model, measured on generated PDFs (`npm run bench`, section 5, bench/pdf.ts): at 300 DPI a
 * Letter page (8.4 MP) renders and encodes (mozjpeg q95) in 0.71–0.83 CPU-s, scan or text; the worker
 * peaks at ~320 MB + 13.5 B a rendered pixel + the file it holds + ~0.12 MB a page (fly-worker/
 * pdf-document.ts PDF_MEMORY_MODEL; 1,000-page PDFs in section 5). A PDF's page count is unknown until
 * it is opened: sizing assumes one page per PDF_BYTES_PER_PAGE for its CPU, the ceiling for its memory.
 */
export const PDF_CPU_S_PER_PAGE = 0.8;
export const PDF_PROCESS_START_CPU_S = 0.6;
/**
 * A born-digital page is ~2–20 KB (the bench's text pages: 1.7 KB), a scanned one 100 KB–1 MB. 20 KB a
 * page errs towards more pages: a long text PDF gets a performance machine rather than a shared one that
 * would run throttled for most of its run (a scan PDF's estimate is capped at MAX_PDF_PAGES).
 */
export const PDF_BYTES_PER_PAGE = 20 * 1024;
/** The worker's peak for a page of up to A3 at 300 DPI (17.4 MP), before the file it holds. */
export const PDF_PAGE_PEAK_MB = 320 + Math.ceil(17.4 * 13.5);
/**
 * What the open documents keep per page (page tree, pdf.js's per-page state): 1,000-page PDFs peaked
 * 115 MB (text) and 217 − 88 MB (scans, less their file) above their 10-page cuts at 72 DPI (section 5).
 * 0.12 MB a page for the ceiling's 2,000, since the page count is unknown at sizing.
 */
export const PDF_PAGES_HELD_MB = Math.ceil(MAX_PDF_PAGES * 0.12);
/** JPEG bytes of a 300-DPI page at q95 (section 5's text and scan pages: ~0.5 MB). */
export const PDF_JPEG_BYTES_PER_PAGE = 0.5 * MB;

export function pdfWork(sizeBytes: number): TaskWork {
  const pages = Math.min(MAX_PDF_PAGES, Math.max(1, Math.ceil(sizeBytes / PDF_BYTES_PER_PAGE)));
  return {
    cpuS: PDF_PROCESS_START_CPU_S + pages * PDF_CPU_S_PER_PAGE,
    parallelism: 1,
    memoryMb: PDF_PAGE_PEAK_MB + PDF_PAGES_HELD_MB + Math.ceil(sizeBytes / MB),
    // Down once; up again as single-page PDFs (about the file's size) and a JPEG a page.
    inBytes: sizeBytes,
    outBytes: sizeBytes + pages * PDF_JPEG_BYTES_PER_PAGE,
  };
}

export const pdfGuest = (sizeBytes: number): GuestSize => chooseGuest(pdfWork(sizeBytes)).guest;

/** The DPI a manifest directory's processing_config may ask for; the JPEG settings are the TIFF phase's. */
const PdfConfig = z.looseObject({
  pdf_render_dpi: z.number({ message: "pdf_render_dpi must be a number" }).int("pdf_render_dpi must be a whole number").min(36, "pdf_render_dpi must be 36–1200").max(1200, "pdf_render_dpi must be 36–1200").optional(),
});

function settingsOf(processingConfig: unknown): { ok: true; env: Record<string, string> } | { ok: false; error: string } {
  const jpeg = conversionSettings(processingConfig);
  if (!jpeg.ok) return jpeg;
  if (processingConfig === undefined || processingConfig === null) return { ok: true, env: {} };
  const parsed = PdfConfig.safeParse(processingConfig);
  if (!parsed.success) return { ok: false, error: `processing_config is invalid: ${[...new Set(parsed.error.issues.map((i) => i.message))].join("; ")}` };
  const dpi = parsed.data.pdf_render_dpi;
  return { ok: true, env: { ...(jpeg.env as Record<string, string>), ...(dpi !== undefined ? { PDF_RENDER_DPI: String(dpi) } : {}) } };
}

const isCandidate = (file: PhaseFile) => !declaredPdf(file.r2_key, file.content_type) && undeclaredType(file.content_type);

export const pdfSplitting: Phase<PdfCallback> = {
  name: PDF_PHASE,
  slug: "pdf",
  // Output 1 is page 1's JPEG; pageContentType says each output's (odd: JPEG, even: PDF).
  outputContentType: JPEG_CONTENT_TYPE,
  // A large PDF renders page after page: an hour covers ~5,000 pages at 300 DPI on one CPU.
  limits: { bootTimeoutMs: 10 * 60_000, runTimeoutMs: 60 * 60_000 },
  sniff: { bytes: PDF_SIGNATURE_WINDOW, wants: isCandidate },

  plan(file, head) {
    const pdf = declaredPdf(file.r2_key, file.content_type) || (isCandidate(file) && head !== undefined && pdfSignatureAt(head) >= 0);
    if (!pdf) return null;
    const base = { input_key: file.r2_key, output_key_candidates: pdfFirstKeyCandidates(file.r2_key), size_bytes: file.file_size };
    const settings = settingsOf(file.processing_config);
    return settings.ok ? { ...base, params: settings.env } : { ...base, error: settings.error };
  },

  guest: pdfGuest,
  work: pdfWork,

  machine(task) {
    const env: Record<string, string> = {};
    for (const name of [...CONVERSION_ENV, "PDF_RENDER_DPI"]) if (task.params[name] !== undefined) env[name] = String(task.params[name]);
    return { env: { ...env, INPUT_R2_KEY: task.input_key, OUTPUT_R2_KEY: task.output_key, MEMORY_MB: String(pdfGuest(task.size_bytes).memory_mb) } };
  },

  callback: PdfCallback,
  pageKeyCandidates: pdfOutputKeyCandidates,
  pageContentType: (page) => pdfOutputOf(page).contentType,

  result(task, cb) {
    if (cb.status === "error") return { ok: false, error: cb.error, retryable: cb.retryable !== false };
    if (cb.input.r2_key !== task.input_key) {
      return { ok: false, error: `callback split ${cb.input.r2_key}, but this task's input is ${task.input_key}`, retryable: false };
    }
    if (cb.output_r2_key !== cb.outputs[0].r2_key) {
      return { ok: false, error: `callback names ${cb.output_r2_key} as its first output but lists ${cb.outputs[0].r2_key} first`, retryable: false };
    }
    const dir = task.input_key.slice(0, task.input_key.lastIndexOf("/") + 1);
    // The engine checks every key is reserved for this task and exists with its size.
    const add: FileEntry[] = cb.outputs.map((o) => ({
      r2_key: o.r2_key,
      logical_path: dir + fileName(o.r2_key),
      file_name: fileName(o.r2_key),
      file_size: o.file_size,
      content_type: o.content_type,
      source_r2_key: task.input_key,
      source_page: o.page,
      ...(o.content_type === "image/jpeg" ? { dpi: cb.dpi } : {}),
    }));
    const skipped = cb.pages_skipped ?? [];
    const warnings = skipped.map((s) => `page ${s.page}: no JPEG: ${s.reason}`);
    if (cb.input.encryption === "owner-password") warnings.push("the PDF has an owner password (no password to open it): its single-page PDFs are written without encryption");
    return warnings.length > 0 ? { ok: true, add, warnings } : { ok: true, add };
  },
};
