// A page libvips cannot read as stored (kinds.ts says which) is rewritten into a single-page
// TIFF in the task's directory first; this runs the rewrite and hands back the page to convert.
import { rm } from "node:fs/promises";
import { join } from "node:path";
import sharp from "sharp";
import { describeDecodeError } from "./convert.ts";
import { TaskError, errorMessage } from "./errors.ts";
import { inspectPage, type PageKind } from "./kinds.ts";
import { levelMapping, NoRangeError } from "./levels.ts";
import { rebuildOldJpeg } from "./ojpeg.ts";
import { rebuildPage, transcodePage, type RebuildPlan } from "./rewrite.ts";
import { pageNumber, readTiffDirectories, type TiffDirectory } from "./tiff.ts";

export interface PreparedPage {
  /** The file to convert: the input itself, or the rewritten page (the caller removes it). */
  path: string;
  page: TiffDirectory;
  kind: PageKind;
  notes: string[];
  steps: string[];
}

/** At most a decompression and then a rearrangement: a page that needs more is a bug in kinds.ts. */
const MAX_STEPS = 2;

export async function preparePage(input: string, page: TiffDirectory, kind: PageKind, workDir: string, maxPixels: number): Promise<PreparedPage> {
  const prepared: PreparedPage = { path: input, page, kind, notes: [], steps: [] };
  const n = pageNumber(page);
  while (prepared.kind.prepare) {
    const step = prepared.kind.prepare;
    if (prepared.steps.length >= MAX_STEPS) throw new TaskError("internal", `page ${n} still needs rewriting after ${prepared.steps.join(", ")}`);
    const output = join(workDir, `page-${n}-${prepared.steps.length + 1}.tif`);
    try {
      if (step.step === "transcode") await transcodePage(prepared.path, prepared.page, output);
      else if (step.step === "ojpeg") await rebuildOldJpeg(prepared.path, prepared.page, output);
      else await rebuildPage(prepared.path, prepared.page, output, await withMapping(step.plan, prepared));
    } catch (error) {
      await rm(output, { force: true });
      if (error instanceof TaskError) throw error;
      if (error instanceof NoRangeError) throw new TaskError("input", `page ${n} ${error.message}`, { retryable: false });
      throw new TaskError("input", `could not decode page ${n} (${page.width}×${page.height}): ${describeDecodeError(errorMessage(error), prepared.path)}`, { retryable: false, cause: error });
    } finally {
      if (prepared.path !== input) await rm(prepared.path, { force: true });
    }
    prepared.steps.push(step.step === "rebuild" ? `rebuild${step.plan.recode ? ` (${step.plan.recode})` : ""}` : step.step);
    prepared.path = output;
    const [rewritten] = await readTiffDirectories(output);
    prepared.page = { ...rewritten, number: n };
    prepared.kind = inspectPage(prepared.page, maxPixels);
  }
  return prepared;
}

/** Float CMYK ink becomes 8-bit by the range rule of levels.ts, which needs the page's range first. */
async function withMapping(plan: RebuildPlan, prepared: PreparedPage): Promise<RebuildPlan> {
  if (plan.recode !== "float8") return plan;
  const { channels } = await sharp(prepared.path, { page: prepared.page.index }).stats();
  const mapping = levelMapping({ format: "float", bits: prepared.page.bitsPerSample, cmyk: true }, channels.slice(0, plan.keepSamples), undefined);
  if (mapping.note) prepared.notes.push(mapping.note);
  return { ...plan, mapping };
}
