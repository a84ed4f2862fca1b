// One conversion by the fly-worker pipeline, in its own process so that its peak RSS is its
// own: `node bench/convert-one.ts IN.tif OUT.jpg baseline|optimised|trellis|contract MACHINE_MB`.
// Prints one JSON line. The code that converts is fly-worker's, not a copy of it.
import { configureSharp, convertPage, defaultMaxInputPixels, planEncoder, type EncoderSettings } from "../fly-worker/convert.ts";
import { inspectPage } from "../fly-worker/kinds.ts";
import { readTiffDirectories, selectPages } from "../fly-worker/tiff.ts";

const [input, output, mode, machineMbText] = process.argv.slice(2);
const machineMb = Number(machineMbText);
if (!input || !output || !["baseline", "optimised", "trellis", "contract"].includes(mode) || !(machineMb > 0)) {
  console.error("usage: node bench/convert-one.ts IN.tif OUT.jpg baseline|optimised|trellis|contract MACHINE_MB");
  process.exit(64);
}

configureSharp();
const t0 = performance.now();
const { convert } = selectPages(await readTiffDirectories(input));
const page = convert[0];
const settings: EncoderSettings =
  mode === "contract"
    ? // As a machine of that size runs the contract's default (JPEG_QUALITY 95, MOZJPEG true).
      planEncoder(page, { quality: 95, mozjpeg: true, machineMb, machineMbSource: "guestFor" })
    : {
        quality: 95,
        mozjpeg: false,
        // trellis: mozjpeg's trellis quantisation with Huffman optimisation, none of the rest of its preset.
        optimise_coding: mode === "optimised" || mode === "trellis",
        ...(mode === "trellis" ? { trellis_quantisation: true } : {}),
        chroma_subsampling: "4:2:0",
        reason: `bench: ${mode}`,
        estimated_peak_mb: 0,
        memory_budget_mb: 0,
      };
const maxPixels = defaultMaxInputPixels(machineMb);
const result = await convertPage(input, output, page, inspectPage(page, maxPixels), settings, maxPixels);
const wallMs = performance.now() - t0;
console.log(
  JSON.stringify({
    wall_ms: wallMs,
    conversion_ms: result.conversion_time_ms,
    bytes: result.bytes,
    width: result.width,
    height: result.height,
    peak_rss_mb: process.resourceUsage().maxRSS / 1024,
    settings,
  }),
);
