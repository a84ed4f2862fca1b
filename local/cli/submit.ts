// `fanout submit <dir>`: upload a folder's files and a manifest to R2 (or the local stack's S3)
// and enqueue the batch; --watch follows it to the end.
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { z } from "zod";
import { followBatch, formatBytes } from "../progress.ts";
import { isTiff } from "../../shared/keys.ts";
import { BUCKET } from "../paths.ts";
import { s3Client, submitBatch } from "../submit.ts";
import { argumentError, batchArg } from "./args.ts";
import { context } from "./context.ts";
import { EXIT, UsageError, batchCode, finish, printJson } from "./output.ts";

export async function submit(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    // --no-pool: one machine per task (pool mode is the orchestrator's default).
    allowNegative: true,
    options: {
      "batch-id": { type: "string" },
      watch: { type: "boolean", short: "w" },
      pool: { type: "boolean" },
      slots: { type: "string" },
      json: { type: "boolean" },
    },
  });
  const dir = positionals[0];
  if (!dir) throw new UsageError("submit needs a directory: npm run fanout -- submit <dir>");
  if (!existsSync(dir)) throw new UsageError(`no such directory: ${dir}`);
  if (values["batch-id"] !== undefined) batchArg(values["batch-id"], "--batch-id");
  let slots: number | undefined;
  if (values.slots !== undefined) {
    const parsed = z.coerce.number().int("must be a whole number").min(1, "must be 1-16").max(16, "must be 1-16").safeParse(values.slots);
    if (!parsed.success) throw argumentError("--slots", values.slots, parsed.error);
    slots = parsed.data;
  }
  // Slots are a pool-mode setting: asking for them asks for pool mode.
  if (values.pool === false && slots !== undefined) throw new UsageError("--slots is a pool-mode setting: it cannot go with --no-pool");
  const pool = values.pool ?? (slots !== undefined ? true : undefined);
  const { api, local, env } = context();
  const endpoint = env.R2_ENDPOINT ?? local?.s3_endpoint;
  if (!endpoint) throw new UsageError("set R2_ENDPOINT (and R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY, R2_BUCKET): where should the files go?");
  const usingLocalS3 = env.R2_ENDPOINT === undefined;
  const accessKeyId = env.R2_ACCESS_KEY_ID ?? (usingLocalS3 ? local?.s3_access_key_id : undefined);
  const secretAccessKey = env.R2_SECRET_ACCESS_KEY ?? (usingLocalS3 ? local?.s3_secret_access_key : undefined);
  if (!accessKeyId || !secretAccessKey) {
    throw new UsageError(
      usingLocalS3
        ? "the local stack's S3 key pair is not in its stack.json (s3_access_key_id, s3_secret_access_key): restart `npm start`, or set R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY"
        : "R2_ENDPOINT is set: set R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY too",
    );
  }
  const bucket = env.R2_BUCKET ?? local?.bucket ?? BUCKET;
  const client = s3Client({ endpoint, bucket, accessKeyId, secretAccessKey });
  const tty = process.stderr.isTTY === true;
  let lastLine = 0;
  const submitted = await submitBatch(api, client, bucket, {
    dir: resolve(dir),
    batchId: values["batch-id"],
    pool,
    slots,
    onUpload: (done, total) => {
      if (tty) process.stderr.write(`\r\x1b[2Kuploading ${done}/${total}`);
      // Piped: a line every 2 s and the last one, so a long upload is never silent.
      else if (done === total || Date.now() - lastLine >= 2000) {
        lastLine = Date.now();
        process.stderr.write(`uploaded ${done}/${total} files\n`);
      }
    },
  });
  if (tty) process.stderr.write("\r\x1b[2K");
  const bytes = submitted.files.reduce((n, f) => n + f.size, 0);
  // The batch is still submitted (its manifest and files are what was asked), but it will end
  // DONE with nothing converted: say so now, and exit 3 as for a batch that did not do everything.
  const tiffs = submitted.files.filter((f) => isTiff(f.key)).length;
  const warnings =
    tiffs === 0
      ? [`none of the ${submitted.files.length} files in ${dir} is a TIFF (.tif/.tiff): batch ${submitted.batchId} was submitted but has nothing to convert`]
      : [];
  if (!values.json) for (const w of warnings) console.error(`fanout: warning: ${w}`);
  const summary = {
    batch_id: submitted.batchId,
    files: submitted.files.length,
    bytes,
    bucket,
    prefix: submitted.prefix,
    manifest_key: submitted.manifestKey,
    ...(pool !== undefined ? { pool } : {}),
    ...(slots !== undefined ? { pool_tasks_per_machine: slots } : {}),
    warnings,
  };
  const submittedCode = tiffs === 0 ? EXIT.doneWithFailures : EXIT.ok;
  if (values.json && !values.watch) {
    printJson(summary);
    return submittedCode;
  }
  if (!values.json) {
    const mode = pool === undefined ? "" : pool ? ` in pool mode${slots ? ` (${slots} slots per machine)` : ""}` : " in single-task mode";
    console.log(`batch ${submitted.batchId} enqueued${mode}: ${submitted.files.length} files (${formatBytes(bytes)}) in s3://${bucket}/${submitted.prefix}`);
    console.log(`manifest  s3://${bucket}/${submitted.manifestKey}`);
  }
  if (!values.watch) {
    console.log(`follow it: npm run fanout -- status ${submitted.batchId} --watch`);
    return submittedCode;
  }
  const final = await followBatch(api, submitted.batchId, { out: values.json ? undefined : process.stdout });
  if (values.json) {
    printJson({ ...summary, final_status: final });
    return batchCode(final);
  }
  return finish(final);
}
