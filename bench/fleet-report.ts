// Section 6 of bench/RESULTS.md: the fleet bench's figures (bench/workerd/fleet.bench-run.ts) against
// issue 24's targets. `BENCH_ONLY=fleet npm run bench` rewrites this section alone in RESULTS.md.
import { readFileSync, writeFileSync } from "node:fs";
import { jain } from "../orchestrator/fly/fleet.ts";

interface Resources {
  machines: number;
  vcpus: number;
  memory_mb: number;
}
interface BatchFigure {
  id: string;
  scans: number;
  priority: number;
  submitted_s: number;
  makespan_s: number;
  machines: number;
  guest: string;
}
/** One sample of scenario (b): per batch what it holds and whether it contends (work waiting, wanting more machines). */
interface Sample {
  t: number;
  batches: Record<string, { running: boolean; waiting_work: boolean; wants_more: boolean; live: Resources }>;
  total: Resources;
}
interface Fairness {
  samples: number;
  contended_samples: number;
  jain_mean: number;
  jain_min: number;
  priority_ratio_mean: number;
}
export interface FleetFigures {
  scale: number;
  /** Null when BENCH_FLEET_SCENARIOS left the scenario out. */
  a: { together: BatchFigure[]; large_alone_s: number; small_alone_s: number; large_ratio: number; small_ratio: number; peak: Resources; limits: Resources; real_s: number } | null;
  b: { figures: BatchFigure[]; all_five: Fairness; whole_run: Fairness; peak: Resources; limits: Resources; real_s: number; samples?: Sample[] } | null;
  c: {
    figures: BatchFigure[];
    utilisation: { waiting_samples: number; mean_while_work_waits: number; mean_after_ramp: number; ramp_s: number; min_after_ramp: number };
    peak: Resources;
    limits: Resources;
    exceeded: boolean;
    real_s: number;
  } | null;
}

const HEADING = "## 6. The fleet: batches at once";
const f = (x: number, digits = 2) => (Number.isFinite(x) ? x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : "n/a");
const n0 = (x: number) => Math.round(x).toLocaleString("en-US");
const res = (r: Resources) => `${n0(r.machines)} machines, ${n0(r.vcpus)} vCPUs, ${n0(r.memory_mb / 1024)} GB`;
const mark = (ok: boolean) => (ok ? "met" : "**not met**");
const batchRows = (rows: BatchFigure[]) =>
  rows.map((b) => `| ${b.id} | ${n0(b.scans)} | ${b.priority} | ${n0(b.submitted_s)} s | ${n0(b.makespan_s)} s | ${b.guest} × ${n0(b.machines)} |`).join("\n");

export function fleetSection(x: FleetFigures, cpuS: number): string {
  const { a, b, c } = x;
  if (!a && !b && !c) return `${HEADING}\n\n(No scenario ran: BENCH_FLEET_SCENARIOS.)\n`;
  const rows = [
    ...(a
      ? [
          `| (a) small batch's makespan ÷ alone | ≤ 2× | **${f(a.small_ratio, 3)}×** (${n0(a.together[1]?.makespan_s ?? NaN)} s vs ${n0(a.small_alone_s)} s) | ${mark(a.small_ratio <= 2)} |`,
          `| (a) large batch's makespan ÷ alone | ≤ 1.05× | **${f(a.large_ratio, 3)}×** (${n0(a.together[0]?.makespan_s ?? NaN)} s vs ${n0(a.large_alone_s)} s) | ${mark(a.large_ratio <= 1.05)} |`,
        ]
      : []),
    ...(b
      ? [
          `| (b) Jain's index of vCPUs per weight, batches with work waiting, while all five run | ≥ 0.9 | **${f(b.all_five.jain_mean, 3)}** mean, ${f(b.all_five.jain_min, 3)} lowest (${b.all_five.contended_samples} samples) | ${mark(b.all_five.jain_mean >= 0.9)} |`,
          `| (b) the same over the whole run (while ≥ 2 batches have work waiting) | – | ${f(b.whole_run.jain_mean, 3)} mean, ${f(b.whole_run.jain_min, 3)} lowest (${b.whole_run.contended_samples} samples) | |`,
          `| (b) priority-3 batch's vCPUs ÷ an equal batch's, while all five run | ≥ 2.5× | **${f(b.all_five.priority_ratio_mean, 2)}×** (whole run ${f(b.whole_run.priority_ratio_mean, 2)}×) | ${mark(b.all_five.priority_ratio_mean >= 2.5)} |`,
        ]
      : []),
    ...(c
      ? [
          `| (c) fleet utilisation while work waits (its binding resource) | ≥ 90% | **${f(100 * c.utilisation.mean_while_work_waits, 1)}%** mean; after the create ramp (${n0(c.utilisation.ramp_s)} s) ${f(100 * c.utilisation.mean_after_ramp, 1)}% mean, ${f(100 * c.utilisation.min_after_ramp, 1)}% lowest | ${mark(c.utilisation.mean_while_work_waits >= 0.9)} |`,
          `| (c) peak live vs the limits | never over | ${res(c.peak)} vs ${res(c.limits)} | ${mark(!c.exceeded)} |`,
        ]
      : []),
    ...[a && ["(a)", a] as const, b && ["(b)", b] as const]
      .filter((v) => v !== null)
      .map(([name, r]) => `| peak live in ${name} vs its limits | never over | ${res(r.peak)} vs ${res(r.limits)} | ${mark(r.peak.vcpus <= r.limits.vcpus && r.peak.machines <= r.limits.machines && r.peak.memory_mb <= r.limits.memory_mb)} |`),
  ];
  const ran = [a && "a", b && "b", c && "c"].filter(Boolean).join(", ");
  return `${HEADING} (real engine + fleet + emulator, simulated time)

**Targets (issue 24):** (a) a 10-scan batch submitted 5 minutes after a 10,000-scan batch starts finishes within 2× its
makespan alone, the large one within 1.05×; (b) five batches of 10 to 5,000 scans at once, one of priority 3: Jain's
index of weighted vCPU share ≥ 0.9 while all five run, and the priority-3 batch ≥ 2.5× an equal batch's share; (c) a
fleet limit that binds: utilisation ≥ 90% whenever work waits, limits never exceeded.${x.scale !== 1 ? ` **(Run at scale ${x.scale}: batch sizes × ${x.scale}.)**` : ""}${ran !== "a, b, c" ? ` **This run: scenario${ran.length > 1 ? "s" : ""} ${ran} (BENCH_FLEET_SCENARIOS).**` : ""}

Built as section 3 (\`bench/workerd/fleet.bench-run.ts\` on \`sim-machines.ts\`): every batch is its own BatchDO, the fleet is the
real FlyBudget DO, machines are Fly's CPU model (${f(cpuS, 1)} CPU-s per 100 MP scan, 5 s boot), creates at Fly's limit
(1/s, burst 3), every other API action at its documented limit; each batch sizes its pool alone (no per-batch cap) and
the fleet shares the machines. Every 5 s of virtual time the bench reads what each batch holds on the emulator and
whether it has tasks waiting (pending or retrying); the emulator keeps the peak of what was live at every create.

| scenario | target | figure | |
|---|---|---|---|
${rows.join("\n")}

| batch | scans | priority | submitted | makespan | machines (size × count) |
|---|---:|---:|---:|---:|---|
${batchRows([...(a?.together ?? []), ...(b?.figures ?? []), ...(c?.figures ?? [])])}
${b ? rampRows(b) : ""}
Real time: ${[a && `(a) ${n0(a.real_s)} s for the three runs`, b && `(b) ${n0(b.real_s)} s`, c && `(c) ${n0(c.real_s)} s`].filter(Boolean).join(", ")}.
`;
}

/** Scenario (b) sample by sample while all five run: vCPUs (machines) per batch, * where it contends, and the sample's Jain index. */
function rampRows(b: NonNullable<FleetFigures["b"]>): string {
  if (!b.samples?.length) return "";
  const ids = b.figures.map((x) => x.id);
  const weight = (id: string) => b.figures.find((x) => x.id === id)?.priority ?? 1;
  const rows = b.samples.map((s) => {
    const contending = ids.filter((id) => s.batches[id].waiting_work && s.batches[id].wants_more);
    const j = contending.length >= 2 ? f(jain(contending.map((id) => s.batches[id].live.vcpus / weight(id))), 3) : "–";
    const cells = ids.map((id) => `${n0(s.batches[id].live.vcpus)} (${n0(s.batches[id].live.machines)})${contending.includes(id) ? " *" : ""}`);
    return `| ${n0(s.t)} s | ${cells.join(" | ")} | ${j} |`;
  });
  return `
Scenario (b) while all five run, every sample: vCPUs (machines) each batch holds; * where it contends (work waiting,
wanting more machines than it holds), the batches Jain's index is taken over (vCPUs ÷ priority). The first samples are the
create ramp (one create a second for the whole app), when a few machines of 2 to 8 vCPUs cannot yet be shared evenly.

| t | ${ids.map((id) => `${id}${weight(id) > 1 ? ` (priority ${weight(id)})` : ""}`).join(" | ")} | Jain |
|---:|${ids.map(() => "---:|").join("")}---:|
${rows.join("\n")}
`;
}

/** Puts `section` in place of RESULTS.md's section 6 (or at its end). */
export function writeFleetSection(path: string, section: string): void {
  const text = readFileSync(path, "utf8");
  const at = text.indexOf(HEADING);
  if (at < 0) return writeFileSync(path, `${text.trimEnd()}\n\n${section}`);
  const next = text.indexOf("\n## ", at + HEADING.length);
  writeFileSync(path, `${text.slice(0, at)}${section}${next < 0 ? "" : text.slice(next)}`);
}
