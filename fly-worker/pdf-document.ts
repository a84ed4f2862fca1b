// A PDF as the PDF job sees it: opened and checked with pdf.js (pdfjs-dist), each page rendered on a
// @napi-rs/canvas and encoded with sharp under the TIFF phase's JPEG settings, and each page copied
// with its own objects into a single-page PDF by @cantoo/pdf-lib. One page in memory at a time.
import { readFile, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { EncryptedPDFError, PDFDocument } from "@cantoo/pdf-lib";
import { createCanvas } from "@napi-rs/canvas";
import { getDocument, type PDFDocumentLoadingTask, type PDFDocumentProxy, type PDFPageProxy } from "pdfjs-dist/legacy/build/pdf.mjs";
import sharp from "sharp";
import { MEMORY_MODEL, memoryBudgetMb } from "./convert.ts";
import { TaskError, errorMessage } from "./errors.ts";

// pdf.js reads its font, CMap and decoder files from disk in Node (node_utils_fetchData): point it at the package's.
const PDFJS_DIR = `${dirname(createRequire(import.meta.url).resolve("pdfjs-dist/package.json"))}/`;

/** JPEG's frame header holds width and height in 16 bits (ITU T.81 §B.2.2): 65,535 pixels a side at most. */
export const JPEG_MAX_SIDE = 65_535;

/**
 * Measured on generated PDFs (bench/pdf-one.ts under GNU time, 10 Letter scan pages at 72/150/300/600 DPI:
 * 272/323/418/689 MB peak): ~13 B per rendered pixel over ~270 MB of Node, sharp, pdf.js and Skia — the
 * canvas (4 B/px), the images pdf.js decodes for the page, the canvas's pixels copied out for sharp
 * (4 B/px), then mozjpeg's buffers (convert.ts MEMORY_MODEL). Rounded up here; the file is held besides.
 */
export const PDF_MEMORY_MODEL = {
  /** Node, sharp, pdf.js, pdf-lib and Skia loaded, before any page. */
  baseMb: 320,
  /** Bytes per rendered pixel at the peak of a page with the buffered (mozjpeg) encoder. */
  bufferedBytesPerPixel: 13.5,
  /** … with the streaming baseline encoder (no whole-image buffer). */
  streamingBytesPerPixel: 8,
  /**
   * What the open documents keep per page: 1,000 pages (72 DPI, split and rendered) peaked 115 MB (text)
   * and 130 MB (scans, less their 88 MB file) above 10 pages.
   */
  perPageMb: 0.13,
} as const;

export interface RenderSettings {
  dpi: number;
  quality: number;
  mozjpeg: boolean;
  chroma: "4:2:0" | "4:4:4";
  machineMb: number;
}

export interface OpenedPdf {
  doc: PDFDocumentProxy;
  pages: number;
  close(): Promise<void>;
}

/** pdf.js types its canvas as the DOM's; in Node it draws on @napi-rs/canvas, which implements the same 2D API. */
type PdfCanvas = Parameters<PDFPageProxy["render"]>[0]["canvas"];

/** Whole pixels covering `v`, ignoring float noise: 792 pt × 300/72 is 3300.0000000000005, which is 3300 pixels, not 3301. */
export const pixels = (v: number) => Math.ceil(Math.round(v * 1e6) / 1e6);

const refuse = (message: string) => new TaskError("input", message, { retryable: false });

/** Opens `bytes` (taken: pdf.js keeps the buffer) with pdf.js; a TaskError says what is wrong with the file. */
export async function openPdf(bytes: Uint8Array): Promise<OpenedPdf> {
  if (bytes.byteLength === 0) throw refuse("the PDF is empty (0 bytes)");
  const task: PDFDocumentLoadingTask = getDocument({
    data: bytes,
    // Errors only: pdf.js's warnings about a lenient parse go nowhere near the task's log.
    verbosity: 0,
    enableXfa: false,
    standardFontDataUrl: join(PDFJS_DIR, "standard_fonts/"),
    cMapUrl: join(PDFJS_DIR, "cmaps/"),
    cMapPacked: true,
    wasmUrl: join(PDFJS_DIR, "wasm/"),
    iccUrl: join(PDFJS_DIR, "iccs/"),
  });
  let doc: PDFDocumentProxy;
  try {
    doc = await task.promise;
  } catch (error) {
    await task.destroy().catch(() => {});
    throw describeOpenError(error);
  }
  if (doc.numPages === 0) {
    await task.destroy();
    throw refuse("the PDF has no pages (its page tree is empty)");
  }
  return { doc, pages: doc.numPages, close: () => task.destroy() };
}

/** pdf.js's exceptions as a sentence for the operator. */
export function describeOpenError(error: unknown): TaskError {
  const name = error instanceof Error ? error.name : "";
  const message = errorMessage(error);
  if (name === "PasswordException") {
    return refuse("the PDF is encrypted and needs a password to open; export it without a password (an owner password alone is fine)");
  }
  if (name === "InvalidPDFException") return refuse(`the PDF is damaged or truncated: pdf.js could not read its structure (${message})`);
  return refuse(`the PDF could not be opened: ${message}`);
}

export interface PagePlan {
  page: number;
  width: number;
  height: number;
  rotate: number;
  mozjpeg: boolean;
  estimatedPeakMb: number;
  /** Why the JPEG cannot be made (the page's PDF still is), or null. */
  skip: string | null;
}

/**
 * Every page's pixel size at `dpi` and the encoder that fits the machine, before anything is written:
 * a page past JPEG's side limit is skipped (no machine could encode it); a page that fits no encoder on
 * this machine fails the task (a larger machine or a lower DPI would do it).
 */
export async function planPages(pdf: OpenedPdf, s: RenderSettings, fileBytes: number): Promise<PagePlan[]> {
  const budget = memoryBudgetMb(s.machineMb);
  const held = PDF_MEMORY_MODEL.baseMb + Math.ceil(fileBytes / 1024 / 1024 + pdf.pages * PDF_MEMORY_MODEL.perPageMb);
  const plans: PagePlan[] = [];
  for (let n = 1; n <= pdf.pages; n++) {
    let page;
    try {
      page = await pdf.doc.getPage(n);
    } catch (error) {
      throw refuse(`the PDF is damaged: page ${n} of ${pdf.pages} cannot be read (${errorMessage(error)})`);
    }
    const viewport = page.getViewport({ scale: s.dpi / 72 });
    const width = pixels(viewport.width);
    const height = pixels(viewport.height);
    page.cleanup();
    const mp = (width * height) / 1024 / 1024;
    const buffered = held + Math.ceil(mp * PDF_MEMORY_MODEL.bufferedBytesPerPixel);
    const streaming = held + Math.ceil(mp * PDF_MEMORY_MODEL.streamingBytesPerPixel);
    const base = { page: n, width, height, rotate: page.rotate };
    if (width > JPEG_MAX_SIDE || height > JPEG_MAX_SIDE) {
      const points = `${Math.round(viewport.width / (s.dpi / 72))}×${Math.round(viewport.height / (s.dpi / 72))} pt`;
      plans.push({ ...base, mozjpeg: false, estimatedPeakMb: 0, skip: `is ${width}×${height} pixels at ${s.dpi} DPI (${points}), past JPEG's limit of ${JPEG_MAX_SIDE.toLocaleString("en")} pixels a side; no JPEG made (lower pdf_render_dpi to get one)` });
      continue;
    }
    if (s.mozjpeg && buffered <= budget) plans.push({ ...base, mozjpeg: true, estimatedPeakMb: buffered, skip: null });
    else if (streaming <= budget) plans.push({ ...base, mozjpeg: false, estimatedPeakMb: streaming, skip: null });
    else {
      throw new TaskError(
        "resources",
        `page ${n} is ${width}×${height} pixels at ${s.dpi} DPI and needs ~${streaming} MB to render and encode even with the streaming encoder; ` +
          `the budget is ${budget} MB (${MEMORY_MODEL.usableFraction * 100}% of ${s.machineMb} MB). Run it on a larger machine (MEMORY_MB) or lower pdf_render_dpi.`,
        { retryable: false },
      );
    }
  }
  return plans;
}

export interface RenderedPage {
  width: number;
  height: number;
  bytes: number;
  render_ms: number;
  encode_ms: number;
}

/**
 * Renders `plan.page` on a white canvas at the plan's size (rotation applied as the page says) and
 * writes it as a JPEG at `output`: quality, chroma and mozjpeg as the TIFF phase encodes.
 */
export async function renderPage(pdf: OpenedPdf, plan: PagePlan, s: RenderSettings, output: string): Promise<RenderedPage> {
  const t0 = performance.now();
  const page = await pdf.doc.getPage(plan.page);
  const viewport = page.getViewport({ scale: s.dpi / 72 });
  const canvas = createCanvas(plan.width, plan.height);
  let rgba: Buffer;
  try {
    // pdf.js paints the white background itself (RenderParameters.background); the canvas is only its surface.
    await page.render({ canvas: canvas as unknown as PdfCanvas, viewport, background: "rgb(255,255,255)" }).promise;
    rgba = canvas.data();
  } catch (error) {
    throw refuse(`page ${plan.page} could not be rendered: ${errorMessage(error)}`);
  } finally {
    page.cleanup();
    // Skia's surface is native memory the JS heap does not see: free it now, not at some later GC.
    canvas.width = 0;
    canvas.height = 0;
  }
  const t1 = performance.now();
  try {
    const info = await sharp(rgba, { raw: { width: plan.width, height: plan.height, channels: 4 } })
      .removeAlpha()
      .jpeg({ quality: s.quality, mozjpeg: plan.mozjpeg, optimiseCoding: plan.mozjpeg, chromaSubsampling: s.chroma })
      .withMetadata({ density: s.dpi })
      .toFile(output);
    return { width: info.width, height: info.height, bytes: info.size, render_ms: Math.round(t1 - t0), encode_ms: Math.round(performance.now() - t1) };
  } catch (error) {
    throw new TaskError("internal", `page ${plan.page} rendered but could not be encoded as JPEG: ${errorMessage(error)}`);
  }
}

/** What pdf-lib makes of the file: its pages, and whether it was encrypted with an owner password only. */
export interface Splitter {
  pages: number;
  encryption: "none" | "owner-password";
  /** Writes page `page` (1-based), with the objects it uses and nothing else, as a one-page PDF at `output`. */
  writePage(page: number, output: string): Promise<number>;
}

/** Loads the PDF at `path` with pdf-lib for splitting; a file pdf.js opened but pdf-lib cannot is damaged. */
export async function openSplitter(path: string): Promise<Splitter> {
  const bytes = await readFile(path);
  let source: PDFDocument;
  let encryption: Splitter["encryption"] = "none";
  try {
    try {
      source = await PDFDocument.load(bytes, { updateMetadata: false });
    } catch (error) {
      if (!(error instanceof EncryptedPDFError)) throw error;
      // An empty password opens a file whose only password is the owner's (permissions, not secrecy).
      source = await PDFDocument.load(bytes, { password: "", updateMetadata: false });
      encryption = "owner-password";
    }
  } catch (error) {
    const message = errorMessage(error);
    if (/NEEDS PASSWORD/i.test(message)) throw describeOpenError(Object.assign(new Error(message), { name: "PasswordException" }));
    throw refuse(`the PDF is damaged: its objects cannot be copied page by page (${message})`);
  }
  return {
    pages: source.getPageCount(),
    encryption,
    async writePage(page, output) {
      const single = await PDFDocument.create({ updateMetadata: false });
      const [copy] = await single.copyPages(source, [page - 1]);
      single.addPage(copy);
      const out = await single.save({ useObjectStreams: true });
      await writeFile(output, out);
      return out.byteLength;
    },
  };
}
