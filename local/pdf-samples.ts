// PDFs made here, for the tests, the bench and the demo: text pages, full-page scans (each its own
// embedded JPEG, as a scanner writes them), rotated pages, mixed page sizes, and the broken kinds the
// PDF job must refuse by name (encrypted, truncated, no pages, a page past JPEG's size limit).
import { degrees, PDFDocument, rgb, StandardFonts } from "@cantoo/pdf-lib";
import sharp from "sharp";

/** Page sizes in PDF points (1/72 inch). */
export const PAGE = {
  letter: [612, 792],
  a4: [595.28, 841.89],
  a3Landscape: [1190.55, 841.89],
  card: [252, 144],
} as const satisfies Record<string, readonly [number, number]>;

export interface PageSpec {
  size?: readonly [number, number];
  /** A full-page scan (an embedded JPEG of this colour, with noise so it compresses like one) instead of text. */
  scan?: { r: number; g: number; b: number; dpi?: number };
  /** /Rotate of the page: 90 shows a portrait page as landscape. */
  rotate?: 0 | 90 | 180 | 270;
  /** Text drawn on the page (its number when absent). */
  text?: string;
}

const scanCache = new Map<string, Promise<Buffer>>();

/** A scan-like JPEG of the page's size at `dpi` (150 by default): a colour with noise, q75 (the same bytes for the same arguments). */
export function scanJpeg(width: number, height: number, c: NonNullable<PageSpec["scan"]>): Promise<Buffer> {
  const dpi = c.dpi ?? 150;
  const w = Math.round((width / 72) * dpi);
  const h = Math.round((height / 72) * dpi);
  const key = `${w}x${h}:${c.r},${c.g},${c.b}`;
  let jpeg = scanCache.get(key);
  if (!jpeg) {
    jpeg = sharp({ create: { width: w, height: h, channels: 3, background: "#000", noise: { type: "gaussian", mean: 0, sigma: 8 } } })
      // The noise is centred on black: lift it to the paper's colour.
      .linear([1, 1, 1], [c.r, c.g, c.b])
      .jpeg({ quality: 75 })
      .toBuffer();
    scanCache.set(key, jpeg);
  }
  return jpeg;
}

/** A PDF of `pages`; each scan page embeds its own copy of its image (a distinct object, as scanners write). */
export async function makePdf(pages: PageSpec[], options: { encrypt?: { userPassword: string; ownerPassword: string } } = {}): Promise<Uint8Array> {
  const doc = await PDFDocument.create();
  const font = await doc.embedFont(StandardFonts.Helvetica);
  for (const [i, spec] of pages.entries()) {
    const [w, h] = spec.size ?? PAGE.letter;
    const page = doc.addPage([w, h]);
    if (spec.scan) {
      const image = await doc.embedJpg(await scanJpeg(w, h, spec.scan));
      page.drawImage(image, { x: 0, y: 0, width: w, height: h });
    }
    const size = Math.min(24, h / 6);
    page.drawText(spec.text ?? `Page ${i + 1}`, { x: Math.min(72, w / 8), y: h - 2 * size, size, font, color: rgb(0, 0, 0) });
    if (!spec.scan) {
      for (let line = 0; line < 30 && h - (4 + line) * 14 > 36; line++) {
        page.drawText(`Line ${line + 1} of page ${i + 1}: the quick brown fox jumps over the lazy dog.`, { x: Math.min(72, w / 8), y: h - 4 * size - line * 14, size: 10, font });
      }
    }
    if (spec.rotate) page.setRotation(degrees(spec.rotate));
  }
  if (options.encrypt) doc.encrypt(options.encrypt);
  return doc.save({ addDefaultPage: false });
}

/** `n` text pages (Letter). */
export const textPdf = (n: number) => makePdf(Array.from({ length: n }, () => ({})));

const SCAN_COLOURS = [
  { r: 236, g: 228, b: 210 },
  { r: 200, g: 215, b: 230 },
  { r: 225, g: 205, b: 200 },
];

/** `n` full-page scans (Letter, images at `dpi`, a few paper colours). */
export const scanPdf = (n: number, dpi = 150) => makePdf(Array.from({ length: n }, (_, i) => ({ scan: { ...SCAN_COLOURS[i % SCAN_COLOURS.length], dpi } })));

/** A PDF with no pages at all (an empty page tree). */
export const zeroPagePdf = () => makePdf([]);

/** The first `fraction` of a PDF's bytes, as a cut download or a truncated upload leaves it. */
export const truncate = (pdf: Uint8Array, fraction: number) => pdf.subarray(0, Math.floor(pdf.byteLength * fraction));
