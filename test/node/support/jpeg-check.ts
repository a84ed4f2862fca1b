// Decodes a JPEG and checks it against a corpus page: format, size, sRGB, sampled colours.
import sharp from "sharp";
import type { ExpectedPage, Rgb } from "./tiff-corpus.ts";

export interface JpegFacts {
  format: string | undefined;
  width: number;
  height: number;
  channels: number;
  space: string | undefined;
}

export async function jpegFacts(bytes: Buffer): Promise<JpegFacts> {
  const m = await sharp(bytes).metadata();
  return { format: m.format, width: m.width ?? 0, height: m.height ?? 0, channels: m.channels ?? 0, space: m.space };
}

/** The colour at (fx, fy) as fractions of width and height, averaged over a 5×5 patch. */
export async function samplePixel(bytes: Buffer, fx: number, fy: number): Promise<Rgb> {
  const { width = 0, height = 0 } = await sharp(bytes).metadata();
  const left = Math.min(width - 5, Math.max(0, Math.floor(fx * width) - 2));
  const top = Math.min(height - 5, Math.max(0, Math.floor(fy * height) - 2));
  const { data, info } = await sharp(bytes).extract({ left, top, width: 5, height: 5 }).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const sum = [0, 0, 0];
  for (let i = 0; i < data.length; i += info.channels) for (let c = 0; c < 3; c++) sum[c] += data[i + (info.channels >= 3 ? c : 0)];
  const n = data.length / info.channels;
  return [Math.round(sum[0] / n), Math.round(sum[1] / n), Math.round(sum[2] / n)];
}

/**
 * Every mismatch between the JPEG and the expected page, as readable lines (empty = fine).
 * `tolerance` is per channel; the dominant channel must match too, so a plausibly tinted
 * colour passes and a swapped or black one does not.
 */
export async function compareJpeg(bytes: Buffer, expected: ExpectedPage, tolerance = 16): Promise<string[]> {
  const facts = await jpegFacts(bytes);
  const problems: string[] = [];
  if (facts.format !== "jpeg") problems.push(`format ${facts.format}, expected jpeg`);
  if (facts.width !== expected.width || facts.height !== expected.height) {
    problems.push(`size ${facts.width}×${facts.height}, expected ${expected.width}×${expected.height}`);
  }
  const [channels, space] = expected.channels === 1 ? [1, "b-w"] : [3, "srgb"];
  if (facts.channels !== channels || facts.space !== space) problems.push(`${facts.channels} channels in ${facts.space}, expected ${channels} in ${space}`);
  for (const s of expected.samples) {
    const got = await samplePixel(bytes, s.x, s.y);
    const off = got.some((v, c) => Math.abs(v - s.rgb[c]) > tolerance);
    const dominant = (rgb: Rgb) => rgb.indexOf(Math.max(...rgb));
    const isGrey = (rgb: Rgb) => Math.max(...rgb) - Math.min(...rgb) < 10;
    if (off || (!isGrey(s.rgb) && dominant(got) !== dominant(s.rgb))) {
      problems.push(`pixel at (${s.x}, ${s.y}) is rgb(${got.join(",")}), expected rgb(${s.rgb.join(",")}) ±${tolerance}`);
    }
  }
  return problems;
}
