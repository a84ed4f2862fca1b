// A batch's pipeline: the phases it runs, in order, as recorded when it started (its message's
// `phases`, or the registry's default). The engine chains phases from it and names none itself.
import type { BatchMeta } from "../store/index.ts";

/** The batch's phases in order; a batch recorded before pipelines existed runs only the phase it is in. */
export function pipelineOf(meta: Pick<BatchMeta, "pipeline_json" | "phase">): string[] {
  return meta.pipeline_json ? (JSON.parse(meta.pipeline_json) as string[]) : [meta.phase];
}

/** The phase after `phase` in the batch's pipeline, or null when it is the last. */
export function nextPhase(meta: Pick<BatchMeta, "pipeline_json" | "phase">, phase: string): string | null {
  const pipeline = pipelineOf(meta);
  const i = pipeline.indexOf(phase);
  return i >= 0 && i + 1 < pipeline.length ? pipeline[i + 1] : null;
}
