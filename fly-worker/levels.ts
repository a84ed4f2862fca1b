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
//                    its maximum instead — said in the page's notes. NaN and infinite samples are
//                    left out of the range (and said).
//   float CMYK       The same range rule for ink (0 none, 1 full), written as 8-bit CMYK first:
//                    libvips converts CMYK to sRGB before any scaling could apply.

/** The page has no range to map (its message starts with "has …", to follow "page N"). */
export class NoRangeError extends Error {}

export interface LevelMapping {
  /** value → value × scale + offset, before libvips' colourspace conversion. */
  scale: number;
  offset: number;
  note?: string;
}

const show = (v: number) => (Number.isInteger(v) ? v.toLocaleString("en") : Number(v.toPrecision(6)).toString());

/** Signed samples from the page's minimum; `space` is how libvips interprets the page (a 16-bit one keeps 0–65535). */
export function signedMapping(bits: number, min: number, space: string | undefined): LevelMapping {
  const white = space === "grey16" || space === "rgb16" ? 65536 : 256;
  const scale = white / 2 ** bits;
  if (min >= 0) return { scale, offset: 0 };
  const half = 2 ** (bits - 1);
  return { scale, offset: half * scale, note: `has negative ${bits}-bit samples (down to ${show(min)}): shown offset by ${show(half)}, so ${show(-half)} is black, 0 mid-grey and ${show(half - 1)} white` };
}

/** The range of a float page's colour samples, NaN and infinities left out (rewrite.ts floatRange). */
export interface FloatRange {
  min: number;
  max: number;
  /** Samples that are NaN or infinite. */
  nonFinite: number;
}

/**
 * Float samples to display levels: grey to 0–255, RGB to scRGB's 0–1 (libvips encodes it to sRGB),
 * CMYK ink to 0–255. Samples in 0–1 keep that range; otherwise the page's own range is stretched.
 */
export function floatMapping(range: FloatRange, colour: "grey" | "rgb" | "cmyk"): LevelMapping & { notes: string[] } {
  const n = range.nonFinite;
  const notes = n > 0 ? [`has ${show(n)} floating-point sample${n === 1 ? " that is" : "s that are"} not a number (NaN) or infinite: left out of its range, NaN shown black, infinities clipped`] : [];
  if (!(range.min <= range.max)) throw new NoRangeError("has no floating-point sample that is a finite number, so it has no range to show; export it with those samples replaced by numbers");
  const nominal = range.min >= 0 && range.max <= 1;
  const [low, high] = nominal ? [0, 1] : [range.min, range.max > range.min ? range.max : range.min + 1];
  const scale = (colour === "rgb" ? 1 : 255) / (high - low);
  if (!nominal) notes.push(`has floating-point samples from ${show(range.min)} to ${show(range.max)}, outside the nominal 0–1: stretched so ${show(range.min)} is black and ${show(high)} white`);
  return { scale, offset: -low * scale, notes, note: nominal ? undefined : notes.at(-1) };
}
