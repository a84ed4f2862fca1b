// What every route of the orchestrator's API shares: its error type, input parsing, the batch's
// DO stub, and the gates in front of reads (READ_TOKEN) and admin routes (ADMIN_TOKEN).
import type { IRequest } from "itty-router";
import type { z } from "zod";
import { BatchId, describeZodError } from "../shared/contracts.ts";
import { bearerToken, timingSafeEqualText } from "../shared/token.ts";
import { loadConfig } from "./config.ts";
import { errorMessage } from "./log.ts";

export type Handler = (req: IRequest, env: Env) => Promise<Response> | Response;

export class HttpError extends Error {
  readonly status: number;
  readonly details: Record<string, unknown>;
  constructor(status: number, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.status = status;
    this.details = details;
  }
}

export function parse<T extends z.ZodType>(schema: T, value: unknown, where: string): z.infer<T> {
  const result = schema.safeParse(value);
  if (!result.success) throw new HttpError(400, `invalid ${where}: ${describeZodError(result.error)}`);
  return result.data;
}

export function stub(env: Env, batchId: string) {
  return env.BATCH_DO.getByName(batchId);
}

/** Validates :batchId before the handler runs. */
export function withBatch(handler: Handler): Handler {
  return (req, env) => {
    let raw: string;
    try {
      raw = decodeURIComponent(req.params.batchId);
    } catch {
      throw new HttpError(400, "invalid batchId: malformed percent-encoding in the URL");
    }
    req.params.batchId = parse(BatchId, raw, "batchId");
    return handler(req, env);
  };
}

/** Status reads: open unless READ_TOKEN is set; then that token or the admin token. */
export function reader(handler: Handler): Handler {
  return (req, env) => {
    const config = loadConfig(env);
    if (config.READ_TOKEN) {
      const given = bearerToken(req.headers.get("authorization")) ?? "";
      if (!timingSafeEqualText(given, config.READ_TOKEN) && !timingSafeEqualText(given, config.ADMIN_TOKEN)) {
        throw new HttpError(401, "read token missing or invalid (Authorization: Bearer $READ_TOKEN)");
      }
    }
    return handler(req, env);
  };
}

export function admin(handler: Handler): Handler {
  return (req, env) => {
    const token = loadConfig(env).ADMIN_TOKEN;
    const given = bearerToken(req.headers.get("authorization"));
    if (given === null || !timingSafeEqualText(given, token)) {
      throw new HttpError(401, "admin token missing or invalid (Authorization: Bearer $ADMIN_TOKEN)");
    }
    return handler(req, env);
  };
}

/** Reads a JSON body of at most `limit` bytes without trusting Content-Length. */
export async function readJson(req: Request, limit: number): Promise<unknown> {
  const declared = Number(req.headers.get("content-length") ?? 0);
  if (declared > limit) throw new HttpError(413, `body larger than ${limit} bytes`);
  const reader = req.body?.getReader();
  if (!reader) throw new HttpError(400, "a JSON body is required");
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      throw new HttpError(413, `body larger than ${limit} bytes`);
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const c of chunks) {
    bytes.set(c, offset);
    offset += c.byteLength;
  }
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new HttpError(400, `body is not valid JSON: ${errorMessage(error)}`);
  }
}
