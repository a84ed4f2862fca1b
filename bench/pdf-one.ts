// One PDF through the worker's PDF job as a process of its own, without S3: measure and split every
// page with the job's own functions (fly-worker/pdf-document.ts), render each to a JPEG, delete each
// output once written (as the job does after its upload). Prints one JSON line; bench/pdf.ts times it.
//   node bench/pdf-one.ts <pdf> <out-dir> [dpi] [split=1] [mozjpeg=1]
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { openPdf, openSplitter, planPages, renderPage, type RenderSettings } from "../fly-worker/pdf-document.ts";
import { configureSharp } from "../fly-worker/convert.ts";
import { peakRssMb } from "../fly-worker/task.ts";

const [path, outDir, dpiArg, splitArg, mozjpegArg] = process.argv.slice(2);
if (!path || !outDir) {
  console.error("usage: node bench/pdf-one.ts <pdf> <out-dir> [dpi] [split=1] [mozjpeg=1]");
  process.exit(2);
}
configureSharp();
const settings: RenderSettings = { dpi: Number(dpiArg ?? 300), quality: 95, mozjpeg: mozjpegArg !== "0", chroma: "4:2:0", machineMb: Number(process.env.MEMORY_MB ?? 8192) };
const t0 = performance.now();
const file = await readFile(path);
const pdf = await openPdf(new Uint8Array(file.buffer, file.byteOffset, file.byteLength));
const plans = await planPages(pdf, settings, file.byteLength);
await pdf.close();
let splitS = 0;
if (splitArg !== "0") {
  const t = performance.now();
  const splitter = await openSplitter(path);
  for (let page = 1; page <= splitter.pages; page++) {
    const out = join(outDir, `p${page}.pdf`);
    await splitter.writePage(page, out);
    await rm(out);
  }
  splitS = (performance.now() - t) / 1000;
}
const again = await readFile(path);
const render = await openPdf(new Uint8Array(again.buffer, again.byteOffset, again.byteLength));
let jpegBytes = 0;
const t = performance.now();
for (const plan of plans) {
  if (plan.skip) continue;
  const out = join(outDir, `p${plan.page}.jpg`);
  jpegBytes += (await renderPage(render, plan, settings, out)).bytes;
  await rm(out);
}
await render.close();
console.log(JSON.stringify({ pages: plans.length, split_s: splitS, render_s: (performance.now() - t) / 1000, total_s: (performance.now() - t0) / 1000, jpeg_bytes: jpegBytes, peak_rss_mb: peakRssMb() }));
