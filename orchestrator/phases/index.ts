// The phase registry: adding a phase is one new file plus one line here. Its order is the default
// pipeline's: a batch whose message names no `phases` runs every phase here that is not opt-in, in
// this order, each doing whatever it finds to do (TIFFs converted, PDFs split).
import { checksum } from "./checksum.ts";
import { pdfSplitting } from "./pdf-splitting.ts";
import { tiffConversion } from "./tiff-conversion.ts";
import type { Phase } from "./types.ts";

const PHASES: readonly Phase[] = [tiffConversion, pdfSplitting, checksum];

const byName = new Map(PHASES.map((p) => [p.name, p]));

/** Adds a phase at run time (tests): a message may name it; the default pipeline stays the registry's. */
export function registerPhase(phase: Phase): void {
  byName.set(phase.name, phase);
}

export function getPhase(name: string): Phase {
  const phase = byName.get(name);
  if (!phase) throw new Error(`unknown phase ${name}; registered: ${[...byName.keys()].join(", ")}`);
  return phase;
}

/** Every registered phase's name, in registry order. */
export const phaseNames = (): string[] => [...byName.keys()];

/** The pipeline of a batch whose message names none: every phase that is not opt-in, in registry order. */
export function defaultPipeline(): string[] {
  return PHASES.filter((p) => !p.optIn).map((p) => p.name);
}

/** Why `phases` (a message's pipeline) cannot run here, or null: each must be registered, and named once. */
export function pipelineProblem(phases: readonly string[]): string | null {
  const unknown = phases.filter((p) => !byName.has(p));
  if (unknown.length > 0) return `phases: unknown phase ${unknown.map((p) => JSON.stringify(p)).join(", ")}; registered phases: ${phaseNames().join(", ")}`;
  const twice = phases.filter((p, i) => phases.indexOf(p) !== i);
  if (twice.length > 0) return `phases: ${[...new Set(twice)].join(", ")} named more than once; a pipeline runs each phase once`;
  return null;
}
