// A page libvips cannot read as stored (kinds.ts says which) is rewritten into a single-page
// TIFF in the task's directory first; this runs the rewrite and hands back the page to convert.
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { describeDecodeError, TaskError, errorMessage } from "./errors.ts";
import { inspectPage, type PageKind } from "./kinds.ts";
import { floatMapping, NoRangeError } from "./levels.ts";
import { rebuildOldJpeg } from "./ojpeg.ts";
import { floatRange, rebuildPage, transcodePage } from "./rewrite.ts";
import { pageNumber, readTiffDirectories, type TiffDirectory } from "./tiff.ts";

export interface PreparedPage {
  /** The file to convert: the input itself, or the rewritten page (the caller removes it). */
  path: string;
  page: TiffDirectory;
  kind: PageKind;
  notes: string[];
  steps: string[];
}

/** At most a decompression, a rearrangement and a rescale: a page that needs more is a bug in kinds.ts. */
const MAX_STEPS = 3;

export async function preparePage(input: string, page: TiffDirectory, kind: PageKind, workDir: string, maxPixels: number): Promise<PreparedPage> {
  const prepared: PreparedPage = { path: input, page, kind, notes: [], steps: [] };
  const n = pageNumber(page);
  while (prepared.kind.prepare) {
    const step = prepared.kind.prepare;
    if (prepared.steps.length >= MAX_STEPS) throw new TaskError("internal", `page ${n} still needs rewriting after ${prepared.steps.join(", ")}`);
    const output = join(workDir, `page-${n}-${prepared.steps.length + 1}.tif`);
    if (step.step === "float-range") {
      await applyFloatRange(prepared);
      continue;
    }
    try {
      if (step.step === "transcode") await transcodePage(prepared.path, prepared.page, output);
      else if (step.step === "ojpeg") await rebuildOldJpeg(prepared.path, prepared.page, output);
      else await rebuildPage(prepared.path, prepared.page, output, step.plan);
    } catch (error) {
      await rm(output, { force: true });
      if (error instanceof TaskError) throw error;
      throw new TaskError("input", `could not decode page ${n} (${page.width}×${page.height}): ${describeDecodeError(errorMessage(error), prepared.path)}`, { retryable: false, cause: error });
    } finally {
      if (prepared.path !== input) await rm(prepared.path, { force: true });
    }
    prepared.steps.push(step.step === "rebuild" ? `rebuild${step.plan.recode ? ` (${step.plan.recode})` : ""}` : step.step);
    prepared.path = output;
    const [rewritten] = await readTiffDirectories(output);
    prepared.page = { ...rewritten, number: n };
    const again = inspectPage(prepared.page, maxPixels);
    // A rescaled float page is in 0–1 now: its range is not read twice.
    const rescaled = step.step === "rebuild" && step.plan.recode === "float-unit";
    prepared.kind = rescaled && again.prepare?.step === "float-range" ? { ...again, prepare: undefined } : again;
  }
  return prepared;
}

/**
 * The range rule of levels.ts for a float page: grey is mapped in the conversion itself; RGB in
 * 0–1 libvips encodes as it is (scRGB), outside it a copy is rescaled into 0–1 first; CMYK ink is
 * written as 8-bit CMYK (libvips converts CMYK before any scaling could apply).
 */
async function applyFloatRange(prepared: PreparedPage): Promise<void> {
  const { page, kind } = prepared;
  const colour = page.photometric === 5 ? "cmyk" : kind.grey ? "grey" : "rgb";
  const samples = { grey: 1, rgb: 3, cmyk: 4 }[colour];
  let mapping;
  try {
    mapping = floatMapping(await floatRange(prepared.path, page, samples), colour);
  } catch (error) {
    if (error instanceof NoRangeError) throw new TaskError("input", `page ${pageNumber(page)} ${error.message}`, { retryable: false });
    throw new TaskError("input", `could not decode page ${pageNumber(page)} (${page.width}×${page.height}): ${describeDecodeError(errorMessage(error), prepared.path)}`, { retryable: false, cause: error });
  }
  for (const note of mapping.notes) if (!prepared.notes.includes(note)) prepared.notes.push(note);
  const { scale, offset } = mapping;
  if (colour === "grey") prepared.kind = { ...kind, prepare: undefined, linear: { scale, offset } };
  else if (colour === "rgb" && !mapping.note) prepared.kind = { ...kind, prepare: undefined };
  else prepared.kind = { ...kind, prepare: { step: "rebuild", plan: { keepSamples: samples, extraSamples: [], recode: colour === "cmyk" ? "float8" : "float-unit", mapping: { scale, offset } } } };
}
