// What a page is and how it becomes an sRGB JPEG: read by libvips as it is, rewritten first
// (rewrite.ts, ojpeg.ts) when libvips cannot read it as stored, or refused — only when no decoder
// the worker has (libvips, libtiff, its own chunk decoders) reads it — with what to do instead.
// Each rule is a row of the README's "Supported TIFF kinds" table.
import { TaskError } from "./errors.ts";
import type { RebuildPlan } from "./rewrite.ts";
import { pageNumber, type TiffDirectory } from "./tiff.ts";

export type Preparation = { step: "transcode" } | { step: "rebuild"; plan: RebuildPlan } | { step: "ojpeg" } | { step: "float-range" };

/** How a page decodes: what it is made of, and what the pipeline must do with it. */
export interface PageKind {
  /** Greyscale or bilevel (one colour sample, not palette): a 1-band JPEG unless JPEG_COLOUR=rgb. */
  grey: boolean;
  /** The first extra sample is associated or unassociated alpha: flattened on white. */
  alpha: boolean;
  /** Extra samples that are not alpha (ExtraSamples = 0, "unspecified"): dropped, never used as alpha. */
  dropExtras: boolean;
  /** 32-bit unsigned samples: scaled to their top 8 bits (libvips would read them as signed). */
  scale32: boolean;
  /** Signed samples: mapped to display levels from the page's minimum (levels.ts, in convert.ts). */
  levels?: { format: "signed"; bits: number };
  /** Floating-point grey: value × scale + offset, worked out from the page's range when it was prepared (levels.ts). */
  linear?: { scale: number; offset: number };
  /** The page must be rewritten before libvips can read it. */
  prepare?: Preparation;
}

/** JPEG's frame header holds width and height in 16 bits (ITU-T T.81 §B.2.2); libjpeg refuses more. */
export const JPEG_MAX_DIMENSION = 65_535;

/** Colour samples per pixel for each PhotometricInterpretation; more samples are extra samples. */
const COLOUR_SAMPLES: Record<number, number> = { 0: 1, 1: 1, 2: 3, 3: 1, 4: 1, 5: 4, 6: 3, 8: 3, 9: 3, 10: 3, 32844: 1, 32845: 3 };
/** Compression schemes sharp's libtiff decodes. */
const DECODABLE = new Set([1, 2, 3, 4, 5, 7, 8, 32773, 32809, 32946, 50001]);
/** Decoded by the worker itself (chunks.ts) into an uncompressed copy of the page. */
const TRANSCODED = new Set([34925, 50000]);
const SGILOG = new Set([34676, 34677]);
const COMPRESSION_NAMES: Record<number, string> = {
  34661: "JBIG",
  34712: "JPEG 2000",
  34887: "LERC",
  34892: "lossy JPEG (DNG)",
  50002: "JPEG XL",
};
const EXPORT_ADVICE = "export the scan again as an 8- or 16-bit RGB or greyscale TIFF";

const refuse = (page: TiffDirectory, why: string) => new TaskError("input", `page ${pageNumber(page)} ${why}`, { retryable: false });

/**
 * What the page is and how to decode it; a TaskError for a page nothing can read (or that would
 * decode into a silently wrong picture), saying why and what to do.
 */
export function inspectPage(page: TiffDirectory, maxPixels: number): PageKind {
  const spp = page.samplesPerPixel;
  if (spp < 1 || spp > 32) throw refuse(page, `is corrupt: SamplesPerPixel is ${spp}`);
  if (page.bitsPerSample < 1 || page.bitsPerSample > 64) throw refuse(page, `is corrupt: BitsPerSample is ${page.bitsPerSample}`);
  const pixels = page.width * page.height;
  if (pixels > maxPixels) {
    throw new TaskError(
      "resources",
      `page ${pageNumber(page)} is ${page.width}×${page.height} = ${pixels.toLocaleString("en")} pixels, over the limit of ` +
        `${maxPixels.toLocaleString("en")} (MAX_INPUT_PIXELS, default sized for the machine's memory)`,
      { retryable: false },
    );
  }
  if (page.width > JPEG_MAX_DIMENSION || page.height > JPEG_MAX_DIMENSION) {
    throw refuse(
      page,
      `is ${page.width.toLocaleString("en")}×${page.height.toLocaleString("en")} pixels, and a JPEG can be at most ${JPEG_MAX_DIMENSION.toLocaleString("en")} pixels wide and high; ` +
        `crop or split the scan into parts of at most ${JPEG_MAX_DIMENSION.toLocaleString("en")} pixels a side, or keep this page in a format without that limit (TIFF, PNG)`,
    );
  }
  const bits = page.bitsPerSample;
  const photometric = page.photometric;
  let prepare: Preparation | undefined;
  if (page.compression === 6) {
    if (bits !== 8 || (spp !== 1 && spp !== 3) || page.planar === 2) {
      throw refuse(page, `is old-style JPEG (Compression 6) with ${spp}×${bits}-bit samples${page.planar === 2 ? " in separate planes" : ""}, a layout no decoder here reads; convert it with libtiff's tiff2rgba or re-save it with new-style JPEG (Compression 7)`);
    }
    return { grey: spp === 1, alpha: false, dropExtras: false, scale32: false, prepare: { step: "ojpeg" } };
  }
  // Decompressed first; the copy is inspected again for everything else.
  if (TRANSCODED.has(page.compression)) return { grey: false, alpha: false, dropExtras: false, scale32: false, prepare: { step: "transcode" } };
  if (!DECODABLE.has(page.compression) && !SGILOG.has(page.compression)) {
    const name = COMPRESSION_NAMES[page.compression];
    throw refuse(
      page,
      `uses ${name ? `${name} compression (Compression ${page.compression})` : `Compression ${page.compression}`}, which neither libvips nor libtiff as built here (nor the worker's own decoders) can read; ` +
        "re-save it uncompressed or with LZW, Deflate or JPEG compression",
    );
  }
  if (SGILOG.has(page.compression) !== (photometric === 32844 || photometric === 32845)) {
    throw refuse(page, `is corrupt: SGILog compression (Compression ${page.compression}) belongs to LogLuv/LogL pages, and this one has PhotometricInterpretation ${photometric ?? "missing"}`);
  }
  if (photometric === 32845) {
    // libtiff's SGILog codec decodes LogLuv to CIE XYZ; libvips converts XYZ to sRGB.
    return { grey: false, alpha: false, dropExtras: false, scale32: false };
  }
  if (photometric === 32844) {
    if (page.compression !== 34676) throw refuse(page, `is corrupt: a LogL page must use SGILog compression (34676), this one uses ${page.compression}`);
    return { grey: true, alpha: false, dropExtras: false, scale32: false, prepare: { step: "rebuild", plan: { keepSamples: 1, extraSamples: [], recode: "logl" } } };
  }
  if (photometric === 8 || photometric === 9) {
    if (bits === 8) {
      const plan: RebuildPlan = { keepSamples: 3, extraSamples: [], recode: photometric === 8 ? "cielab8" : "icclab8" };
      return { grey: false, alpha: false, dropExtras: false, scale32: false, prepare: { step: "rebuild", plan } };
    }
    // 16-bit and float CIELab libvips reads itself (LabS, Lab).
    if (photometric === 8 && (bits === 16 || (bits === 32 && page.sampleFormat === 3)) && spp === 3) return { grey: false, alpha: false, dropExtras: false, scale32: false };
    throw refuse(page, `is ${bits}-bit ${photometric === 8 ? "CIELab" : "ICCLab"} with ${spp} samples, an encoding no decoder here reads (8-bit CIELab/ICCLab and 16-bit or float CIELab are read); export the scan as RGB`);
  }
  if (photometric === 10) throw refuse(page, "is ITULab (PhotometricInterpretation 10), which neither libvips nor libtiff reads; export the scan as RGB or CIELab");
  let levels: PageKind["levels"];
  const float = page.sampleFormat === 3;
  if (page.sampleFormat === 2 || float) {
    const readable = float ? bits === 32 : bits === 8 || bits === 16 || bits === 32;
    if (!readable) throw refuse(page, `has ${bits}-bit ${float ? "floating-point" : "signed integer"} samples, which libvips cannot read (it reads ${float ? "32-bit floats" : "8-, 16- and 32-bit signed integers"}) and libtiff's RGBA reader refuses; ${EXPORT_ADVICE}`);
    if (!float) levels = { format: "signed", bits };
  } else if (page.sampleFormat !== 1) {
    throw refuse(page, `has SampleFormat ${page.sampleFormat} (${page.sampleFormat === 4 ? "untyped" : page.sampleFormat === 5 || page.sampleFormat === 6 ? "complex" : "unknown"} samples), which no picture decoder reads; ${EXPORT_ADVICE}`);
  }
  const colourSamples = photometric === undefined ? (spp >= 3 ? 3 : 1) : (COLOUR_SAMPLES[photometric] ?? 0);
  if (colourSamples === 0) throw refuse(page, `has PhotometricInterpretation ${photometric}, which no decoder here reads; ${EXPORT_ADVICE}`);
  if (spp < colourSamples) throw refuse(page, `is corrupt: PhotometricInterpretation ${photometric} needs ${colourSamples} samples per pixel, the page has ${spp}`);
  const lowBitGrey = bits < 8 && (bits === 1 || bits === 2 || bits === 4) && colourSamples === 1;
  if (bits !== 8 && bits !== 16 && bits !== 32 && !lowBitGrey) {
    throw refuse(
      page,
      `has ${bits}-bit samples, which neither libvips nor libtiff reads (they read 8-, 16- and 32-bit samples, and 1-, 2- or 4-bit greyscale or palette); ` +
        "export the scan as 8- or 16-bit",
    );
  }
  const extras = spp - colourSamples;
  // Without an ExtraSamples tag a single extra sample is taken as alpha, as libvips does.
  const alpha = extras > 0 && (page.extraSamples.length === 0 ? extras === 1 : page.extraSamples[0] === 1 || page.extraSamples[0] === 2);
  if ((bits === 32 || levels || float) && extras > 0) {
    throw refuse(page, `has ${bits}-bit ${float ? "floating-point " : levels ? "signed " : ""}samples with ${extras} extra sample(s), which libvips reads without a defined alpha scale; ${EXPORT_ADVICE}`);
  }
  const tiledPlanes = page.planar === 2 && page.tileWidth !== undefined;
  let keep = spp;
  if (alpha && extras > 1) keep = colourSamples + 1; // the alpha stays, the samples after it go
  if (tiledPlanes || keep < spp) {
    if (bits % 8 !== 0) throw refuse(page, `has ${bits}-bit samples ${tiledPlanes ? "in tiled separate planes" : "with several extra samples"}, a layout no decoder here reads; ${EXPORT_ADVICE}`);
    const extraSamples = keep > colourSamples ? [page.extraSamples[0] ?? 2] : [];
    prepare = { step: "rebuild", plan: { keepSamples: keep, extraSamples } };
  }
  const grey = colourSamples === 1 && photometric !== 3;
  if (float && !prepare) {
    // The range rule (levels.ts) needs the page's range, read by the worker's own decoder (libvips' statistics round it).
    const mapped = grey || (colourSamples === 3 && (photometric === 2 || photometric === undefined)) || (colourSamples === 4 && photometric === 5);
    if (!mapped) throw refuse(page, `has floating-point samples with PhotometricInterpretation ${photometric}, which no decoder here turns into colours; ${EXPORT_ADVICE}`);
    prepare = { step: "float-range" };
  }
  return { grey, alpha, dropExtras: extras > 0 && !alpha, scale32: bits === 32 && page.sampleFormat === 1, levels, prepare };
}
