// Display levels for samples that have no black and white point of their own. The rules, and
// why (README, "Supported TIFF kinds"):
//   signed integers  When no sample is negative, exactly as the unsigned samples of the same
//                    depth (16-bit v → v/256): what libvips and libtiff's tiff2rgba both show.
//                    When some are negative the two disagree (libvips clips them to black,
//                    libtiff wraps them to bright), so the range is offset by 2^(n−1): the most
//                    negative value is black, 0 mid-grey — said in the page's notes.
//   floating point   Nominal range 0–1 (0 black, 1 white). Grey is mapped linearly; RGB is taken
//                    as linear light and encoded to sRGB, as libvips reads float RGB (scRGB).
//                    A page whose samples fall outside 0–1 is stretched from its own minimum to
//                    its maximum instead — said in the page's notes.
//   float CMYK       The same range rule for ink (0 none, 1 full), written as 8-bit CMYK first:
//                    libvips converts CMYK to sRGB before any scaling could apply.
import type { PageKind } from "./kinds.ts";

/** The page has no range to map (its message starts with "has …", to follow "page N"). */
export class NoRangeError extends Error {}

export interface LevelMapping {
  /** value → value × scale + offset, before libvips' colourspace conversion. */
  scale: number;
  offset: number;
  note?: string;
}

const show = (v: number) => (Number.isInteger(v) ? v.toLocaleString("en") : Number(v.toPrecision(6)).toString());

/**
 * The linear map for a page from its per-band statistics (sharp's stats(): colour bands first)
 * and how libvips interprets it (`space`: a 16-bit interpretation keeps 0–65535, others 0–255).
 */
export function levelMapping(levels: NonNullable<PageKind["levels"]>, bands: { min: number; max: number }[], space: string | undefined): LevelMapping {
  const min = Math.min(...bands.map((b) => b.min));
  const max = Math.max(...bands.map((b) => b.max));
  if (levels.format === "signed") {
    const white = space === "grey16" || space === "rgb16" ? 65536 : 256;
    const scale = white / 2 ** levels.bits;
    if (min >= 0) return { scale, offset: 0 };
    const half = 2 ** (levels.bits - 1);
    return {
      scale,
      offset: half * scale,
      note: `has negative ${levels.bits}-bit samples (down to ${show(min)}): shown offset by ${show(half)}, so ${show(-half)} is black, 0 mid-grey and ${show(half - 1)} white`,
    };
  }
  if (!Number.isFinite(min) || !Number.isFinite(max)) {
    throw new NoRangeError("has floating-point samples that are not finite numbers (NaN or infinity), so it has no range to show; export it with those samples replaced by numbers");
  }
  const nominal = min >= 0 && max <= 1;
  const [low, high] = nominal ? [0, 1] : [min, max > min ? max : min + 1];
  // libvips reads 3-band float as scRGB (linear, 0–1, encoded to sRGB on output) and 1-band float as 0–255 grey.
  const white = space === "scrgb" ? 1 : 255;
  const scale = white / (high - low);
  return {
    scale,
    offset: -low * scale,
    note: nominal ? undefined : `has floating-point samples from ${show(min)} to ${show(max)}, outside the nominal 0–1: stretched so ${show(min)} is black and ${show(high)} white`,
  };
}
