// Names and places of the local stack, shared by the stack, `npm start` and the CLI
// (kept apart so the CLI starts without loading the stack's servers).
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = fileURLToPath(new URL("../", import.meta.url));
/** Where `npm start` keeps S3 objects, wrangler state, secrets and logs (git-ignored). */
export const DEFAULT_STATE_DIR = join(REPO_ROOT, ".local", "stack");
/** Written by `npm start` into the state dir: where the running stack is, for the CLI. */
export const STACK_FILE = "stack.json";
/** wrangler.jsonc's R2_BUCKET and FLY_APP_NAME. */
export const BUCKET = "fanout-archive";
export const APP_NAME = "fanout-worker";
