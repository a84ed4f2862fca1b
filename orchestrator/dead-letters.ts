// The batch queue's dead letters: messages the queue gave up on after max_retries. Their batch
// ends in ERROR saying so (or, already running, gets a warning); one without a batch is logged.
// The same Worker consumes the dead letter queue; DEAD_LETTER_QUEUE says which queue that is in
// this environment (wrangler.jsonc: fanout-batches-dlq, staging fanout-batches-staging-dlq).
import { BatchId } from "../shared/contracts.ts";
import type { DeadLetterOutcome } from "./batch-do.ts";
import { log, logError } from "./log.ts";

/**
 * Where the batch queue puts a message after its last retry: the DEAD_LETTER_QUEUE var, which
 * names the `dead_letter_queue` of this environment's consumer in wrangler.jsonc (staging has
 * its own). Read without the full config so a misconfigured Worker still recognises its dead letters.
 */
export function deadLetterQueue(env: Env): string {
  const name = (env as { DEAD_LETTER_QUEUE?: unknown }).DEAD_LETTER_QUEUE;
  return typeof name === "string" && name !== "" ? name : "fanout-batches-dlq";
}

/**
 * A message that exhausted its retries: its batch ends in ERROR saying so, so that /status
 * explains the loss. Without a usable batch_id there is no batch to mark: the body is logged.
 */
export async function consumeDeadLetter(message: Message<unknown>, env: Env): Promise<void> {
  let body: unknown = message.body;
  if (typeof body === "string") {
    try {
      body = JSON.parse(body);
    } catch {
      // kept as the string it is
    }
  }
  const batchId = BatchId.safeParse((body as { batch_id?: unknown } | null)?.batch_id);
  const content = (JSON.stringify(body) ?? String(body)).slice(0, 4096);
  if (!batchId.success) {
    log("DLQ", "dead_letter_without_batch", { message_id: message.id, attempts: message.attempts, body: content });
    message.ack();
    return;
  }
  const reason = `queue message dead-lettered: ${deadLetterQueue(env)} received it after the batch queue gave up retrying (the consumer failed on every delivery; see [Queue] message_retry logs)`;
  try {
    const { outcome }: { outcome: DeadLetterOutcome } = await env.BATCH_DO.getByName(batchId.data).deadLettered(batchId.data, reason, content);
    const event = { marked_error: "batch_marked_error", warned: "dead_letter_for_running_batch", finished: "dead_letter_for_finished_batch" }[outcome];
    log("DLQ", event, { message_id: message.id, batch_id: batchId.data, attempts: message.attempts });
    message.ack();
  } catch (error) {
    logError("DLQ", "dead_letter_retry", error, { message_id: message.id, batch_id: batchId.data });
    message.retry({ delaySeconds: Math.min(300, 2 ** Math.min(message.attempts, 8)) });
  }
}
