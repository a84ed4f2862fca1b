// The PDF_SPLITTING phase's contract, shared by the orchestrator's phase (orchestrator/phases/pdf-splitting.ts)
// and the fly-worker's PDF job (fly-worker/pdf.ts): its name, how a PDF is recognised, the output keys
// (a JPEG and a single-page PDF per page, in that order), the settings and the callback.
import { z } from "zod";
import { ObjectKey, PhaseCallbackError, SuccessCore } from "./contracts.ts";
import { splitExtension } from "./keys.ts";

/** The phase name; a machine whose env says PHASE=PDF_SPLITTING runs the PDF job. */
export const PDF_PHASE = "PDF_SPLITTING";

export const PDF_CONTENT_TYPE = "application/pdf";
export const JPEG_CONTENT_TYPE = "image/jpeg";

/**
 * ISO 32000-1 §7.5.2 puts `%PDF-` first; readers (Acrobat, pdf.js, poppler) accept it anywhere in the
 * first 1,024 bytes, after a mail header or a BOM, so a sniffer reads that much.
 */
export const PDF_SIGNATURE_WINDOW = 1024;
const SIGNATURE = [0x25, 0x50, 0x44, 0x46, 0x2d]; // %PDF-

/** Where `%PDF-` starts within the first PDF_SIGNATURE_WINDOW bytes, or -1. */
export function pdfSignatureAt(head: Uint8Array): number {
  const end = Math.min(head.length, PDF_SIGNATURE_WINDOW) - SIGNATURE.length;
  outer: for (let i = 0; i <= end; i++) {
    for (let j = 0; j < SIGNATURE.length; j++) if (head[i + j] !== SIGNATURE[j]) continue outer;
    return i;
  }
  return -1;
}

const mediaType = (contentType: string | undefined) => contentType?.toLowerCase().split(";")[0].trim() ?? "";

/** Declared a PDF: by content type, or by a `.pdf` name. */
export function declaredPdf(key: string, contentType?: string): boolean {
  return mediaType(contentType) === PDF_CONTENT_TYPE || /\.pdf$/i.test(key);
}

/**
 * Content types that say nothing about the bytes: such a file may be a PDF whatever its name, and its
 * first bytes are read to tell (a file declared anything else, `image/tiff` say, is taken at its word).
 */
export function undeclaredType(contentType?: string): boolean {
  const t = mediaType(contentType);
  return t === "" || t === "application/octet-stream" || t === "binary/octet-stream" || t === "application/unknown";
}

/** DPI a PDF page is rendered at unless the manifest directory's processing_config says otherwise. */
export const DEFAULT_RENDER_DPI = 300;
/**
 * Pages per PDF. Each page is two outputs, each reserved, HEADed by the orchestrator (one subrequest)
 * and listed in the callback (≤ 1 MiB): 2,000 pages = 4,000 outputs, under Workers' 10,000
 * subrequests per invocation and, at ~130 bytes an output, ~520 KB of callback.
 */
export const MAX_PDF_PAGES = 2000;

/** Output keys of page 1's JPEG, most preferred first: `report-p001.jpg`, `report.pdf-p001.jpg`, `report-2-p001.jpg`, … */
export function* pdfFirstKeyCandidates(inputKey: string): Generator<string> {
  const { stem, ext } = splitExtension(inputKey);
  yield `${stem}-p001.jpg`;
  if (ext) yield `${stem}${ext.toLowerCase()}-p001.jpg`;
  for (let n = 2; n < 1000; n++) yield `${stem}-${n}-p001.jpg`;
}

/** Output n (1-based) of a PDF task: odd outputs are page ⌈n/2⌉'s JPEG, even ones its single-page PDF. */
export function pdfOutputOf(n: number): { page: number; kind: "jpeg" | "pdf"; contentType: string } {
  const page = Math.ceil(n / 2);
  return n % 2 === 1 ? { page, kind: "jpeg", contentType: JPEG_CONTENT_TYPE } : { page, kind: "pdf", contentType: PDF_CONTENT_TYPE };
}

/** Outputs of page `page` (1-based): its JPEG's and its PDF's output numbers. */
export const pdfOutputsOfPage = (page: number) => ({ jpeg: 2 * page - 1, pdf: 2 * page });

/**
 * Keys for output n, derived from the task's first key (`report-p001.jpg`): `report-p002.jpg` /
 * `report-p002.pdf`, then `report-p002-2.jpg`, … when one is taken.
 */
export function* pdfOutputKeyCandidates(firstKey: string, n: number): Generator<string> {
  const base = firstKey.replace(/-p001\.jpg$/, "");
  const { page, kind } = pdfOutputOf(n);
  const stem = `${base}-p${String(page).padStart(3, "0")}`;
  const ext = kind === "jpeg" ? ".jpg" : ".pdf";
  yield `${stem}${ext}`;
  for (let k = 2; k < 1000; k++) yield `${stem}-${k}${ext}`;
}

const PdfOutput = z.looseObject({
  r2_key: ObjectKey,
  file_size: z.number().int().nonnegative(),
  content_type: z.enum([JPEG_CONTENT_TYPE, PDF_CONTENT_TYPE]),
  /** The PDF page it was made from (1-based). */
  page: z.number().int().positive(),
  width: z.number().int().positive().optional(),
  height: z.number().int().positive().optional(),
});
export type PdfOutput = z.infer<typeof PdfOutput>;

/**
 * Success: the first output in the generic fields, then every output (each page's JPEG and PDF), the
 * pages whose JPEG could not be made (their PDF was still written), the settings used and the input.
 */
export const PdfSuccess = SuccessCore.extend({
  outputs: z.array(PdfOutput).min(1).max(2 * MAX_PDF_PAGES),
  pages: z.number().int().positive().max(MAX_PDF_PAGES),
  pages_skipped: z.array(z.object({ page: z.number().int().positive(), reason: z.string().min(1).max(1000) })).max(MAX_PDF_PAGES).optional(),
  dpi: z.number().int().positive(),
  jpeg: z.looseObject({ quality: z.number().int().min(1).max(100), chroma: z.enum(["4:2:0", "4:4:4"]), mozjpeg: z.boolean() }),
  input: z.looseObject({
    r2_key: ObjectKey,
    bytes: z.number().int().nonnegative(),
    /** `owner-password`: opened without a password; its pages are written decrypted. */
    encryption: z.enum(["none", "owner-password"]),
  }),
});
export const PdfError = PhaseCallbackError;
export const PdfCallback = z.discriminatedUnion("status", [PdfSuccess, PdfError]);
export type PdfSuccess = z.infer<typeof PdfSuccess>;
export type PdfCallback = z.infer<typeof PdfCallback>;
