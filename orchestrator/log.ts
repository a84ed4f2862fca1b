// One JSON object per line, prefixed by component, so `wrangler tail` reads well.
export type LogFields = Record<string, unknown>;

export function log(component: string, event: string, fields: LogFields = {}): void {
  console.log(`[${component}] ${JSON.stringify({ event, ...fields })}`);
}

export function logError(component: string, event: string, error: unknown, fields: LogFields = {}): void {
  console.error(`[${component}] ${JSON.stringify({ event, ...fields, error: errorMessage(error) })}`);
}

/** A message fit for logs and status output: never a stack trace. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message.slice(0, 1000);
  return String(error).slice(0, 1000);
}
