// Section 2's encoder trade-off: what the contract's mozjpeg settings cost a scan against
// libjpeg-turbo with Huffman optimisation and against trellis quantisation alone, at Q95: the
// CPU-seconds (measured), the JPEG's bytes (measured), and what both cost all in — the CPU at a
// performance vCPU's price, Fly egress of the bytes, R2 storage for 1, 12 and 60 months.
import type { ConversionFigure } from "../conversion.ts";
import { egressPerByte, R2_PRICES, r2StorageUsd } from "../../shared/cost-model.ts";
import { FLY_PRICES } from "../../shared/fly-model.ts";
import { f, mb, usd } from "./format.ts";

const NAMES = { contract: "the seed's: mozjpeg (trellis, progressive scans, quant table 3, Huffman optimisation)", optimised: "libjpeg-turbo with Huffman optimisation", trellis: "trellis quantisation only (with Huffman optimisation)" } as const;
const MONTHS = [1, 12, 60];

export function encoderSection(conversion: ConversionFigure[]): string {
  const pipeline = conversion.filter((c) => c.side === "pipeline" && (c.setting === "contract" || c.setting === "optimised" || c.setting === "trellis"));
  if (pipeline.length === 0) return "";
  const cpuPrice = FLY_PRICES.perCpuSecond.performance;
  const egress = egressPerByte("iad");
  const lines: string[] = [];
  for (const mp of [...new Set(pipeline.map((c) => c.megapixels))]) {
    const at = pipeline.filter((c) => c.megapixels === mp);
    const base = at.find((c) => c.setting === "contract");
    lines.push(`#### ${f(mp, 0)} MP`, "", `| encoder (Q95, 4:2:0) | CPU-seconds | JPEG | CPU at a performance vCPU | egress | all in, kept 1 / 12 / 60 months | vs the seed's, 1 / 12 / 60 months |`, "|---|---:|---:|---:|---:|---:|---:|");
    for (const c of at) {
      const cpu = c.cpu_s * cpuPrice;
      const out = c.output_bytes * egress + R2_PRICES.classA;
      const totals = MONTHS.map((m) => cpu + out + r2StorageUsd(c.output_bytes, m));
      const baseTotals = base ? MONTHS.map((m) => base.cpu_s * cpuPrice + base.output_bytes * egress + R2_PRICES.classA + r2StorageUsd(base.output_bytes, m)) : null;
      const vs = baseTotals ? totals.map((t, i) => `${t >= baseTotals[i] ? "+" : "−"}${usd(Math.abs(t - baseTotals[i]) * 1000, 3)}`).join(" / ") : "";
      lines.push(
        `| ${NAMES[c.setting as keyof typeof NAMES]} | ${f(c.cpu_s, 2)} s | ${mb(c.output_bytes)} MiB | ${usd(cpu, 6)} | ${usd(c.output_bytes * egress, 6)} | ${totals.map((t) => usd(t, 6)).join(" / ")} | ${c.setting === "contract" ? "—" : `${vs} per 1,000 scans`} |`,
      );
    }
    lines.push("");
  }
  return `### The encoder trade-off: CPU against bytes kept

The contract's default stays the seed's mozjpeg settings; this is what the others would save and cost, per scan, all in:
the CPU-seconds measured above (GNU time, whole process) at a performance vCPU's price (${usd(cpuPrice, 9)}/s in iad: the pools
that convert large scans run on performance machines), Fly's egress of the JPEG (${usd(egress * 1e9, 2)}/GB), its R2 PUT
(${usd(R2_PRICES.classA, 7)}) and R2 Standard storage (${usd(R2_PRICES.storageGbMonth, 3)}/GB-month) for 1, 12 and 60 months (GB = 10⁹ bytes).

${lines.join("\n")}
Sources: ${FLY_PRICES.source}; ${R2_PRICES.source}.
`;
}
