// A TaskError is a failure the orchestrator hears about in an error callback; its message
// is written for the operator reading `GET /status/:batchId`, not for the worker's author.

/** input: the object itself is wrong; storage: R2 failed; resources: too big for this machine. */
export type TaskErrorKind = "input" | "storage" | "resources" | "internal";

export class TaskError extends Error {
  readonly kind: TaskErrorKind;
  /** Whether running the same task again could succeed. */
  readonly retryable: boolean;
  constructor(kind: TaskErrorKind, message: string, options: { retryable?: boolean; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = "TaskError";
    this.kind = kind;
    this.retryable = options.retryable ?? kind === "storage";
  }
}

export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
