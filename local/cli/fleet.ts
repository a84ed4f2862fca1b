// `fanout fleet`: the Fly app's fleet (GET /fleet) — its limits, what every running batch holds and
// may hold, who waits for room, and the Fly API tokens left. Registered in commands.ts.
import { parseArgs } from "node:util";
import { z } from "zod";
import { describeZodError } from "../../shared/contracts.ts";
import { ApiError } from "../api.ts";
import { table } from "../progress.ts";
import { context } from "./context.ts";
import { EXIT, printJson } from "./output.ts";

const Resources = z.object({ machines: z.number(), vcpus: z.number(), memory_mb: z.number() });
const Fleet = z.looseObject({
  app: z.string(),
  limits: z.object({ configured: Resources, effective: Resources, learned: z.string().nullable() }),
  live: Resources,
  batches: z.array(
    z.looseObject({
      batch_id: z.string(),
      priority: z.number(),
      demand: z.number(),
      share: z.number(),
      live: Resources,
      waiting: z.boolean(),
      position: z.number().nullable(),
      stale: z.boolean().default(false),
    }),
  ),
  waiting: z.array(z.string()),
  api_tokens: z.record(z.string(), z.object({ tokens: z.number(), per_second: z.number(), burst: z.number(), blocked_until: z.string().nullable() })),
});
export type FleetView = z.infer<typeof Fleet>;

export async function fleet(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: "boolean" } } });
  const { api } = context();
  const parsed = Fleet.safeParse(await api.fleet());
  if (!parsed.success) throw new ApiError(`the orchestrator at ${api.url} answered an unexpected fleet: ${describeZodError(parsed.error)}`);
  if (values.json) printJson(parsed.data);
  else console.log(describeFleet(parsed.data));
  return EXIT.ok;
}

/** The fleet as a few lines and a table, for a terminal or a pipe alike. */
export function describeFleet(f: FleetView): string {
  const l = f.limits.effective;
  const lines = [
    `fleet of ${f.app}: ${f.live.machines} of ${l.machines} machines, ${f.live.vcpus} of ${l.vcpus} vCPUs, ${f.live.memory_mb} of ${l.memory_mb} MB live`,
  ];
  if (f.limits.learned) lines.push(`limits lowered: ${f.limits.learned} (configured: ${f.limits.configured.machines} machines, ${f.limits.configured.vcpus} vCPUs, ${f.limits.configured.memory_mb} MB)`);
  if (f.batches.length === 0) lines.push("no batch is running");
  else {
    const rows = f.batches.map((b) => [
      b.batch_id,
      b.priority,
      b.demand,
      b.share,
      b.live.machines,
      b.live.vcpus,
      b.live.memory_mb,
      b.waiting ? `waiting (${b.position ?? "?"} of ${f.waiting.length})` : b.stale ? "not seen for 5 min" : "running",
    ]);
    lines.push("", table(["batch", "priority", "wants", "share", "machines", "vCPUs", "memory MB", "state"], rows));
  }
  const tokens = Object.entries(f.api_tokens).map(
    ([action, t]) => `${action} ${t.tokens.toFixed(1)}/${t.burst} (${t.per_second}/s)${t.blocked_until ? ` held back until ${t.blocked_until}` : ""}`,
  );
  lines.push("", `Fly API tokens: ${tokens.join(", ")}`);
  return lines.join("\n");
}
