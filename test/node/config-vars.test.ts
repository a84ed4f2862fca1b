// wrangler.jsonc and orchestrator/config.ts describe one configuration: every var the code reads
// is in `vars` with its default, every secret is declared (not valued) under `secrets`.
import { readFile } from "node:fs/promises";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import { ConfigSchema } from "../../orchestrator/config.ts";

/** Values chosen per deployment, not the code's fallback (FLY_REGIONS: the code accepts none). */
const DEPLOYMENT_CHOICES = new Set(["FLY_REGIONS"]);
/** Secrets a deployment may leave unset (READ_TOKEN unset: status reads are open); never valued in vars. */
const OPTIONAL_SECRETS = new Set(["READ_TOKEN"]);

async function wranglerConfig(): Promise<{ vars: Record<string, string>; secrets: string[] }> {
  const text = await readFile(new URL("../../wrangler.jsonc", import.meta.url), "utf8");
  const parsed = ts.parseConfigFileTextToJson("wrangler.jsonc", text);
  if (parsed.error) throw new Error(`wrangler.jsonc: ${ts.flattenDiagnosticMessageText(parsed.error.messageText, "\n")}`);
  const config = parsed.config as { vars?: Record<string, string>; secrets?: { required?: string[] } };
  return { vars: config.vars ?? {}, secrets: config.secrets?.required ?? [] };
}

describe("wrangler.jsonc matches orchestrator/config.ts", () => {
  it("names every key the config reads, as a var or a declared secret, and nothing else", async () => {
    const { vars, secrets } = await wranglerConfig();
    const keys = Object.keys(ConfigSchema.shape).filter((k) => !OPTIONAL_SECRETS.has(k)).sort();
    expect([...Object.keys(vars), ...secrets].sort()).toEqual(keys);
    expect(Object.keys(vars).filter((k) => secrets.includes(k) || OPTIONAL_SECRETS.has(k)), "a secret must not have a value in vars").toEqual([]);
  });

  it("gives each var a value the config accepts, and the code's own default where it has one", async () => {
    const { vars } = await wranglerConfig();
    const shape = ConfigSchema.shape as Record<string, (typeof ConfigSchema.shape)[keyof typeof ConfigSchema.shape]>;
    for (const [key, value] of Object.entries(vars)) {
      const parsed = shape[key].safeParse(value);
      expect(parsed.success, `${key}=${JSON.stringify(value)} is refused by config.ts`).toBe(true);
      const fallback = shape[key].safeParse(undefined);
      if (fallback.success && !DEPLOYMENT_CHOICES.has(key)) {
        expect(parsed.data, `${key}: wrangler.jsonc says ${JSON.stringify(value)}, config.ts defaults to ${JSON.stringify(fallback.data)}`).toEqual(fallback.data);
      }
    }
  });
});

describe("each environment's dead letter queue", () => {
  interface Env_ {
    vars?: Record<string, string>;
    queues?: { producers?: { binding: string; queue: string }[]; consumers?: { queue: string; dead_letter_queue?: string }[] };
  }
  it("DEAD_LETTER_QUEUE names the dead_letter_queue of that environment's batch queue, and the Worker consumes it", async () => {
    const text = await readFile(new URL("../../wrangler.jsonc", import.meta.url), "utf8");
    const config = ts.parseConfigFileTextToJson("wrangler.jsonc", text).config as Env_ & { env?: Record<string, Env_> };
    const envs: [string, Env_][] = [["(top level)", config], ...Object.entries(config.env ?? {})];
    expect(envs.map(([name]) => name)).toEqual(["(top level)", "staging"]);
    for (const [name, e] of envs) {
      const queue = e.queues?.producers?.find((p) => p.binding === "BATCH_QUEUE")?.queue;
      const consumer = e.queues?.consumers?.find((c) => c.queue === queue);
      expect(consumer?.dead_letter_queue, `${name}: the batch queue's consumer has a dead_letter_queue`).toBeDefined();
      expect(e.vars?.DEAD_LETTER_QUEUE, `${name}: DEAD_LETTER_QUEUE`).toBe(consumer!.dead_letter_queue);
      expect(e.queues?.consumers?.some((c) => c.queue === consumer!.dead_letter_queue), `${name}: the DLQ is consumed`).toBe(true);
    }
    expect(config.env!.staging.vars!.DEAD_LETTER_QUEUE).toBe("fanout-batches-staging-dlq");
  });
});
