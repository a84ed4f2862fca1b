// `fanout list`: the batch index (GET /batches), newest first. Registered in commands.ts.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { z } from "zod";
import { describeZodError } from "../../shared/contracts.ts";
import { DEFAULT_STATE_DIR, STACK_FILE } from "../paths.ts";
import { table } from "../progress.ts";
import { EXIT, printJson } from "./output.ts";

export const LIST_USAGE = `usage: npm run fanout -- list [--status S] [--limit N] [--all] [--json]

  --status S   active (not DONE/ERROR/FAILED), or one status: DONE, ERROR, FAILED, TIFF_CONVERSION, …
  --limit N    batches per page (1–200, default 20)
  --all        follow next_cursor to the end
  --cursor C   start after a previous page (its next_cursor)
  --json       the raw pages' batches as JSON

Reads ORCHESTRATOR_URL, else the local stack that \`npm start\` is running.`;

const Listed = z.looseObject({
  batch_id: z.string(),
  status: z.string(),
  mode: z.string(),
  progress: z.object({ tasks_total: z.number(), tasks_completed: z.number(), tasks_failed: z.number() }),
  started_at: z.string(),
  updated_at: z.string(),
  completed_at: z.string().nullable(),
  error: z.string().nullable(),
});
export type ListedBatch = z.infer<typeof Listed>;
const Page = z.object({ batches: z.array(Listed), next_cursor: z.string().nullable() });

const Options = z.object({
  status: z
    .string()
    .regex(/^(active|[A-Z][A-Z0-9_]{0,63})$/, "--status must be `active` or a status such as DONE, ERROR, TIFF_CONVERSION")
    .optional(),
  limit: z.coerce.number({ message: "--limit must be a number" }).int().min(1).max(200).default(20),
  cursor: z.string().min(1).optional(),
  all: z.boolean().default(false),
  json: z.boolean().default(false),
  help: z.boolean().default(false),
});

class ListError extends Error {}

function orchestratorUrl(): string {
  const explicit = process.env.ORCHESTRATOR_URL;
  if (explicit) {
    const parsed = z.url({ protocol: /^https?$/ }).safeParse(explicit);
    if (!parsed.success) throw new ListError(`ORCHESTRATOR_URL must be an http(s) URL, got "${explicit}"`);
    return parsed.data.replace(/\/+$/, "");
  }
  const file = join(process.env.FANOUT_STATE_DIR || DEFAULT_STATE_DIR, STACK_FILE);
  if (existsSync(file)) {
    const stack = z.object({ orchestrator_url: z.string() }).safeParse(JSON.parse(readFileSync(file, "utf8")));
    if (stack.success) return stack.data.orchestrator_url.replace(/\/+$/, "");
  }
  throw new ListError("ORCHESTRATOR_URL is not set and no local stack is running. Start one with `npm start`, or set ORCHESTRATOR_URL.");
}

export async function fetchBatchPage(
  url: string,
  query: { status?: string; limit: number; cursor?: string | null },
): Promise<z.infer<typeof Page>> {
  const q = new URLSearchParams({ limit: String(query.limit) });
  if (query.status) q.set("status", query.status);
  if (query.cursor) q.set("cursor", query.cursor);
  let res: Response;
  try {
    res = await fetch(`${url}/batches?${q}`, { signal: AbortSignal.timeout(15_000) });
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error instanceof Error ? error.message : String(error));
    throw new ListError(`cannot reach the orchestrator at ${url} (${cause}). Is it running (\`npm start\`)?`);
  }
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new ListError(`GET /batches answered ${res.status} with a body that is not JSON: ${text.slice(0, 200)}`);
  }
  if (!res.ok) {
    const said = (body as { error?: unknown } | null)?.error;
    throw new ListError(`GET /batches failed: the orchestrator answered ${res.status}: ${typeof said === "string" ? said : text.slice(0, 200)}`);
  }
  const page = Page.safeParse(body);
  if (!page.success) throw new ListError(`the orchestrator at ${url} answered an unexpected batch list: ${describeZodError(page.error)}`);
  return page.data;
}

const when = (iso: string | null) => (iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "");

export function formatBatches(batches: ListedBatch[]): string {
  if (batches.length === 0) return "no batches";
  return table(
    ["batch", "status", "done", "failed", "total", "mode", "started", "finished", "error"],
    batches.map((b) => [
      b.batch_id,
      b.status,
      b.progress.tasks_completed,
      b.progress.tasks_failed,
      b.progress.tasks_total,
      b.mode,
      when(b.started_at),
      when(b.completed_at),
      (b.error ?? "").slice(0, 60),
    ]),
  );
}

/** The command: exit 0 with the list, 1 when the orchestrator cannot answer, 2 on bad options. */
export async function list(args: string[]): Promise<number> {
  let options: z.infer<typeof Options>;
  try {
    const { values } = parseArgs({
      args,
      options: {
        status: { type: "string" },
        limit: { type: "string" },
        cursor: { type: "string" },
        all: { type: "boolean" },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
    const parsed = Options.safeParse(values);
    if (!parsed.success) throw new Error(describeZodError(parsed.error));
    options = parsed.data;
  } catch (error) {
    console.error(`fanout list: ${error instanceof Error ? error.message : String(error)}\n\n${LIST_USAGE}`);
    return EXIT.usage;
  }
  if (options.help) {
    console.log(LIST_USAGE);
    return EXIT.ok;
  }
  try {
    const url = orchestratorUrl();
    const batches: ListedBatch[] = [];
    let cursor: string | null = options.cursor ?? null;
    let next: string | null = null;
    do {
      const page = await fetchBatchPage(url, { status: options.status, limit: options.limit, cursor });
      batches.push(...page.batches);
      next = page.next_cursor;
      cursor = next;
    } while (options.all && cursor);
    if (options.json) {
      printJson({ batches, next_cursor: next });
      return EXIT.ok;
    }
    console.log(formatBatches(batches));
    if (next) console.log(`\nmore: npm run fanout -- list --cursor ${next}${options.status ? ` --status ${options.status}` : ""} (or --all)`);
    return EXIT.ok;
  } catch (error) {
    if (error instanceof ListError) {
      console.error(`fanout list: ${error.message}`);
      return EXIT.failed;
    }
    throw error;
  }
}
