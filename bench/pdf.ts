// PDF: the worker's PDF job (pdf.js on @napi-rs/canvas + sharp/mozjpeg, bench/pdf-one.ts) against
// Debian's `pdftoppm` (poppler-utils) at the same DPI and JPEG quality, on generated PDFs of text
// pages and of full-page scans. Every run is its own process under GNU time (wall, CPU, peak RSS);
// medians of REPEATS runs, interleaved. A long run takes a PDF of LONG_PAGES pages through the whole
// job (split and render) once, for its peak RSS: memory must not grow with the page count.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { scanPdf, textPdf } from "../local/pdf-samples.ts";
import { pdfGuest } from "../orchestrator/phases/pdf-splitting.ts";
import { timed } from "./conversion.ts";

export interface PdfFigure {
  kind: "text" | "scan";
  pages: number;
  pdf_bytes: number;
  side: "pdf-job" | "pdf-job-baseline" | "pdftoppm";
  runs: number;
  wall_s: number;
  cpu_s: number;
  pages_per_s: number;
  cpu_s_per_page: number;
  peak_rss_mb: number;
  jpeg_bytes: number;
}

export interface PdfLongFigure {
  kind: "text" | "scan";
  pages: number;
  pdf_bytes: number;
  wall_s: number;
  cpu_s: number;
  split_s: number;
  peak_rss_mb: number;
  /** The machine the phase's sizing picks for a PDF of this size (one task, its own machine). */
  guest: { cpu_kind: string; cpus: number; memory_mb: number };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function runPdfBench(opts: { pages: number; dpi: number; quality: number; repeats: number; longPages: number; log: (line: string) => void }): Promise<{ figures: PdfFigure[]; long: PdfLongFigure[] }> {
  const workDir = join(tmpdir(), "fanout-bench-pdf");
  mkdirSync(workDir, { recursive: true });
  const env = { ...process.env, MALLOC_ARENA_MAX: "2", NODE_ENV: "production" };
  const make = async (kind: "text" | "scan", pages: number) => {
    const path = join(workDir, `${kind}-${pages}.pdf`);
    if (!existsSync(path)) writeFileSync(path, kind === "text" ? await textPdf(pages) : await scanPdf(pages));
    return path;
  };
  const out = join(workDir, "out");
  const fresh = () => {
    rmSync(out, { recursive: true, force: true });
    mkdirSync(out);
  };
  const jpegBytesIn = (dir: string) => readdirSync(dir).filter((f) => f.endsWith(".jpg")).reduce((n, f) => n + statSync(join(dir, f)).size, 0);

  const figures: PdfFigure[] = [];
  for (const kind of ["text", "scan"] as const) {
    const pdf = await make(kind, opts.pages);
    const samples = { "pdf-job": [] as ReturnType<typeof timed>[], "pdf-job-baseline": [] as ReturnType<typeof timed>[], pdftoppm: [] as ReturnType<typeof timed>[] };
    const bytes = { "pdf-job": 0, "pdf-job-baseline": 0, pdftoppm: 0 };
    for (let rep = 0; rep < opts.repeats; rep++) {
      fresh();
      // Render only (split=0): what pdftoppm does; the split is timed in the long run.
      // …and once with sharp's optimised baseline encoder instead of mozjpeg: the renderer's share apart from the encoder's.
      for (const [side, mozjpeg] of [["pdf-job", "1"], ["pdf-job-baseline", "0"]] as const) {
        const job = timed([process.execPath, "bench/pdf-one.ts", pdf, out, String(opts.dpi), "0", mozjpeg], env);
        samples[side].push(job);
        bytes[side] = (JSON.parse(job.stdout.trim().split("\n").pop()!) as { jpeg_bytes: number }).jpeg_bytes;
      }
      fresh();
      samples.pdftoppm.push(timed(["pdftoppm", "-r", String(opts.dpi), "-jpeg", "-jpegopt", `quality=${opts.quality}`, pdf, join(out, "p")], env));
      bytes.pdftoppm = jpegBytesIn(out);
    }
    for (const side of ["pdf-job", "pdf-job-baseline", "pdftoppm"] as const) {
      const runs = samples[side];
      const wall = median(runs.map((r) => r.wall_s));
      const cpu = median(runs.map((r) => r.cpu_s));
      const f: PdfFigure = {
        kind,
        pages: opts.pages,
        pdf_bytes: statSync(pdf).size,
        side,
        runs: runs.length,
        wall_s: wall,
        cpu_s: cpu,
        pages_per_s: opts.pages / wall,
        cpu_s_per_page: cpu / opts.pages,
        peak_rss_mb: Math.max(...runs.map((r) => r.rss_mb)),
        jpeg_bytes: bytes[side],
      };
      figures.push(f);
      opts.log(`  pdf ${kind.padEnd(4)} ${side.padEnd(16)} ${opts.pages} pages at ${opts.dpi} DPI: ${f.wall_s.toFixed(1)} s, ${f.pages_per_s.toFixed(2)} pages/s, ${f.cpu_s_per_page.toFixed(2)} CPU-s/page, peak ${Math.round(f.peak_rss_mb)} MB, ${(f.jpeg_bytes / 1e6).toFixed(1)} MB of JPEG`);
    }
  }

  const long: PdfLongFigure[] = [];
  for (const kind of opts.longPages > 0 ? (["text", "scan"] as const) : []) {
    const pdf = await make(kind, opts.longPages);
    fresh();
    const r = timed([process.execPath, "bench/pdf-one.ts", pdf, out, String(opts.dpi), "1"], env);
    const json = JSON.parse(r.stdout.trim().split("\n").pop()!) as { split_s: number };
    const bytes = statSync(pdf).size;
    const f: PdfLongFigure = { kind, pages: opts.longPages, pdf_bytes: bytes, wall_s: r.wall_s, cpu_s: r.cpu_s, split_s: json.split_s, peak_rss_mb: r.rss_mb, guest: pdfGuest(bytes) };
    long.push(f);
    opts.log(`  pdf long ${kind} ${f.pages} pages (${(f.pdf_bytes / 1e6).toFixed(1)} MB): split ${f.split_s.toFixed(1)} s, whole job ${f.wall_s.toFixed(0)} s, peak ${Math.round(f.peak_rss_mb)} MB; sizing picks ${f.guest.cpu_kind} ${f.guest.cpus}x ${f.guest.memory_mb} MB`);
  }
  rmSync(out, { recursive: true, force: true });
  return { figures, long };
}

/** Debian's poppler-utils, installed when missing (as bench/vips.ts does for libvips-tools). */
export function ensurePdftoppm(log: (line: string) => void): void {
  if (spawnSync("pdftoppm", ["-v"]).status === 0) return;
  log("  installing poppler-utils (pdftoppm) with apt-get");
  const r = spawnSync("sh", ["-c", "apt-get update -qq && apt-get install -y -qq --no-install-recommends poppler-utils"], { stdio: "inherit", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
  if (r.status !== 0) throw new Error("pdftoppm is missing and apt-get could not install poppler-utils");
}

const RENDERERS: Record<string, string> = {
  "pdf-job": "fly-worker PDF job: pdf.js + @napi-rs/canvas, sharp mozjpeg (the contract)",
  "pdf-job-baseline": "the same, sharp's optimised baseline encoder (no mozjpeg)",
};

/** The RESULTS.md section. */
export function pdfSection(r: { figures: PdfFigure[]; long: PdfLongFigure[]; dpi: number; quality: number; popplerVersion: string }): string {
  if (r.figures.length === 0) return "";
  const f = (x: number, d = 1) => x.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  const rows = r.figures.map(
    (x) =>
      `| ${x.kind} | ${RENDERERS[x.side] ?? `\`pdftoppm\` (${r.popplerVersion}, libjpeg-turbo)`} | ${x.pages} (${f(x.pdf_bytes / 1e6, 2)} MB) | ${f(x.wall_s, 1)} s | **${f(x.pages_per_s, 2)}** | ${f(x.cpu_s_per_page, 2)} | ${Math.round(x.peak_rss_mb)} MB | ${f(x.jpeg_bytes / 1e6, 1)} MB |`,
  );
  const ratio = (kind: string, pick: (x: PdfFigure) => number) => {
    const job = r.figures.find((x) => x.kind === kind && x.side === "pdf-job");
    const ref = r.figures.find((x) => x.kind === kind && x.side === "pdftoppm");
    return job && ref ? f(pick(job) / pick(ref), 2) : "—";
  };
  const longRows = r.long.map(
    (x) =>
      `| ${x.kind} | ${x.pages} | ${f(x.pdf_bytes / 1e6, 1)} MB | ${f(x.split_s, 1)} s | ${f(x.wall_s, 0)} s | ${f(x.cpu_s, 0)} s | **${Math.round(x.peak_rss_mb)} MB** | ${x.guest.cpu_kind} ${x.guest.cpus}x ${x.guest.memory_mb} MB: ${x.peak_rss_mb <= x.guest.memory_mb * 0.8 ? "fits" : "**does not fit**"} (80% = ${Math.round(x.guest.memory_mb * 0.8)} MB) |`,
  );
  return `## 5. PDF: render throughput and memory, the worker's PDF job vs \`pdftoppm\`

Measured by \`bench/pdf.ts\` (\`BENCH_ONLY=pdf\`): generated PDFs (\`local/pdf-samples.ts\`) of Letter text pages and of
full-page scans (a 150-DPI JPEG a page), rendered at ${r.dpi} DPI to JPEG quality ${r.quality} by the job's own functions
(\`bench/pdf-one.ts\`: pdf.js on @napi-rs/canvas, sharp with mozjpeg 4:2:0 as the TIFF phase encodes; render only, as
\`pdftoppm\` does) and by \`pdftoppm -r ${r.dpi} -jpeg -jpegopt quality=${r.quality}\` (libjpeg-turbo, no mozjpeg). Each its own
process under GNU time; medians of the runs.

| pages | renderer | pages (file) | wall | pages/s | CPU-s/page | peak RSS | JPEG out |
|---|---|---:|---:|---:|---:|---:|---:|
${rows.join("\n")}

Throughput, job ÷ pdftoppm: text ${ratio("text", (x) => x.pages_per_s)}×, scans ${ratio("scan", (x) => x.pages_per_s)}×; peak RSS ${ratio("text", (x) => x.peak_rss_mb)}× / ${ratio("scan", (x) => x.peak_rss_mb)}×; JPEG bytes ${ratio("text", (x) => x.jpeg_bytes)}× / ${ratio("scan", (x) => x.jpeg_bytes)}×. The
baseline row separates the renderer's cost from mozjpeg's: what is left between it and pdftoppm is pdf.js (JavaScript)
against poppler (C++), plus a copy of each page's pixels from the canvas to sharp.
${longRows.length > 0 ? `
Long PDFs through the whole job (split every page with pdf-lib, then render every page), once each — memory must not
grow with the page count (\`BENCH_PDF_LONG_PAGES\`):

| pages | count | file | split | whole job | CPU | peak RSS | the machine the sizing picks (pdfGuest) |
|---|---:|---:|---:|---:|---:|---:|---|
${longRows.join("\n")}
` : ""}`;
}
