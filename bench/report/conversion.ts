// Section 2 of RESULTS.md: the fly-worker pipeline against the vips CLI, per scan size and setting.
import { type ConversionFigure, SETTINGS } from "../conversion.ts";
import { CONVERSION_CPU_S_PER_MP, PROCESS_START_CPU_S } from "../../orchestrator/phases/tiff-conversion.ts";
import { f, mb, n0 } from "./format.ts";

export function conversionSection(conversion: ConversionFigure[], repeats: number): string {
  if (conversion.length === 0) return "";
  const sizes = [...new Set(conversion.map((c) => c.megapixels))];
  const lines: string[] = [];
  for (const mp of sizes) {
    const at = conversion.filter((c) => c.megapixels === mp);
    const c0 = at[0];
    lines.push(
      `### ${f(mp, 1)} MP (${c0.width}×${c0.height}, LZW TIFF ${mb(c0.tiff_bytes)} MiB; \`guestFor\` picks ${c0.guest.cpu_kind}-cpu-${c0.guest.cpus}x, ${c0.guest.memory_mb} MB)`,
      "",
      "| settings | side | wall time | CPU time | MP/s | peak RSS | fits the machine | output | vs vips, pipeline in-process ÷ vips process | vs vips, process ÷ process |",
      "|---|---|---:|---:|---:|---:|---|---:|---:|---:|",
    );
    for (const c of at) {
      const vipsSame = at.find((x) => x.setting === c.setting && x.side === "vips");
      const vipsRef = at.find((x) => x.setting === "optimised" && x.side === "vips")!;
      const time = c.in_process_s ?? c.process_s;
      let ratio = "";
      let ratioProcess = "";
      if (c.side === "pipeline" && vipsSame) {
        ratio = `**${f(time / vipsSame.process_s, 2)}×**`;
        ratioProcess = `**${f(c.process_s / vipsSame.process_s, 2)}×**`;
      } else if (c.side === "pipeline") ratio = `(${f(time / vipsRef.process_s, 1)}× vips Huffman-optimised; not the same settings)`;
      const timeText = c.side === "pipeline" ? `${f(time, 2)} s (process ${f(c.process_s, 2)} s)` : `${f(time, 2)} s`;
      const fits = c.peak_rss_mb <= c.guest.memory_mb ? `yes (${n0(c.guest.memory_mb)} MB)` : `**no** (${n0(c.guest.memory_mb)} MB)`;
      lines.push(
        `| ${SETTINGS[c.setting].label}${c.encoder && c.setting === "contract" ? `<br>chosen: ${c.encoder}` : ""} | ${c.side === "pipeline" ? "fly-worker pipeline" : "vips CLI"} | ${timeText} | ${f(c.cpu_s, 2)} s | ${n0(c.mp_per_s)} | ${n0(c.peak_rss_mb)} MiB | ${fits} | ${mb(c.output_bytes)} MiB | ${ratio} | ${ratioProcess} |`,
      );
    }
    lines.push("");
  }
  const same = conversion.filter((c) => c.side === "pipeline" && SETTINGS[c.setting].vips);
  const worst = Math.max(
    ...same.map((c) => c.in_process_s! / conversion.find((x) => x.megapixels === c.megapixels && x.setting === c.setting && x.side === "vips")!.process_s),
  );
  const worstProcess = Math.max(
    ...same.map((c) => c.process_s / conversion.find((x) => x.megapixels === c.megapixels && x.setting === c.setting && x.side === "vips")!.process_s),
  );
  const contract = conversion.filter((c) => c.side === "pipeline" && c.setting === "contract");
  const cpuPerMp = contract.map((c) => `${f(c.megapixels, 0)} MP ${f(c.cpu_s / c.megapixels, 3)}`).join(", ");
  const overRss = conversion.filter((c) => c.side === "pipeline" && c.peak_rss_mb > c.guest.memory_mb);
  return `## 2. Conversion: fly-worker pipeline vs \`vips\` CLI

**Target: within 1.1× of \`vips\` at identical settings; peak RSS within the machine \`guestFor\` picks.** Worst
time ratio at identical settings, two honest figures for two questions: **${f(worst, 2)}×** with the pipeline timed inside
its process (what a pool machine, which starts Node once, pays per task) and **${f(worstProcess, 2)}×** process to process
(what a single-task machine, which starts Node and loads sharp for every task, pays). Pipeline runs over their machine's memory: ${overRss.length === 0 ? "none" : overRss.map((c) => `${f(c.megapixels, 0)} MP ${c.setting}`).join(", ")}.

${lines.join("\n")}
How it is measured (\`bench/conversion.ts\`, \`bench/convert-one.ts\`): each run is its own process under GNU
\`time\` (wall time, peak RSS of that process), ${repeats} runs per cell, interleaved, medians reported. The pipeline side
runs fly-worker's own code — \`readTiffDirectories\`, \`selectPages\`, \`planEncoder\`, \`convertPage\` (file input,
\`sequentialRead\`, autoOrient, flatten, sRGB, JPEG) — with the machine's env (\`MALLOC_ARENA_MAX=2\`, as in
fly-worker/Dockerfile); its **wall time** is measured inside the process from reading the TIFF header to the JPEG
on disk (the process time, which adds Node start and loading sharp, is shown beside it); its peak RSS is the
whole Node process. The vips side is \`vips jpegsave IN OUT --Q 95 --subsample-mode on --strip
[--optimize-coding]\` (Debian's libvips-tools, libjpeg-turbo), its wall time the whole process. Both use
every core (2 threads here). Download and upload are not included. The contract row is what a machine of the
\`guestFor\` size runs by default (JPEG_QUALITY 95, MOZJPEG true): \`planEncoder\` keeps mozjpeg when its memory
model says it fits that machine and falls back to the streaming encoder when it does not; Debian's vips has no
mozjpeg, so that row has no same-settings comparison. **CPU time** is the process's user + system time (GNU time): the figure Fly's CPU quota is charged, and the rate
the sizing starts from (contract encoder, CPU-seconds per megapixel, whole process: ${cpuPerMp}; \`tiff-conversion.ts\`'s
one starting figure, shared with the makespan simulation, is ${PROCESS_START_CPU_S} CPU-s to start + ${CONVERSION_CPU_S_PER_MP} per MP, from the 100 MP contract
run of the previous full bench; the engine replaces it with what a batch's machines report, section 3). Inputs are generated once per machine (cached in
${"`$TMPDIR/fanout-bench/`"}): a colour ramp overlaid with film grain, LZW-compressed, so that TIFF and JPEG bytes per
pixel are those of real scans.
`;
}

