// The CHECKSUM phase's contract, shared by the orchestrator's phase (orchestrator/phases/checksum.ts)
// and the fly-worker's checksum mode (fly-worker/checksum.ts): its name, sidecar keys and format, callback.
import { z } from "zod";
import { ObjectKey, PhaseCallbackError, SuccessCore } from "./contracts.ts";
import { fileName } from "./keys.ts";

/** The sidecar's content type: the phase signs it into the PUT URL, the worker sends it. */
export const SIDECAR_CONTENT_TYPE = "text/plain; charset=utf-8";

/** The phase name; a machine whose env says PHASE=CHECKSUM runs the checksum mode. */
export const CHECKSUM_PHASE = "CHECKSUM";

export const SHA256_HEX = z.string().regex(/^[0-9a-f]{64}$/, "sha256 must be 64 lowercase hex digits");

/** Sidecar keys for `inputKey`, most preferred first: `a.jpg.sha256`, then `a.jpg.2.sha256`, … */
export function* sidecarKeyCandidates(inputKey: string): Generator<string> {
  yield `${inputKey}.sha256`;
  for (let n = 2; n < 1000; n++) yield `${inputKey}.${n}.sha256`;
}

/** The sidecar's text: the `sha256sum` line, so `sha256sum -c` checks the file beside it. */
export function sidecarText(sha256: string, inputKey: string): string {
  return `${sha256}  ${fileName(inputKey)}\n`;
}

/**
 * Success: the sidecar written (the generic output fields, so the body reads like any callback)
 * plus the digest and how many input bytes it covers.
 */
export const ChecksumSuccess = SuccessCore.extend({
  sha256: SHA256_HEX,
  /** The sidecar's own digest (its text is known, so this is a check the receiver can redo). */
  sidecar_sha256: SHA256_HEX.optional(),
  input: z.looseObject({ r2_key: ObjectKey, bytes: z.number().int().nonnegative() }),
});
/** false `retryable` when running the task again cannot help (the input does not exist). */
export const ChecksumError = PhaseCallbackError;
export const ChecksumCallback = z.discriminatedUnion("status", [ChecksumSuccess, ChecksumError]);
export type ChecksumSuccess = z.infer<typeof ChecksumSuccess>;
export type ChecksumCallback = z.infer<typeof ChecksumCallback>;
