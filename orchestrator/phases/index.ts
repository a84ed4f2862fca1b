// The phase registry: adding a phase is one new file plus one line here.
import { tiffConversion } from "./tiff-conversion.ts";
import type { Phase } from "./types.ts";

const PHASES: readonly Phase[] = [tiffConversion];

export const FIRST_PHASE = tiffConversion.name;

const byName = new Map(PHASES.map((p) => [p.name, p]));

/** Adds a phase at run time (tests, and pipelines assembled from several modules). */
export function registerPhase(phase: Phase): void {
  byName.set(phase.name, phase);
}

export function getPhase(name: string): Phase {
  const phase = byName.get(name);
  if (!phase) throw new Error(`unknown phase ${name}; registered: ${[...byName.keys()].join(", ")}`);
  return phase;
}
