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
  chroma_subsampling: "4:2:0";
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
export function planEncoder(page: TiffDirectory, request: { quality: number; mozjpeg: boolean; machineMb: number; machineMbSource: string }): EncoderSettings {
  const budget = memoryBudgetMb(request.machineMb);
  const pixels = page.width * page.height;
  const streaming = MEMORY_MODEL.baseMb + mb(decodeBytes(page));
  const buffered = streaming + mb(pixels * MEMORY_MODEL.bufferedEncoderBytesPerPixel);
  const base = { quality: request.quality, chroma_subsampling: "4:2:0" as const, memory_budget_mb: budget };
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

/** Rejects what sharp would decode into a silently wrong picture. */
export function checkSupported(page: TiffDirectory, maxPixels: number): void {
  const pixels = page.width * page.height;
  if (pixels > maxPixels) {
    throw new TaskError(
      "resources",
      `page ${page.index + 1} is ${page.width}×${page.height} = ${pixels.toLocaleString("en")} pixels, over the limit of ` +
        `${maxPixels.toLocaleString("en")} (MAX_INPUT_PIXELS, default sized for the machine's memory)`,
      { retryable: false },
    );
  }
  if (page.sampleFormat !== 1) {
    const kind = page.sampleFormat === 3 ? "floating-point" : page.sampleFormat === 2 ? "signed integer" : `SampleFormat=${page.sampleFormat}`;
    throw new TaskError(
      "input",
      `page ${page.index + 1} has ${page.bitsPerSample}-bit ${kind} samples, which have no defined black and white point for JPEG; ` +
        "export the scan as 8- or 16-bit unsigned integers",
      { retryable: false },
    );
  }
}

export interface PageResult {
  width: number;
  height: number;
  bytes: number;
  conversion_time_ms: number;
}

/**
 * Converts page `page.index` of the TIFF at `input` to a JPEG at `output`: orientation
 * applied, alpha flattened on white, any colour space or embedded ICC profile → sRGB, 16-bit
 * scaled to 8-bit by libvips' colourspace conversion (not truncated).
 */
export async function convertPage(input: string, output: string, page: TiffDirectory, settings: EncoderSettings, maxPixels: number): Promise<PageResult> {
  const start = performance.now();
  try {
    const image = sharp(input, {
      page: page.index,
      // "error" also fails on truncated strips; "truncated" alone let a cut file through as black.
      failOn: "error",
      limitInputPixels: maxPixels,
      sequentialRead: true,
    })
      .autoOrient()
      .flatten({ background: "#ffffff" })
      .toColourspace("srgb")
      .jpeg({
        quality: settings.quality,
        mozjpeg: settings.mozjpeg,
        optimiseCoding: settings.optimise_coding,
        chromaSubsampling: settings.chroma_subsampling,
      });
    const info = await image.toFile(output);
    return { width: info.width, height: info.height, bytes: info.size, conversion_time_ms: Math.round(performance.now() - start) };
  } catch (error) {
    throw new TaskError("input", `could not decode page ${page.index + 1} (${page.width}×${page.height}): ${describeSharpError(errorMessage(error))}`, {
      retryable: false,
      cause: error,
    });
  }
}

function describeSharpError(message: string): string {
  const m = message.trim().replace(/\s+/g, " ");
  if (/read error|truncated|premature end|unexpected end/i.test(m)) return `image data is truncated or corrupt (${m})`;
  if (/exceeds pixel limit/i.test(m)) return `the image exceeds the pixel limit (${m})`;
  if (/unsupported image format/i.test(m)) return `libvips cannot read this TIFF: it is corrupt or uses an unsupported encoding (${m})`;
  return m;
}

/** Keeps libvips from holding decoded images between pages. */
export function configureSharp(): void {
  sharp.cache(false);
}
