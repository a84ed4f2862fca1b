// A folder of TIFFs and PDFs through the whole local stack, submitted with the CLI (`fanout submit`):
// the default pipeline converts the TIFFs and splits the PDFs — a multi-page one (text, a scan, a
// page turned 90°, a card), and one found by its %PDF- signature alone (`minutes.bin`) — with real
// fly-worker processes; every page's JPEG and single-page PDF is then read back from S3.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { PDFDocument } from "@cantoo/pdf-lib";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makePdf, PAGE, textPdf } from "../../local/pdf-samples.ts";
import { generateSamples, type GeneratedSample } from "../../local/samples.ts";
import { getBytes, listObjects } from "../../local/submit.ts";
import { cli, cliEnv } from "./support/cli.ts";
import { BACKSTOP_MS, checkJpegs, expectedJpegKeys, startE2EStack, waitNoLiveMachines, type E2EStack } from "./support/stack.ts";

/** Pixel sizes at 300 DPI, by hand: points × 300 / 72, rounded up. Letter 612×792 → 2550×3300; a card 252×144 → 1050×600. */
const REPORT = [
  { spec: {}, size: [2550, 3300] },
  { spec: { scan: { r: 200, g: 215, b: 230 } }, size: [2550, 3300] },
  { spec: { rotate: 90 as const }, size: [3300, 2550] },
  { spec: { size: PAGE.card }, size: [1050, 600] },
];

describe("a folder of TIFFs and PDFs", () => {
  let stack: E2EStack;
  let env: Record<string, string>;
  let tiffs: GeneratedSample[];
  const batchId = "e2e-tiff-pdf";
  const dir = () => join(stack.workDir, "folder");

  beforeAll(async () => {
    stack = await startE2EStack();
    env = cliEnv(stack);
    tiffs = await generateSamples(dir(), { count: 3, width: 320, height: 240, perFolder: 10 });
    await mkdir(join(dir(), "papers"), { recursive: true });
    await writeFile(join(dir(), "papers", "report.pdf"), await makePdf(REPORT.map((p) => p.spec)));
    // No .pdf name: the CLI uploads it as application/octet-stream, and its first bytes say what it is.
    await writeFile(join(dir(), "papers", "minutes.bin"), await textPdf(2));
  }, BACKSTOP_MS);
  afterAll(async () => {
    await stack?.dispose();
  });

  /** The batch is DONE with both phases' counts exact, and every TIFF's JPEG and every PDF page's JPEG (its hand-computed size, decodable) and single-page PDF is in S3. */
  async function expectEveryOutput(batchId: string): Promise<void> {
    const status = await stack.api.status(batchId);
    expect(status.status).toBe("DONE");
    expect(status.phases.map((p) => [p.name, p.total, p.done, p.failed])).toEqual([
      ["TIFF_CONVERSION", 3, 3, 0],
      ["PDF_SPLITTING", 2, 2, 0],
    ]);
    const prefix = `batches/${batchId}/`;
    const keys = (await listObjects(stack.s3client, stack.bucket, prefix)).map((o) => o.key);
    // The TIFFs' JPEGs, as the TIFF-only e2e expects them.
    const tiffJpegs = expectedJpegKeys(prefix, tiffs);
    expect(keys.filter((k) => k.endsWith(".jpg") && !k.includes("/papers/")).sort()).toEqual(tiffJpegs);
    expect(await checkJpegs(stack, tiffJpegs)).toEqual([]);

    const pages = (stem: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}papers/${stem}-p00${i + 1}`);
    const expected = [...pages("report", REPORT.length), ...pages("minutes", 2)];
    expect(keys.filter((k) => k.includes("/papers/") && /-p\d+\.(jpg|pdf)$/.test(k)).sort()).toEqual(expected.flatMap((p) => [`${p}.jpg`, `${p}.pdf`]).sort());
    const sizes = [...REPORT.map((p) => p.size), [2550, 3300], [2550, 3300]];
    for (const [i, page] of expected.entries()) {
      const jpeg = await getBytes(stack.s3client, stack.bucket, `${page}.jpg`);
      const m = await sharp(jpeg).metadata();
      expect([page, m.format, m.width, m.height]).toEqual([page, "jpeg", ...sizes[i]]);
      await sharp(jpeg).raw().toBuffer(); // every pixel decodes
      const single = await PDFDocument.load(await getBytes(stack.s3client, stack.bucket, `${page}.pdf`));
      expect([page, single.getPageCount()]).toEqual([page, 1]);
    }
    const rotated = await PDFDocument.load(await getBytes(stack.s3client, stack.bucket, `${prefix}papers/report-p003.pdf`));
    expect(rotated.getPage(0).getRotation().angle).toBe(90);

  }

  it("`fanout submit --watch` runs TIFF_CONVERSION then PDF_SPLITTING to DONE; every page's JPEG and PDF is in S3", async () => {
    const run = await cli(["submit", dir(), "--batch-id", batchId, "--watch"], env);
    expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(0);
    expect(run.stdout).toMatch(/100%\s+5\/5 done\s+DONE/);

    await expectEveryOutput(batchId);
    // The CLI's status says what each phase of the pipeline did, on what machines, at what estimated cost.
    const cliStatus = await cli(["status", batchId], env);
    expect(cliStatus.code, cliStatus.stderr).toBe(0);
    expect(cliStatus.stdout).toContain("phases (pipeline TIFF_CONVERSION → PDF_SPLITTING):");
    expect(cliStatus.stdout).toMatch(/^ {2}TIFF_CONVERSION {2}3\/3 done, 0 failed · 3 machines \((shared-cpu|performance)-\d+x \d+ MB.*\), [0-9.]+ machine-seconds, estimated \$[0-9.]+, all in \$[0-9.]+$/m);
    expect(cliStatus.stdout).toMatch(/^ {2}PDF_SPLITTING {4}2\/2 done, 0 failed · 2 machines \((shared-cpu|performance)-\d+x \d+ MB.*\)/m);

    const pdfTasks = (await stack.api.allTasks(batchId, "done")).filter((t) => t.task_id.startsWith("pdf-"));
    expect(pdfTasks.map((t) => t.input_key).sort()).toEqual([`batches/${batchId}/papers/minutes.bin`, `batches/${batchId}/papers/report.pdf`]);
    expect(await waitNoLiveMachines(stack)).toEqual({ live: 0, pids: [] });
  });

  it("in pool mode (`--pool`, the production default's path): each phase's pool leases its tasks, the PDF job runs in a lease like the conversion, the same outputs", async () => {
    const pooled = `${batchId}-pool`;
    const run = await cli(["submit", dir(), "--batch-id", pooled, "--pool", "--watch"], env);
    expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(0);
    await expectEveryOutput(pooled);
    const status = await stack.api.status(pooled);
    expect(status.mode).toBe("pool");
    expect(await waitNoLiveMachines(stack)).toEqual({ live: 0, pids: [] });
  });
});
