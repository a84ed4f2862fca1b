// Finalisation that scales: the final file list is an NDJSON object in R2 (engine/file-list.ts),
// written part by part across alarms, and the downstream POST carries its key, counts and
// checksum (shared/finalisation.ts) — bounded whatever the batch.
import { env } from "cloudflare:workers";
import { runInDurableObject } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { BatchDO } from "../../orchestrator/batch-do.ts";
import { loadConfig } from "../../orchestrator/config.ts";
import { makeEngine } from "../../orchestrator/engine/context.ts";
import { FILE_LIST_PART_BYTES, writeFileList } from "../../orchestrator/engine/file-list.ts";
import { Outbound, OutboundRefused } from "../../orchestrator/outbound.ts";
import type { BatchStore } from "../../orchestrator/store/index.ts";
import { FinalisedBatch, MAX_FINALISATION_BODY_BYTES } from "../../shared/finalisation.ts";
import { installWorld, putTiffs, stub, waitForStatus, withStore, type World } from "./support/engine.ts";

let world: World;
beforeEach(() => {
  world = installWorld();
});
afterEach(async () => {
  await world.restore();
});

/** The composite checksum as documented: SHA-256 of each `partBytes` piece, SHA-256 of those digests, base64, "-N". */
async function compositeChecksum(bytes: Uint8Array, partBytes: number): Promise<string> {
  const digests: Uint8Array[] = [];
  for (let at = 0; at < bytes.byteLength || at === 0; at += partBytes) {
    digests.push(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes.subarray(at, at + partBytes))));
    if (bytes.byteLength === 0) break;
  }
  const joined = new Uint8Array(digests.length * 32);
  digests.forEach((d, i) => joined.set(d, i * 32));
  const top = new Uint8Array(await crypto.subtle.digest("SHA-256", joined));
  return `${btoa(String.fromCharCode(...top))}-${digests.length}`;
}

async function objectBytes(key: string): Promise<Uint8Array> {
  const object = await env.BUCKET.get(key);
  if (!object) throw new Error(`no object ${key}`);
  return new Uint8Array(await object.arrayBuffer());
}

describe("the final file list as an R2 object", () => {
  it("a finished batch's list is one NDJSON line per file; the POST names it with counts and checksum, a few hundred bytes", async () => {
    await putTiffs("fl-small/", 5);
    await stub("fl-small").start({ batch_id: "fl-small", r2_prefix: "fl-small/" });
    await waitForStatus("fl-small", (x) => x.status === "DONE", 30_000);
    expect(world.downstream.calls).toHaveLength(1);
    const call = world.downstream.calls[0];
    expect(call.url).toBe("http://downstream.test/api/batches/fl-small/enqueue-processed");
    expect(call.headers["idempotency-key"]).toBe("fanout:fl-small:final");
    expect(call.body.length).toBeLessThan(1024);
    const body = FinalisedBatch.parse(JSON.parse(call.body));
    expect(body).toMatchObject({
      batch_id: "fl-small",
      status: "DONE",
      redrive: 0,
      counts: { files: 10, tasks_total: 5, tasks_completed: 5, tasks_failed: 0 },
      file_list: { bucket: "fanout-archive", key: "fl-small/_fanout/file-list.ndjson", content_type: "application/x-ndjson", entries: 10 },
    });
    const bytes = await objectBytes(body.file_list.key);
    expect(body.file_list.bytes).toBe(bytes.byteLength);
    expect(body.file_list.etag).toBe((await env.BUCKET.head(body.file_list.key))!.etag);
    expect(body.file_list.checksum).toEqual({ algorithm: "SHA-256", type: "COMPOSITE", value: await compositeChecksum(bytes, FILE_LIST_PART_BYTES), part_bytes: FILE_LIST_PART_BYTES });
    const lines = new TextDecoder().decode(bytes).split("\n");
    expect(lines.pop()).toBe("");
    const files = lines.map((l) => JSON.parse(l) as { r2_key: string; source_r2_key?: string });
    expect(files.filter((f) => f.source_r2_key === undefined).map((f) => f.r2_key)).toEqual(Array.from({ length: 5 }, (_, i) => `fl-small/scan-0000${i}.tif`));
    expect(files.filter((f) => f.source_r2_key !== undefined).map((f) => [f.r2_key, f.source_r2_key]).sort()).toEqual(
      Array.from({ length: 5 }, (_, i) => [`fl-small/scan-0000${i}.jpg`, `fl-small/scan-0000${i}.tif`]),
    );
    // The status names the object too (the batch index keeps its key past retention).
    const s = await waitForStatus("fl-small", (x) => x.status === "DONE");
    expect(s.finalisation?.file_list).toMatchObject({ key: body.file_list.key, entries: 10, checksum: body.file_list.checksum.value });
  });

  it("never writes over an object the batch did not write: a taken key gets -2", async () => {
    await putTiffs("fl-taken/", 1);
    await env.BUCKET.put("fl-taken/_fanout/file-list.ndjson", "someone else's");
    await stub("fl-taken").start({ batch_id: "fl-taken", r2_prefix: "fl-taken/" });
    await waitForStatus("fl-taken", (x) => x.status === "DONE", 30_000);
    const body = FinalisedBatch.parse(JSON.parse(world.downstream.calls[0].body));
    // The prefix listing found the other object: it is a file of the batch, and its key is taken.
    expect(body.file_list.key).toBe("fl-taken/_fanout/file-list-2.ndjson");
    expect(await (await env.BUCKET.get("fl-taken/_fanout/file-list.ndjson"))!.text()).toBe("someone else's");
  });

  it("a list of several parts is sent as a multipart upload that resumes where it stopped, each part exactly FILE_LIST_PART_BYTES but the last", async () => {
    const b = "fl-parts";
    await stub(b).start({ batch_id: b, manifest_r2_key: `${b}/none.json` });
    // 40,000 files of ~200 bytes a line: ~8 MB, two parts.
    const n = 40_000;
    await withStore(b, (store, sql) => {
      sql.exec("UPDATE meta SET stage = 'finalise', error = NULL, manifest_key = ?", `${b}/manifest.json`);
      for (let i = 0; i < n; i += 2000) {
        store.transaction(() =>
          store.insertFiles(
            Array.from({ length: 2000 }, (_, j) => {
              const k = i + j;
              // Non-ASCII names: a part boundary may fall inside a character's bytes.
              return { r2_key: `${b}/box/scan-${String(k).padStart(6, "0")}-é日.tif`, logical_path: `/box/scan-${k}.tif`, file_name: `scan-${k}.tif`, file_size: k, content_type: "image/tiff", cid: `bafy-${k}` };
            }),
          ),
        );
      }
    });
    // An alarm whose subrequests run out after its first part: it stops, having stored where it stood.
    const write = (budget: number) =>
      runInDurableObject(stub(b), async (instance: BatchDO) => {
        const store = (instance as unknown as { store: BatchStore }).store;
        const e = makeEngine(store, loadConfig(env), env, async () => {}, () => {}, new Outbound({ budget }));
        try {
          return { list: await writeFileList(e, store.getMeta()!), used: e.outbound.used };
        } catch (error) {
          if (!(error instanceof OutboundRefused)) throw error;
          return { list: null, used: e.outbound.used, stored: store.fileList(0) };
        }
      });
    // HEAD for a free key, create the upload, part 1; part 2 is refused.
    const first = await write(3);
    expect(first.list).toBeNull();
    expect(first.stored).toMatchObject({ key: `${b}/_fanout/file-list.ndjson`, parts: 1, bytes: FILE_LIST_PART_BYTES });
    const second = await write(100);
    const list = second.list!;
    expect(list).toMatchObject({ key: `${b}/_fanout/file-list.ndjson`, entries: n, parts: 2 });
    // Part 2 and the completion: two subrequests.
    expect(second.used).toBe(2);
    const bytes = await objectBytes(list.key);
    expect(list.bytes).toBe(bytes.byteLength);
    expect(bytes.byteLength).toBeGreaterThan(FILE_LIST_PART_BYTES);
    expect(list.checksum).toBe(await compositeChecksum(bytes, FILE_LIST_PART_BYTES));
    const lines = new TextDecoder().decode(bytes).trimEnd().split("\n");
    expect(lines).toHaveLength(n);
    expect(lines.map((l) => (JSON.parse(l) as { file_size: number }).file_size)).toEqual(Array.from({ length: n }, (_, k) => k));
    // Written once: asking again sends nothing.
    const again = await write(100);
    expect(again).toMatchObject({ list, used: 0 });
  });

  it("the POST stays under MAX_FINALISATION_BODY_BYTES whatever the batch: its size does not grow with the files", async () => {
    const sizes: number[] = [];
    for (const [b, n] of [
      ["fl-size-1", 1],
      ["fl-size-120", 120],
    ] as const) {
      await putTiffs(`${b}/`, n);
      await stub(b).start({ batch_id: b, r2_prefix: `${b}/` });
      await waitForStatus(b, (x) => x.status === "DONE", 60_000);
      const call = world.downstream.calls.find((c) => c.url.includes(`/${b}/`))!;
      sizes.push(call.body.length);
    }
    // Only the digits of the counts, byte sizes and batch id differ.
    expect(Math.abs(sizes[1] - sizes[0])).toBeLessThan(32);
    expect(Math.max(...sizes)).toBeLessThan(MAX_FINALISATION_BODY_BYTES);
  });
});
