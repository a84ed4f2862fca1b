// Parsing the command line's arguments: a batch id checked as the orchestrator checks it, a
// zod failure of one argument as one line, and "did you mean" for a mistyped command.
import type { z } from "zod";
import { BatchId } from "../../shared/contracts.ts";
import { UsageError } from "./output.ts";

/** A zod failure of one named argument, e.g. `<batchId> "a b": batch_id must be …` (never "(root)"). */
export function argumentError(name: string, value: string, error: z.ZodError): UsageError {
  return new UsageError(`${name} ${JSON.stringify(value)}: ${error.issues.map((i) => i.message).join("; ")}`);
}

export const batchArg = (value: string | undefined, name = "<batchId>"): string => {
  if (!value) throw new UsageError(`${name} is required`);
  const parsed = BatchId.safeParse(value);
  if (!parsed.success) throw argumentError(name, value, parsed.error);
  return parsed.data;
};

/** The known name closest to `given` (edit distance ≤ 2, or a prefix), for "did you mean". */
export function closest(given: string, names: string[]): string | null {
  const distance = (a: string, b: string) => {
    const row = Array.from({ length: b.length + 1 }, (_, i) => i);
    for (let i = 1; i <= a.length; i++) {
      let prev = row[0];
      row[0] = i;
      for (let j = 1; j <= b.length; j++) {
        const here = row[j];
        row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
        prev = here;
      }
    }
    return row[b.length];
  };
  const scored = names.map((n) => ({ n, d: n.startsWith(given.toLowerCase()) ? 0 : distance(given.toLowerCase(), n) })).sort((x, y) => x.d - y.d);
  return scored[0] && scored[0].d <= 2 ? scored[0].n : null;
}
