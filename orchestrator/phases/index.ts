// The phase registry: adding a phase is one new file plus one line here.
import { checksum } from "./checksum.ts";
import { tiffConversion } from "./tiff-conversion.ts";
import type { Phase } from "./types.ts";

// CHECKSUM follows no phase here (TIFF_CONVERSION's next is null): a batch runs it only when its pipeline asks.
const PHASES: readonly Phase[] = [tiffConversion, checksum];

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
