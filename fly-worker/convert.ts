// One TIFF page → one sRGB JPEG on disk, with encoder settings chosen so the process fits
// the machine's memory. The memory model is measured, not guessed (see MEMORY_MODEL).
import sharp from "sharp";
import { describeDecodeError, TaskError, errorMessage } from "./errors.ts";
import type { PageKind } from "./kinds.ts";
import { signedMapping } from "./levels.ts";
import { pageNumber, type TiffDirectory } from "./tiff.ts";

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
  /** mozjpeg's trellis quantisation alone, without the rest of its preset (the conversion bench compares it). */
  trellis_quantisation?: boolean;
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
    `page ${pageNumber(page)} (${page.width}×${page.height}, ${page.samplesPerPixel}×${page.bitsPerSample}-bit` +
      `${page.orientation > 1 ? `, orientation ${page.orientation}` : ""}) needs ~${streaming} MB even with the streaming encoder; ` +
      `the budget is ${budget} MB of ${request.machineMb} MB (${request.machineMbSource}). Run it on a larger machine (MEMORY_MB).`,
    { retryable: false },
  );
}

export interface PageResult {
  width: number;
  height: number;
  bytes: number;
  /** 1 for a greyscale JPEG, 3 for sRGB. */
  channels: 1 | 3;
  conversion_time_ms: number;
  /** What the conversion decided that the operator should know (a range rule applied, a bad profile ignored). */
  notes: string[];
}

/**
 * Converts page `page.index` of the TIFF at `input` to a JPEG at `output`: orientation
 * applied, alpha flattened on white, non-alpha extra samples dropped, any colour space or
 * embedded ICC profile → sRGB (or greyscale, for greyscale input with colour "auto"), 16-bit
 * scaled to 8-bit by libvips' colourspace conversion (not truncated), 32-bit by its top 8 bits,
 * signed and floating-point samples by the range rules of levels.ts. An embedded profile that
 * is not an ICC profile is ignored (the pixels are read as sRGB) and said in the notes.
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
  const notes: string[] = [];
  let ignoreIcc = page.icc?.valid === false;
  if (page.icc?.valid === false) notes.push(`its embedded colour profile is not an ICC profile (${page.icc.reason}): ignored, colours read as sRGB`);
  const open = () =>
    sharp(input, {
      page: page.index,
      // "error" also fails on truncated strips; "truncated" alone let a cut file through as black.
      failOn: "error",
      limitInputPixels: maxPixels,
      sequentialRead: true,
      ignoreIcc,
    });
  const failure = (error: unknown) =>
    new TaskError("input", `could not decode page ${pageNumber(page)} (${page.width}×${page.height}): ${describeDecodeError(errorMessage(error), input)}`, {
      retryable: false,
      cause: error,
    });
  let hasAlpha: boolean;
  let levels: { scale: number; offset: number } | undefined;
  try {
    const metadata = await open().metadata();
    hasAlpha = metadata.hasAlpha === true;
    // No scan is fully transparent: a decode that yields that is a decoder failure, never a white page.
    if (hasAlpha && !kind.dropExtras) {
      const { channels } = await open().extractChannel("alpha").stats();
      if ((channels[0]?.max ?? 0) === 0) {
        throw new TaskError("input", `page ${pageNumber(page)} decodes as fully transparent (every alpha value is 0): the decoder produced no picture, so it is not converted to a blank page`, { retryable: false });
      }
    }
    if (kind.levels) {
      // One pass over the page for its minimum: the rule depends on it (levels.ts). Exact for integers.
      const { channels } = await open().stats();
      const mapping = signedMapping(kind.levels.bits, Math.min(...channels.map((c) => c.min)), metadata.space);
      if (mapping.note) notes.push(mapping.note);
      levels = mapping;
    }
    if (kind.linear) levels = kind.linear;
  } catch (error) {
    throw error instanceof TaskError ? error : failure(error);
  }
  const grey = kind.grey && colour === "auto";
  const encode = async (): Promise<PageResult> => {
    let image = open();
    if (kind.scale32) image = image.linear(1 / 2 ** 24, 0);
    if (levels) image = image.linear(levels.scale, levels.offset);
    image = image.autoOrient();
    if (kind.alpha) image = image.flatten({ background: "#ffffff" });
    else if (kind.dropExtras || hasAlpha) image = image.removeAlpha();
    image = image.toColourspace(grey ? "b-w" : "srgb").jpeg({
      quality: settings.quality,
      mozjpeg: settings.mozjpeg,
      optimiseCoding: settings.optimise_coding,
      chromaSubsampling: settings.chroma_subsampling,
      ...(settings.trellis_quantisation ? { trellisQuantisation: true } : {}),
    });
    const info = await image.toFile(output);
    return { width: info.width, height: info.height, bytes: info.size, channels: grey ? 1 : 3, conversion_time_ms: Math.round(performance.now() - start), notes };
  };
  try {
    return await encode();
  } catch (error) {
    // A profile lcms refuses although it looks like one: convert without it rather than not at all.
    if (ignoreIcc || !/\bICC\b|colour profile|color profile|lcms/i.test(errorMessage(error))) throw failure(error);
    ignoreIcc = true;
    notes.push(`its embedded colour profile could not be used (${describeDecodeError(errorMessage(error), input)}): ignored, colours read as sRGB`);
  }
  try {
    return await encode();
  } catch (error) {
    throw failure(error);
  }
}

/** Keeps libvips from holding decoded images between pages. */
export function configureSharp(): void {
  sharp.cache(false);
}
