// One TIFF page → one sRGB JPEG on disk, with encoder settings chosen so the process fits
// the machine's memory. The memory model is measured, not guessed (see MEMORY_MODEL).
import sharp from "sharp";
import { TaskError, errorMessage } from "./errors.ts";
import type { TiffDirectory } from "./tiff.ts";

// Measured with sharp 0.35 / libvips 8.18 on a 50.5 MP LZW TIFF, file input, MALLOC_ARENA_MAX=2:
// the whole worker peaks at 160 MB with the streaming baseline encoder and 458 MB with mozjpeg
// (optimiseCoding or trellis alone buffer the same), i.e. ≈ 5.9 bytes per pixel in the encoder;
// a 90° turn adds one decoded copy (3 B/px for RGB8).
export const MEMORY_MODEL = {
  /** Node + sharp + AWS SDK + libvips line buffers, measured peak of the streaming path. */
  baseMb: 160,
  /** Coefficient buffer of an encoder that makes more than one pass (mozjpeg, optimiseCoding). */
  bufferedEncoderBytesPerPixel: 6.5,
  /** Share of the machine's memory the worker plans to use (kernel, page cache, slack). */
  usableFraction: 0.8,
} as const;

export interface EncoderSettings {
  quality: number;
  mozjpeg: boolean;
  optimise_coding: boolean;
  chroma_subsampling: "4:2:0" | "4:4:4";
  /** Why these settings: the requested ones, or the memory fallback and its numbers. */
  reason: string;
  estimated_peak_mb: number;
  memory_budget_mb: number;
}

const BYTES_PER_SAMPLE: Record<number, number> = { 1: 1, 2: 1, 4: 1, 8: 1, 16: 2, 32: 4, 64: 8 };

const mb = (bytes: number) => Math.ceil(bytes / 1024 / 1024);

/** Memory a page needs outside the encoder: a whole decoded strip, plus a copy if turned. */
function decodeBytes(page: TiffDirectory): number {
  const pixelBytes = page.samplesPerPixel * (BYTES_PER_SAMPLE[page.bitsPerSample] ?? 2);
  const strip = page.tileWidth ? page.tileWidth * (page.tileHeight ?? 1) : (page.rowsPerStrip ?? page.height) * page.width;
  // A tile row of the image is held while the loader walks tiled files line by line.
  const held = page.tileWidth ? page.width * (page.tileHeight ?? 1) : strip;
  const rotated = page.orientation > 1 ? page.width * page.height : 0;
  return (held + rotated) * pixelBytes;
}

export function memoryBudgetMb(machineMb: number): number {
  return Math.floor(machineMb * MEMORY_MODEL.usableFraction);
}

/** sharp's own default limitInputPixels (0x3FFF × 0x3FFF). */
export const SHARP_DEFAULT_PIXEL_LIMIT = 268_402_689;

/**
 * The default pixel limit, a guard against decompression bombs: sharp's default, raised on
 * machines big enough to turn a larger 8-bit RGB image. Whether a page actually fits is
 * planEncoder's job, which knows its orientation and depth.
 */
export function defaultMaxInputPixels(machineMb: number): number {
  const spare = (memoryBudgetMb(machineMb) - MEMORY_MODEL.baseMb) * 1024 * 1024;
  return Math.max(SHARP_DEFAULT_PIXEL_LIMIT, Math.floor(spare / 3));
}

/**
 * The requested settings when they fit, else the streaming encoder (same quality, no
 * Huffman optimisation: ~30% larger files, flat memory); a TaskError when nothing fits.
 */
export function planEncoder(page: TiffDirectory, request: { quality: number; mozjpeg: boolean; chroma?: "4:2:0" | "4:4:4"; machineMb: number; machineMbSource: string }): EncoderSettings {
  const budget = memoryBudgetMb(request.machineMb);
  const pixels = page.width * page.height;
  const streaming = MEMORY_MODEL.baseMb + mb(decodeBytes(page));
  const buffered = streaming + mb(pixels * MEMORY_MODEL.bufferedEncoderBytesPerPixel);
  const base = { quality: request.quality, chroma_subsampling: request.chroma ?? "4:2:0", memory_budget_mb: budget };
  const requested = request.mozjpeg ? "mozjpeg" : "optimised baseline";
  if (buffered <= budget) {
    return { ...base, mozjpeg: request.mozjpeg, optimise_coding: true, estimated_peak_mb: buffered, reason: `requested (${requested})` };
  }
  if (streaming <= budget) {
    return {
      ...base,
      mozjpeg: false,
      optimise_coding: false,
      estimated_peak_mb: streaming,
      reason:
        `${requested} would need ~${buffered} MB for ${page.width}×${page.height}, over the ${budget} MB budget ` +
        `(${MEMORY_MODEL.usableFraction * 100}% of ${request.machineMb} MB from ${request.machineMbSource}): streaming baseline encoder used`,
    };
  }
  throw new TaskError(
    "resources",
    `page ${page.index + 1} (${page.width}×${page.height}, ${page.samplesPerPixel}×${page.bitsPerSample}-bit` +
      `${page.orientation > 1 ? `, orientation ${page.orientation}` : ""}) needs ~${streaming} MB even with the streaming encoder; ` +
      `the budget is ${budget} MB of ${request.machineMb} MB (${request.machineMbSource}). Run it on a larger machine (MEMORY_MB).`,
    { retryable: false },
  );
}

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
}

/** Colour samples per pixel for each PhotometricInterpretation; more samples are extra samples. */
const COLOUR_SAMPLES: Record<number, number> = { 0: 1, 1: 1, 2: 3, 3: 1, 4: 1, 5: 4, 6: 3, 8: 3, 9: 3, 10: 3, 32844: 1, 32845: 3 };
/** Compression schemes sharp's libtiff decodes (others are "not configured" or not implemented). */
const DECODABLE = new Set([1, 2, 3, 4, 5, 7, 8, 32773, 32809, 32946, 50001]);
const COMPRESSION_NAMES: Record<number, string> = {
  6: "old-style JPEG",
  34661: "JBIG",
  34676: "SGILog",
  34677: "SGILog24",
  34712: "JPEG 2000",
  34887: "LERC",
  34892: "lossy JPEG (DNG)",
  34925: "LZMA",
  50000: "Zstandard",
  50002: "JPEG XL",
};
const EXPORT_ADVICE = "export the scan as an 8- or 16-bit RGB or greyscale TIFF";

const refuse = (page: TiffDirectory, why: string) => new TaskError("input", `page ${page.index + 1} ${why}`, { retryable: false });

/**
 * What the page is and how to decode it; a TaskError for what sharp would decode into a
 * silently wrong picture, or fail on for a reason a person could not act on.
 */
export function inspectPage(page: TiffDirectory, maxPixels: number): PageKind {
  const spp = page.samplesPerPixel;
  if (spp < 1 || spp > 32) throw refuse(page, `is corrupt: SamplesPerPixel is ${spp}`);
  if (page.bitsPerSample < 1 || page.bitsPerSample > 64) throw refuse(page, `is corrupt: BitsPerSample is ${page.bitsPerSample}`);
  const pixels = page.width * page.height;
  if (pixels > maxPixels) {
    throw new TaskError(
      "resources",
      `page ${page.index + 1} is ${page.width}×${page.height} = ${pixels.toLocaleString("en")} pixels, over the limit of ` +
        `${maxPixels.toLocaleString("en")} (MAX_INPUT_PIXELS, default sized for the machine's memory)`,
      { retryable: false },
    );
  }
  const photometric = page.photometric;
  if (photometric === 32844 || photometric === 32845 || page.compression === 34676 || page.compression === 34677) {
    throw refuse(page, `is a LogLuv/SGILog high-dynamic-range image, which has no defined black and white point for JPEG; ${EXPORT_ADVICE}`);
  }
  if (photometric === 8 || photometric === 9 || photometric === 10) {
    throw refuse(page, `is CIELab (PhotometricInterpretation ${photometric}): CIELab is not supported; export the scan as RGB`);
  }
  if (!DECODABLE.has(page.compression)) {
    const name = COMPRESSION_NAMES[page.compression];
    throw refuse(page, `uses ${name ? `${name} compression (Compression ${page.compression})` : `Compression ${page.compression}`}, which the converter cannot decode; re-save it uncompressed or with LZW, Deflate or JPEG compression`);
  }
  if (page.sampleFormat !== 1) {
    const kind = page.sampleFormat === 3 ? "floating-point" : page.sampleFormat === 2 ? "signed integer" : `SampleFormat=${page.sampleFormat}`;
    throw refuse(page, `has ${page.bitsPerSample}-bit ${kind} samples, which have no defined black and white point for JPEG; export the scan as 8- or 16-bit unsigned integers`);
  }
  const colourSamples = photometric === undefined ? (spp >= 3 ? 3 : 1) : (COLOUR_SAMPLES[photometric] ?? 0);
  if (colourSamples === 0) throw refuse(page, `has PhotometricInterpretation ${photometric}, which the converter cannot read; ${EXPORT_ADVICE}`);
  if (spp < colourSamples) throw refuse(page, `is corrupt: PhotometricInterpretation ${photometric} needs ${colourSamples} samples per pixel, the page has ${spp}`);
  const bits = page.bitsPerSample;
  const lowBitGrey = bits < 8 && (bits === 1 || bits === 2 || bits === 4) && colourSamples === 1;
  if (bits !== 8 && bits !== 16 && bits !== 32 && !lowBitGrey) {
    throw refuse(
      page,
      `has ${bits}-bit samples, which the converter cannot read (it reads 8-, 16- and 32-bit samples, and 1-, 2- or 4-bit greyscale or palette); ` +
        "export the scan as 8- or 16-bit",
    );
  }
  const extras = spp - colourSamples;
  // Without an ExtraSamples tag a single extra sample is taken as alpha, as libvips does.
  const alpha = extras > 0 && (page.extraSamples.length === 0 ? extras === 1 : page.extraSamples[0] === 1 || page.extraSamples[0] === 2);
  if (alpha && extras > 1) throw refuse(page, `has alpha and ${extras - 1} more extra sample(s), which the converter cannot separate; ${EXPORT_ADVICE}`);
  if (bits === 32 && extras > 0) throw refuse(page, `has 32-bit samples with extra samples, which the converter cannot read; ${EXPORT_ADVICE}`);
  const grey = colourSamples === 1 && photometric !== 3;
  return { grey, alpha, dropExtras: extras > 0 && !alpha, scale32: bits === 32 };
}

/** Kept for callers that only need the yes/no: throws what inspectPage throws. */
export function checkSupported(page: TiffDirectory, maxPixels: number): void {
  inspectPage(page, maxPixels);
}

export interface PageResult {
  width: number;
  height: number;
  bytes: number;
  /** 1 for a greyscale JPEG, 3 for sRGB. */
  channels: 1 | 3;
  conversion_time_ms: number;
}

/**
 * Converts page `page.index` of the TIFF at `input` to a JPEG at `output`: orientation
 * applied, alpha flattened on white, non-alpha extra samples dropped, any colour space or
 * embedded ICC profile → sRGB (or greyscale, for greyscale input with colour "auto"), 16-bit
 * scaled to 8-bit by libvips' colourspace conversion (not truncated), 32-bit by its top 8 bits.
 */
export async function convertPage(
  input: string,
  output: string,
  page: TiffDirectory,
  kind: PageKind,
  settings: EncoderSettings,
  maxPixels: number,
  colour: "auto" | "rgb" = "auto",
): Promise<PageResult> {
  const start = performance.now();
  const open = () =>
    sharp(input, {
      page: page.index,
      // "error" also fails on truncated strips; "truncated" alone let a cut file through as black.
      failOn: "error",
      limitInputPixels: maxPixels,
      sequentialRead: true,
    });
  const failure = (error: unknown) =>
    new TaskError("input", `could not decode page ${page.index + 1} (${page.width}×${page.height}): ${describeDecodeError(errorMessage(error), input)}`, {
      retryable: false,
      cause: error,
    });
  let hasAlpha: boolean;
  try {
    hasAlpha = (await open().metadata()).hasAlpha === true;
    // No scan is fully transparent: a decode that yields that is a decoder failure, never a white page.
    if (hasAlpha && !kind.dropExtras) {
      const { channels } = await open().extractChannel("alpha").stats();
      if ((channels[0]?.max ?? 0) === 0) {
        throw refuse(page, "decodes as fully transparent (every alpha value is 0): the decoder produced no picture, so it is not converted to a blank page");
      }
    }
  } catch (error) {
    throw error instanceof TaskError ? error : failure(error);
  }
  const grey = kind.grey && colour === "auto";
  try {
    let image = open();
    if (kind.scale32) image = image.linear(1 / 2 ** 24, 0);
    image = image.autoOrient();
    if (kind.alpha) image = image.flatten({ background: "#ffffff" });
    else if (kind.dropExtras || hasAlpha) image = image.removeAlpha();
    image = image.toColourspace(grey ? "b-w" : "srgb").jpeg({
      quality: settings.quality,
      mozjpeg: settings.mozjpeg,
      optimiseCoding: settings.optimise_coding,
      chromaSubsampling: settings.chroma_subsampling,
    });
    const info = await image.toFile(output);
    return { width: info.width, height: info.height, bytes: info.size, channels: grey ? 1 : 3, conversion_time_ms: Math.round(performance.now() - start) };
  } catch (error) {
    throw failure(error);
  }
}

/**
 * libvips/libtiff's message as one clean clause: no temp path, each line once, no
 * "Input file has corrupt header" prefix on files that are merely unsupported.
 */
export function describeDecodeError(message: string, input: string): string {
  const details = [
    ...new Set(
      message
        .split("\n")
        .map((line) =>
          line
            .split(`${input}: `)
            .join("")
            .split(input)
            .join("the file")
            .replace(/\/\S*fanout-[^\s:]*:?\s*/g, "")
            .replace(/^\s*(Input file has corrupt header:\s*)?/i, "")
            .replace(/^(tiff2vips|vips_\w+|VipsForeignLoad\w*|source input|image):\s*/i, "")
            .replace(/^(source input|image):\s*/i, "")
            .trim(),
        )
        .filter((line) => line !== ""),
    ),
  ];
  const shown = details.slice(0, 2).join("; ") + (details.length > 2 ? `; and ${details.length - 2} more` : "");
  if (/read error|truncated|premature end|unexpected end|bad seek|seek error|not enough data/i.test(shown)) return `image data is truncated or corrupt (${shown})`;
  if (/exceeds pixel limit/i.test(shown)) return `the image exceeds the pixel limit (${shown})`;
  if (/unsupported image format/i.test(shown)) return `libvips cannot read this TIFF: it is corrupt or uses an unsupported encoding (${shown})`;
  return shown || "the decoder gave no reason";
}

/** Keeps libvips from holding decoded images between pages. */
export function configureSharp(): void {
  sharp.cache(false);
}
