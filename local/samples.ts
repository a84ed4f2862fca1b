// Sample archival-style TIFFs for the demo and the e2e tests, generated with sharp so no
// binaries are committed: 8- and 16-bit RGB, 16-bit grey, CMYK with an ICC profile, alpha,
// EXIF orientation, multi-page, in several compressions.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import sharp, { type Sharp } from "sharp";

export interface SampleKind {
  name: string;
  /** Pages the JPEG output has (one JPEG per page). */
  pages: number;
  make(width: number, height: number, seed: number): Promise<Sharp>;
}

/** A scan-like image: a colour ramp shifted by seed, so every file differs. */
function scan(width: number, height: number, seed: number, channels: 3 | 4 = 3): Sharp {
  const raw = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * channels;
      raw[i] = (Math.floor((x * 255) / width) + seed * 37) & 255;
      raw[i + 1] = (Math.floor((y * 255) / height) + seed * 11) & 255;
      raw[i + 2] = 90 + ((x ^ y) & 63);
      if (channels === 4) raw[i + 3] = x < width / 2 ? 255 : 0;
    }
  }
  return sharp(raw, { raw: { width, height, channels } });
}

export const SAMPLE_KINDS: SampleKind[] = [
  { name: "rgb8", pages: 1, make: async (w, h, s) => scan(w, h, s).tiff({ compression: "none" }) },
  { name: "rgb8-lzw", pages: 1, make: async (w, h, s) => scan(w, h, s).tiff({ compression: "lzw", predictor: "horizontal" }) },
  { name: "rgb16-deflate", pages: 1, make: async (w, h, s) => scan(w, h, s).toColourspace("rgb16").tiff({ compression: "deflate" }) },
  { name: "grey16", pages: 1, make: async (w, h, s) => scan(w, h, s).toColourspace("grey16").tiff({ compression: "lzw" }) },
  { name: "cmyk-icc", pages: 1, make: async (w, h, s) => scan(w, h, s).toColourspace("cmyk").withIccProfile("cmyk").tiff({ compression: "lzw" }) },
  { name: "rgba", pages: 1, make: async (w, h, s) => scan(w, h, s, 4).tiff({ compression: "lzw" }) },
  { name: "orientation-6", pages: 1, make: async (w, h, s) => scan(w, h, s).withMetadata({ orientation: 6 }).tiff({ compression: "lzw" }) },
  {
    name: "multipage",
    pages: 2,
    make: async (w, h, s) => {
      const a = await scan(w, h, s).png().toBuffer();
      const b = await scan(w, h, s + 5).png().toBuffer();
      return sharp([a, b], { join: { animated: true } }).tiff({ compression: "deflate" });
    },
  },
];

export interface GeneratedSample {
  path: string;
  /** Path relative to the output directory, e.g. box-01/scan-0003-cmyk-icc.tif */
  relative: string;
  kind: string;
  pages: number;
}

export interface SampleOptions {
  count: number;
  width?: number;
  height?: number;
  /** Files per sub-folder (folders become manifest directories); default all in one. */
  perFolder?: number;
  kinds?: SampleKind[];
}

/** Writes `count` TIFFs cycling through the kinds, and says what each one is. */
export async function generateSamples(dir: string, options: SampleOptions): Promise<GeneratedSample[]> {
  const kinds = options.kinds ?? SAMPLE_KINDS;
  const width = options.width ?? 1200;
  const height = options.height ?? 900;
  const out: GeneratedSample[] = [];
  for (let i = 0; i < options.count; i++) {
    const kind = kinds[i % kinds.length];
    const folder = options.perFolder ? `box-${String(Math.floor(i / options.perFolder) + 1).padStart(2, "0")}/` : "";
    const relative = `${folder}scan-${String(i + 1).padStart(4, "0")}-${kind.name}.tif`;
    const path = join(dir, relative);
    await mkdir(join(dir, folder), { recursive: true });
    await (await kind.make(width, height, i)).toFile(path);
    out.push({ path, relative, kind: kind.name, pages: kind.pages });
  }
  return out;
}

/** The JPEG keys a set of samples must produce (one per page; page n>1 as -pNNN, none of them clashing). */
export function expectedJpegKeys(prefix: string, samples: Pick<GeneratedSample, "relative" | "pages">[]): string[] {
  const keys: string[] = [];
  for (const s of samples) {
    const stem = `${prefix}${s.relative.replace(/\.tif$/, "")}`;
    keys.push(`${stem}.jpg`);
    for (let p = 2; p <= s.pages; p++) keys.push(`${stem}-p${String(p).padStart(3, "0")}.jpg`);
  }
  return keys.sort();
}
