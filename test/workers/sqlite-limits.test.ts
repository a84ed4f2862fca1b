// The Durable Object SQLite limits (developers.cloudflare.com/durable-objects/platform/limits/,
// "SQL storage limits": 2 MB per string/BLOB/row, 100 KB per statement, 100 bound parameters)
// held by construction, and the guard every workerd test's store runs under (support/sql-limits.ts).
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MANIFEST_PAGE_BYTES, MAX_MANIFEST_ENTRY_BYTES, MAX_PROCESSING_CONFIG_BYTES, readManifestPage } from "../../orchestrator/engine/manifest.ts";
import { R2ObjectStore } from "../../orchestrator/storage.ts";
import { installWorld, stub, waitForStatus, withStore, type World } from "./support/engine.ts";
import { checkStatement, takeSqlLimitViolations } from "./support/sql-limits.ts";

let world: World;
beforeEach(() => {
  world = installWorld();
  world.runner.behaviour = () => "hang";
});
afterEach(async () => {
  await world.restore();
});

describe("the SQLite limit guard", () => {
  it("refuses a bound value over 1 MB, a statement over 100 KB and more than 100 parameters, and passes what is under", () => {
    expect(checkStatement("SELECT ?", ["x".repeat(1_000_000)])).toBeNull();
    expect(checkStatement("SELECT ?", ["x".repeat(1_000_001)])?.limit).toBe("bound value");
    // 333,334 three-byte characters are 1,000,002 bytes of UTF-8 though only 333,334 UTF-16 units.
    expect(checkStatement("SELECT ?", ["€".repeat(333_334)])?.detail).toBe("parameter 1 is 1000002 bytes (limit 1000000)");
    expect(checkStatement("SELECT ?", [new ArrayBuffer(1_000_001)])?.limit).toBe("bound value");
    expect(checkStatement(`SELECT '${"x".repeat(99_980)}'`, [])).toBeNull();
    expect(checkStatement(`SELECT '${"x".repeat(100_000)}'`, [])?.limit).toBe("statement");
    expect(checkStatement("SELECT 1", Array.from({ length: 100 }, () => 1))).toBeNull();
    expect(checkStatement("SELECT 1", Array.from({ length: 101 }, () => 1))?.detail).toBe("101 bound parameters (limit 100)");
  });

  it("is on in every store of these tests, and refuses loudly", async () => {
    await stub("sql-guard").start({ batch_id: "sql-guard", manifest_r2_key: "sql-guard/none.json" });
    const error = await withStore("sql-guard", (store) => {
      try {
        store.updateMeta({ step_error: "w".repeat(1_000_001) }, Date.now());
        return null;
      } catch (e) {
        return String(e);
      }
    });
    expect(error).toContain("SQLite limit exceeded (bound value: parameter 1 is 1000001 bytes (limit 1000000))");
    expect(takeSqlLimitViolations()).toHaveLength(1);
  });
});

describe("no stored value grows with the batch", () => {
  it("batch warnings keep the newest 50, each at most 2,000 characters", async () => {
    await stub("warn-cap").start({ batch_id: "warn-cap", manifest_r2_key: "warn-cap/none.json" });
    const warnings = await withStore("warn-cap", (store) => {
      for (let i = 0; i < 120; i++) store.addWarning(`w${i} ${"x".repeat(i === 119 ? 5000 : 10)}`, Date.now());
      return JSON.parse(store.getMeta()!.warnings_json!) as string[];
    });
    expect(warnings).toHaveLength(50);
    expect(warnings[0]).toBe(`w70 ${"x".repeat(10)}`);
    expect(warnings.at(-2)).toBe(`w118 ${"x".repeat(10)}`);
    expect(warnings.at(-1)).toHaveLength(2000);
  });
});

describe("a manifest directory's processing_config is stored once", () => {
  it("a 64 KiB processing_config over 1,500 entries discovers and plans every file with its settings", async () => {
    // Each directory's config is as large as the manifest allows; copied onto every entry, a
    // 250-entry page would be one 16 MB value (production refuses anything past 2 MB).
    const config = (q: number) => ({ jpeg_quality: q, notes: "" });
    const pad = MAX_PROCESSING_CONFIG_BYTES - JSON.stringify(config(80)).length;
    const directories = [80, 70, 60].map((q, d) => ({
      directory_path: `/box-${d}`,
      processing_config: { ...config(q), notes: "n".repeat(pad) },
      files: Array.from({ length: 500 }, (_, i) => ({ r2_key: `big-cfg/box-${d}/s${i}.tif`, file_size: 4, content_type: "image/tiff" })),
    }));
    expect(JSON.stringify(directories[0].processing_config).length).toBe(MAX_PROCESSING_CONFIG_BYTES);
    await env.BUCKET.put("big-cfg/manifest.json", JSON.stringify({ batch_id: "big-cfg", directories }));
    await stub("big-cfg").start({ batch_id: "big-cfg", manifest_r2_key: "big-cfg/manifest.json" });
    const s = await waitForStatus("big-cfg", (x) => x.stage === "run" || x.status === "ERROR" || (x.step_failures?.count ?? 0) > 0, 60_000);
    expect(s.step_failures).toBeNull();
    expect(s.error).toBeNull();
    expect(s.files_total).toBe(1500);
    expect(s.progress.tasks_total).toBe(1500);
    const stored = await withStore("big-cfg", (_store, sql) => ({
      directories: sql.exec<{ n: number; bytes: number }>("SELECT COUNT(*) AS n, SUM(LENGTH(config_json)) AS bytes FROM directories").one(),
      largestFile: sql.exec<{ n: number }>("SELECT MAX(LENGTH(COALESCE(extra_json, ''))) AS n FROM files").one().n,
      quality: sql
        .exec<{ q: string; n: number }>("SELECT params_json ->> 'JPEG_QUALITY' AS q, COUNT(*) AS n FROM tasks GROUP BY q ORDER BY q")
        .toArray()
        .map((r) => ({ ...r })),
    }));
    // Three directory rows hold the configs; no file row carries one.
    expect(stored.directories).toEqual({ n: 3, bytes: 3 * MAX_PROCESSING_CONFIG_BYTES });
    expect(stored.largestFile).toBe(0);
    expect(stored.quality).toEqual([
      { q: "60", n: 500 },
      { q: "70", n: 500 },
      { q: "80", n: 500 },
    ]);
  });
});

describe("manifest pages are bounded by bytes as well as entries", () => {
  it("a page of large entries ends once it holds MANIFEST_PAGE_BYTES; an entry over MAX_MANIFEST_ENTRY_BYTES is refused", async () => {
    const entry = (i: number) => ({ r2_key: `page-bytes/s${i}.tif`, provenance: "p".repeat(16_000) });
    const files = Array.from({ length: 100 }, (_, i) => entry(i));
    await env.BUCKET.put("page-bytes/manifest.json", JSON.stringify({ batch_id: "page-bytes", directories: [{ directory_path: "/", processing_config: {}, files }] }));
    const store = new R2ObjectStore(env.BUCKET);
    const entryBytes = JSON.stringify(entry(10)).length;
    const page = await readManifestPage(store, "page-bytes/manifest.json", "page-bytes", null, 250, undefined, MANIFEST_PAGE_BYTES);
    if (page.error !== undefined) throw new Error(page.error);
    // 256 KiB of ~16 KB entries: the page ends with the entry that reaches the bound.
    expect(page.entries.length).toBe(Math.ceil(MANIFEST_PAGE_BYTES / entryBytes));
    expect(page.cursor).not.toBeNull();

    const huge = [entry(0), { r2_key: "page-bytes/huge.tif", provenance: "h".repeat(MAX_MANIFEST_ENTRY_BYTES) }];
    await env.BUCKET.put("page-bytes/huge.json", JSON.stringify({ batch_id: "page-bytes", directories: [{ directory_path: "/", processing_config: {}, files: huge }] }));
    const refused = await readManifestPage(store, "page-bytes/huge.json", "page-bytes", null, 250, undefined, MANIFEST_PAGE_BYTES);
    const bytes = JSON.stringify(huge[1]).length;
    expect(refused.error).toBe(`manifest page-bytes/huge.json is invalid: directories.0.files.1: ${bytes} bytes, larger than ${MAX_MANIFEST_ENTRY_BYTES} bytes for one file entry`);
  });

  it("files whose rows add up past the bound value ceiling are stored in several statements", async () => {
    await stub("rows-split").start({ batch_id: "rows-split", manifest_r2_key: "rows-split/none.json" });
    const added = await withStore("rows-split", (store) =>
      store.transaction(() =>
        store.insertFiles(
          Array.from({ length: 250 }, (_, i) => ({
            r2_key: `rows-split/s${i}.tif`,
            logical_path: `/s${i}.tif`,
            file_name: `s${i}.tif`,
            file_size: 4,
            content_type: "image/tiff",
            provenance: "q\"".repeat(8_000),
          })),
        ),
      ),
    );
    expect(added).toBe(250);
  });
});
