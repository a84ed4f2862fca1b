// The engine chains phases from each batch's recorded pipeline: no engine file (orchestrator/engine/*,
// batch-do.ts) names a phase, by its name or by its module. Adding a phase is one file and one registry line.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { phaseNames } from "../../orchestrator/phases/index.ts";

const ORCHESTRATOR = fileURLToPath(new URL("../../orchestrator/", import.meta.url));
const engineFiles = [...readdirSync(join(ORCHESTRATOR, "engine")).filter((f) => f.endsWith(".ts")).map((f) => join("engine", f)), "batch-do.ts"];
const phaseModules = readdirSync(join(ORCHESTRATOR, "phases")).filter((f) => f.endsWith(".ts") && f !== "index.ts" && f !== "types.ts").map((f) => f.replace(/\.ts$/, ""));

describe("the engine names no phase", () => {
  it.each(engineFiles)("%s", (file) => {
    const source = readFileSync(join(ORCHESTRATOR, file), "utf8");
    const named = [...phaseNames(), "TIFF", "PDF", "CHECKSUM"].filter((name) => source.includes(name));
    const imported = phaseModules.filter((m) => source.includes(`phases/${m}`));
    expect({ named, imported }).toEqual({ named: [], imported: [] });
  });

  it("sees every registered phase (so the check above means something)", () => {
    expect(phaseNames()).toEqual(["TIFF_CONVERSION", "PDF_SPLITTING", "CHECKSUM"]);
    expect(phaseModules.sort()).toEqual(["checksum", "pdf-splitting", "tiff-conversion"]);
  });
});
