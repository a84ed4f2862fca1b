// What the machine's exit code tells an operator (sysexits.h numbers, so a plain Node crash
// — exit 1 — or an OOM kill — 137 — is never mistaken for one of these).
export const EXIT = {
  /** Converted, uploaded, success callback delivered. */
  SUCCESS: 0,
  /** The task failed (bad input, storage error, too large) and the error callback was delivered. */
  TASK_FAILED: 65,
  /** Pool mode: the orchestrator's lease endpoint stayed unreachable (network errors, 5xx) for too long. */
  LEASE_UNREACHABLE: 69,
  /** A bug in the worker; the error callback was delivered. */
  INTERNAL_ERROR: 70,
  /** The callback (success or error) could not be delivered: the orchestrator never heard. */
  CALLBACK_UNDELIVERABLE: 75,
  /** The machine's environment is missing or malformed (an error callback was tried when possible), or pool mode's lease was refused (401/404). */
  BAD_ENV: 78,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];
