// The worker's decisions in isolation: which pages are the scan, which encoder fits, what a
// bad env says. (The child-process suite checks the same end to end on real files.)
import { describe, expect, it } from "vitest";
import { defaultMaxInputPixels, planEncoder, SHARP_DEFAULT_PIXEL_LIMIT } from "../../fly-worker/convert.ts";
import { conversionSettings, tiffConversion } from "../../orchestrator/phases/tiff-conversion.ts";
import { parseEnv } from "../../fly-worker/env.ts";
import { packBitsDecode, lzwDecode } from "../../fly-worker/chunks.ts";
import { CpuLedger } from "../../fly-worker/cpu.ts";
import { describeDecodeError, TaskError } from "../../fly-worker/errors.ts";
import { floatMapping, signedMapping } from "../../fly-worker/levels.ts";
import { pageList } from "../../fly-worker/task.ts";
import { describeSignature, selectPages, type TiffDirectory } from "../../fly-worker/tiff.ts";

const dir = (index: number, width: number, height: number, extra: Partial<TiffDirectory> = {}): TiffDirectory => ({
  index, width, height, newSubfileType: 0, samplesPerPixel: 3, bitsPerSample: 8, sampleFormat: 1, compression: 5, orientation: 1, extraSamples: [], rowsPerStrip: 16, planar: 1, predictor: 1, layout: { ifdOffset: 8, littleEndian: true, bigTiff: false }, ...extra,
});

describe("CpuLedger: a task's CPU-seconds from its process's", () => {
  it("shares what the process spent among the tasks in flight; CPU spent with none in flight is the machine's; tasks + idle add up to the process", () => {
    let cpuUs = 0;
    const ledger = new CpuLedger(() => cpuUs);
    cpuUs = 300_000; // Node's start and loading sharp, before any task
    const a = ledger.begin();
    cpuUs += 1_000_000; // a alone: 1 s
    const b = ledger.begin();
    cpuUs += 2_000_000; // a and b side by side: 1 s each
    const aS = ledger.end(a);
    cpuUs += 500_000; // b alone
    const bS = ledger.end(b);
    cpuUs += 100_000; // idle: polling for a lease
    const c = ledger.begin();
    cpuUs += 400_000;
    const cS = ledger.end(c);
    expect(aS).toBeCloseTo(1 + 1, 9);
    expect(bS).toBeCloseTo(1 + 0.5, 9);
    expect(cS).toBeCloseTo(0.4, 9);
    expect(ledger.idleS).toBeCloseTo(0.3 + 0.1, 9);
    expect(aS + bS + cS + ledger.idleS).toBeCloseTo(cpuUs / 1e6, 9);
    // Ending a task twice (the worker's finally after its success) counts nothing again.
    expect(ledger.end(c)).toBe(0);
  });
});

describe("selectPages", () => {
  it("keeps every full-resolution page, skips flagged and unflagged thumbnails, and says why", () => {
    const { convert, skipped } = selectPages([dir(0, 200, 150, { newSubfileType: 1 }), dir(1, 6000, 4000), dir(2, 5900, 4100), dir(3, 300, 200), dir(4, 6000, 4000, { newSubfileType: 4 })]);
    expect(convert.map((d) => d.index)).toEqual([1, 2]);
    expect(skipped.map((s) => [s.page, s.reason.split(" ")[0]])).toEqual([[1, "reduced-resolution"], [4, "unflagged"], [5, "transparency"]]);
  });
  it("a small page among small pages is a page, not a thumbnail", () => {
    expect(selectPages([dir(0, 800, 600), dir(1, 700, 500)]).convert).toHaveLength(2);
  });
  it("when every image is flagged reduced, converts the largest rather than nothing", () => {
    expect(selectPages([dir(0, 100, 100, { newSubfileType: 1 }), dir(1, 400, 300, { newSubfileType: 1 })]).convert.map((d) => d.index)).toEqual([1]);
  });
});

describe("planEncoder", () => {
  const request = { quality: 95, mozjpeg: true, machineMbSource: "MEMORY_MB" };
  it("keeps mozjpeg when it fits and falls back to the streaming encoder when it does not", () => {
    expect(planEncoder(dir(0, 8700, 5800), { ...request, machineMb: 1024 })).toMatchObject({ mozjpeg: true, optimise_coding: true });
    expect(planEncoder(dir(0, 8700, 5800), { ...request, machineMb: 512 })).toMatchObject({ mozjpeg: false, optimise_coding: false, quality: 95 });
  });
  it("counts the rotated copy of a turned page", () => {
    const upright = planEncoder(dir(0, 10000, 10000), { ...request, machineMb: 4096 });
    const turned = planEncoder(dir(0, 10000, 10000, { orientation: 6 }), { ...request, machineMb: 4096 });
    expect(turned.estimated_peak_mb - upright.estimated_peak_mb).toBeCloseTo((10000 * 10000 * 3) / 1024 / 1024, -1);
  });
  it("refuses with the numbers when nothing fits", () => {
    expect(() => planEncoder(dir(0, 20000, 20000, { orientation: 8, bitsPerSample: 16 }), { ...request, machineMb: 1024 })).toThrow(TaskError);
    expect(() => planEncoder(dir(0, 20000, 20000, { orientation: 8, bitsPerSample: 16 }), { ...request, machineMb: 1024 })).toThrow(/needs ~\d+ MB even with the streaming encoder; the budget is 819 MB of 1024 MB/);
  });
  it("the default pixel limit is never below sharp's and grows with the machine", () => {
    expect(defaultMaxInputPixels(256)).toBe(SHARP_DEFAULT_PIXEL_LIMIT);
    expect(defaultMaxInputPixels(8192)).toBeGreaterThan(SHARP_DEFAULT_PIXEL_LIMIT);
  });
});

describe("parseEnv", () => {
  it("names each problem, shows non-secret values, hides secret ones", () => {
    const result = parseEnv({ TASK_ID: "bad id", BATCH_ID: "b1", R2_SECRET_ACCESS_KEY: "", CALLBACK_TOKEN: "tok-123456", MEMORY_MB: "12" });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    const text = result.problems.join("\n");
    expect(text).toContain(`TASK_ID: task_id must look like 'tiff-000042'; received "bad id"`);
    expect(text).toContain("R2_SECRET_ACCESS_KEY is required but it is not set");
    expect(text).toMatch(/MEMORY_MB: .*; received "12"/);
    expect(text).not.toContain("tok-123456");
    expect(result.callback, "no CALLBACK_URL: no error callback").toBeUndefined();
  });
  it("recovers the task identity from CALLBACK_URL for the error callback", () => {
    const result = parseEnv({ CALLBACK_URL: "http://o.test/callback/b-7/tiff-000003", CALLBACK_TOKEN: "t0ken" });
    expect(result.ok ? undefined : result.callback).toEqual({ url: "http://o.test/callback/b-7/tiff-000003", token: "t0ken", batchId: "b-7", taskId: "tiff-000003" });
  });
});

describe("describeSignature", () => {
  it("names common non-TIFF formats", () => {
    expect(describeSignature(Buffer.from("%PDF-1.7\n%âãÏÓ\n", "latin1"))).toBe("a PDF document");
    expect(describeSignature(Buffer.from("<!DOCTYPE html><html>", "latin1"))).toMatch(/HTML/);
    expect(describeSignature(Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 0x4a, 0x46, 0x49, 0x46, 0, 1]))).toBe("a JPEG image");
  });
});

describe("JPEG settings env (JPEG_CHROMA, JPEG_COLOUR)", () => {
  const base = { TASK_ID: "tiff-000001", BATCH_ID: "b1", INPUT_R2_KEY: "a.tif", OUTPUT_R2_KEY: "a.jpg", R2_ACCOUNT_ID: "x", R2_ACCESS_KEY_ID: "k", R2_SECRET_ACCESS_KEY: "s", R2_BUCKET: "b", CALLBACK_URL: "http://o.test/callback/b1/tiff-000001", CALLBACK_TOKEN: "t0ken", MEMORY_MB: "1024" };
  it("defaults to 4:2:0 and auto colour", () => {
    const result = parseEnv(base);
    expect(result.ok && { chroma: result.env.JPEG_CHROMA, colour: result.env.JPEG_COLOUR, quality: result.env.JPEG_QUALITY, mozjpeg: result.env.MOZJPEG }).toEqual({ chroma: "4:2:0", colour: "auto", quality: 95, mozjpeg: true });
  });
  it("names a bad value and what was expected", () => {
    const result = parseEnv({ ...base, JPEG_CHROMA: "4:2:2", JPEG_COLOUR: "grey" });
    expect(result.ok ? [] : result.problems).toEqual([`JPEG_CHROMA: must be '4:2:0' or '4:4:4'; received "4:2:2"`, `JPEG_COLOUR: must be 'auto' or 'rgb'; received "grey"`]);
  });
});

describe("decoder messages", () => {
  const input = "/tmp/fanout-tiff-000017-AbC123/input.tif";
  it("lose the temp path, the libtiff prefixes and repeated lines, and say what to do", () => {
    const raw = `${input}: bad seek to 3309\ntiff2vips: Seek error at scanline 4, strip 0\n` + "tiff2vips: Seek error at scanline 4, strip 0\n".repeat(9);
    expect(describeDecodeError(raw, input)).toBe("image data is truncated or corrupt (bad seek to 3309; Seek error at scanline 4, strip 0): upload the file again, or export it again from the original");
    expect(describeDecodeError("Input file has corrupt header: tiff2vips: foo\ntiff2vips: foo", input)).toBe("foo: export it again from the original");
  });
  // The issue-26 messages an operator could not act on, as libvips gave them.
  it("drop libtiff's warnings about custom tags and keep the line that says what failed", () => {
    const noise = Array.from({ length: 80 }, (_, i) => `tiff2vips: Defined set_get_field_type of custom tag ${i} (Tag ${i}) with hopefully harmless code`).join("\n");
    expect(describeDecodeError(`${noise}\ntiff2vips: Read error on strip 3; got 120 bytes, expected 4096`, input)).toBe(
      "image data is truncated or corrupt (Read error on strip 3; got 120 bytes, expected 4096): upload the file again, or export it again from the original",
    );
  });
  it("say a CCITT 'bad code word' is corrupt data, and never show scanline 4294967295", () => {
    expect(describeDecodeError("tiff2vips: Bad code word at line 3 of strip 0 (x 17)", input)).toBe("image data is corrupt (Bad code word at line 3 of strip 0 (x 17)): export it again from the original");
    expect(describeDecodeError("tiff2vips: Seek error at scanline 4294967295", input)).toBe("image data is truncated or corrupt: upload the file again, or export it again from the original");
  });
});

describe("reasons repeated across pages", () => {
  it("are listed as page ranges", () => {
    expect(pageList([1, 2, 3, 5, 7, 8, 9, 10])).toBe("1–3, 5 and 7–10");
    expect(pageList([4])).toBe("4");
    expect(pageList([1, 2])).toBe("1, 2");
  });
});

describe("range rules (levels.ts), worked by hand", () => {
  it("signed: as unsigned when none is negative, offset by 2^(n−1) when some are", () => {
    expect(signedMapping(16, 0, "grey16")).toEqual({ scale: 1, offset: 0 });
    expect(signedMapping(16, 5, "srgb")).toEqual({ scale: 1 / 256, offset: 0 });
    // −32768 → 0, 0 → 128, 32767 → 255.996 (clipped to 255).
    expect(signedMapping(16, -1, "srgb")).toMatchObject({ scale: 1 / 256, offset: 128, note: "has negative 16-bit samples (down to -1): shown offset by 32,768, so -32,768 is black, 0 mid-grey and 32,767 white" });
  });
  it("float: 0–1 kept, anything else stretched from its own range; NaN and infinities left out and said", () => {
    expect(floatMapping({ min: 0.2, max: 0.9, nonFinite: 0 }, "grey")).toMatchObject({ scale: 255, offset: -0, notes: [] });
    expect(floatMapping({ min: -1, max: 3, nonFinite: 0 }, "rgb")).toMatchObject({ scale: 0.25, offset: 0.25 });
    expect(floatMapping({ min: 0, max: 1, nonFinite: 3 }, "cmyk").notes).toEqual(["has 3 floating-point samples that are not a number (NaN) or infinite: left out of its range, NaN shown black, infinities clipped"]);
    expect(() => floatMapping({ min: Infinity, max: -Infinity, nonFinite: 9 }, "grey")).toThrow(/no floating-point sample that is a finite number/);
  });
});

describe("chunk decoders", () => {
  it("PackBits: the worked example of TIFF 6.0 §9", () => {
    const unpacked = "AAAAAA80002AAAAAAAAA80002A22" + "AA".repeat(10);
    expect(packBitsDecode(Buffer.from("FEAA0280002AFDAA0380002A22F7AA", "hex"), 24).toString("hex").toUpperCase()).toBe(unpacked);
  });
  it("LZW (TIFF 6.0 §13): literal codes, a table entry, and the entry being defined (KwKwK)", () => {
    const pack = (codes: number[]) => {
      const bits = codes.map((c) => c.toString(2).padStart(9, "0")).join("");
      const out = Buffer.alloc(Math.ceil(bits.length / 8));
      for (let i = 0; i < bits.length; i++) if (bits[i] === "1") out[i >> 3] |= 0x80 >> (i & 7);
      return out;
    };
    // 7 7 7 7 encodes as clear, 7, 258 (= 7 7), 7, end; 7 7 7 as clear, 7, 258, end — 258 used as it is defined.
    expect([...lzwDecode(pack([256, 7, 258, 7, 257]), 4)]).toEqual([7, 7, 7, 7]);
    expect([...lzwDecode(pack([256, 7, 258, 257]), 3)]).toEqual([7, 7, 7]);
  });
});

describe("TIFF_CONVERSION phase: conversion settings and skipped pages", () => {
  it("reads processing_config into machine env, ignoring unknown keys", () => {
    expect(conversionSettings(undefined)).toEqual({ ok: true, env: {} });
    expect(conversionSettings({ jpeg_quality: 88, chroma_subsampling: "4:4:4", colour: "rgb", ocr: true })).toEqual({ ok: true, env: { JPEG_QUALITY: "88", JPEG_CHROMA: "4:4:4", JPEG_COLOUR: "rgb" } });
  });
  it("says what is wrong with an invalid processing_config", () => {
    expect(conversionSettings({ jpeg_quality: 101, chroma_subsampling: "4:2:2" })).toEqual({ ok: false, error: `processing_config is invalid: jpeg_quality must be 1–100; chroma_subsampling must be "4:2:0" or "4:4:4"` });
    expect(conversionSettings("high")).toEqual({ ok: false, error: "processing_config is invalid: processing_config must be an object" });
  });
  const task = { task_id: "tiff-000001", batch_id: "b1", input_key: "s/a.tif", output_key: "s/a.jpg", size_bytes: 1000, attempt: 1, params: {} };
  it("passes the task's conversion params to the machine as env", () => {
    const { env } = tiffConversion.machine({ ...task, params: { JPEG_QUALITY: "88", JPEG_CHROMA: "4:4:4", other: "x" } });
    expect(env).toMatchObject({ JPEG_QUALITY: "88", JPEG_CHROMA: "4:4:4" });
    expect(env).not.toHaveProperty("other");
    expect(tiffConversion.machine(task).env).not.toHaveProperty("JPEG_QUALITY");
  });
  it("turns each skipped page into a warning, and a clean run into none", () => {
    const cb = { task_id: "tiff-000001", batch_id: "b1", status: "success" as const, output_r2_key: "s/a.jpg", output_file_name: "a.jpg", output_file_size: 10 };
    expect(tiffConversion.result(task, { ...cb, pages_skipped: [{ page: 3, reason: "has 32-bit floating-point samples" }] })).toMatchObject({ ok: true, warnings: ["page 3 skipped: has 32-bit floating-point samples"] });
    expect(tiffConversion.result(task, cb)).not.toHaveProperty("warnings");
    // Notes on converted pages (a range rule applied, a profile ignored) are warnings too.
    expect(tiffConversion.result(task, { ...cb, page_notes: [{ page: 2, note: "has negative 16-bit samples (down to -5): shown offset by 32,768" }] })).toMatchObject({
      ok: true,
      warnings: ["page 2: has negative 16-bit samples (down to -5): shown offset by 32,768"],
    });
  });
});
