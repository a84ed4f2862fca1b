// The PDF_SPLITTING phase's pure parts: which files it takes (declared, or by signature when the type
// says nothing), the settings a manifest directory may give, its work model and the machine it picks,
// and how a callback becomes file entries. Expected values are hand-computed from the constants.
import { describe, expect, it } from "vitest";
import { PDF_BYTES_PER_PAGE, pdfGuest, pdfSplitting, pdfWork } from "../../orchestrator/phases/pdf-splitting.ts";
import type { PhaseFile } from "../../orchestrator/phases/types.ts";
import type { PdfCallback } from "../../shared/pdf.ts";

const file = (r2_key: string, content_type: string, extra: Partial<PhaseFile> = {}): PhaseFile => ({ r2_key, logical_path: r2_key, file_name: r2_key, file_size: 1000, content_type, ...extra });
const pdfHead = new TextEncoder().encode("\n%PDF-1.7\n");
const tiffHead = new Uint8Array([0x49, 0x49, 0x2a, 0x00]);

describe("PDF_SPLITTING plans", () => {
  it("a PDF by content type or .pdf name without reading it; by %PDF- only when the type says nothing", () => {
    expect(pdfSplitting.plan(file("a/report", "application/pdf"))).toMatchObject({ input_key: "a/report", size_bytes: 1000 });
    expect(pdfSplitting.plan(file("a/letter.PDF", "application/octet-stream"))).not.toBeNull();
    expect(pdfSplitting.sniff!.wants(file("a/letter.PDF", "application/octet-stream"))).toBe(false);
    expect(pdfSplitting.sniff!.wants(file("a/scan.bin", "application/octet-stream"))).toBe(true);
    expect(pdfSplitting.plan(file("a/scan.bin", "application/octet-stream"), pdfHead)).not.toBeNull();
    expect(pdfSplitting.plan(file("a/scan.bin", "application/octet-stream"), tiffHead)).toBeNull();
    expect(pdfSplitting.plan(file("a/scan.bin", "application/octet-stream"))).toBeNull();
    // A declared type is taken at its word: image/tiff is never read for a signature.
    expect(pdfSplitting.sniff!.wants(file("a/scan.tif", "image/tiff"))).toBe(false);
    expect(pdfSplitting.plan(file("a/scan.tif", "image/tiff"), pdfHead)).toBeNull();
    expect([...pdfSplitting.plan(file("a/report.pdf", "application/pdf"))!.output_key_candidates].slice(0, 3)).toEqual(["a/report-p001.jpg", "a/report.pdf-p001.jpg", "a/report-2-p001.jpg"]);
  });

  it("takes pdf_render_dpi and the JPEG settings from processing_config, and fails the file on a bad one", () => {
    expect(pdfSplitting.plan(file("r.pdf", "application/pdf", { processing_config: { pdf_render_dpi: 150, jpeg_quality: 80 } }))!.params).toEqual({ PDF_RENDER_DPI: "150", JPEG_QUALITY: "80" });
    expect(pdfSplitting.plan(file("r.pdf", "application/pdf", { processing_config: { pdf_render_dpi: 5000 } }))!.error).toBe("processing_config is invalid: pdf_render_dpi must be 36–1200");
  });
});

describe("PDF_SPLITTING's work model and machine", () => {
  it("a page per 20 KB at 0.8 CPU-s, 555 MB + 240 MB for up to 2,000 pages + the file: an 18 KB PDF is one page on shared-cpu-1x 1 GB", () => {
    expect(PDF_BYTES_PER_PAGE).toBe(20 * 1024);
    // pages ⌈18000 / 20480⌉ = 1; CPU 0.6 + 0.8; memory 320 + ⌈17.4 × 13.5⌉ = 555, + 2,000 × 0.12 = 240, + ⌈18000 B⌉ = 1 MB; bytes: 18000 down,
    // 18000 up again as single-page PDFs and 0.5 MiB a page of JPEG (Fly bills what goes up as egress).
    expect(pdfWork(18_000)).toEqual({ cpuS: 1.4, parallelism: 1, memoryMb: 796, inBytes: 18_000, outBytes: 18_000 + 524_288 });
    // 1.4 CPU-s fits a shared vCPU's initial burst: the cheapest size that holds 796 MB (256 MB steps).
    expect(pdfGuest(18_000)).toEqual({ cpu_kind: "shared", cpus: 1, memory_mb: 1024 });
  });

  it("a 1,000-page text PDF (1.7 MB) is ~85 pages of work, past a shared vCPU's burst: performance-1x 2 GB; a 100 MB PDF is capped at 2,000 pages", () => {
    expect(pdfWork(1_738_765).cpuS).toBeCloseTo(0.6 + Math.ceil(1_738_765 / 20_480) * 0.8, 6);
    expect(pdfGuest(1_738_765)).toEqual({ cpu_kind: "performance", cpus: 1, memory_mb: 2048 });
    expect(pdfWork(100 * 1024 * 1024)).toMatchObject({ cpuS: 0.6 + 2000 * 0.8, memoryMb: 555 + 240 + 100 });
  });
});

describe("PDF_SPLITTING's result", () => {
  const task = { task_id: "pdf-000001", batch_id: "b", input_key: "a/report.pdf", output_key: "a/report-p001.jpg", size_bytes: 1, attempt: 1, params: {} };
  const body = (over: Record<string, unknown> = {}): PdfCallback =>
    ({
      task_id: "pdf-000001",
      batch_id: "b",
      status: "success",
      output_r2_key: "a/report-p001.jpg",
      output_file_name: "report-p001.jpg",
      output_file_size: 10,
      outputs: [
        { r2_key: "a/report-p001.jpg", file_size: 10, content_type: "image/jpeg", page: 1, width: 2550, height: 3300 },
        { r2_key: "a/report-p001.pdf", file_size: 20, content_type: "application/pdf", page: 1 },
        { r2_key: "a/report-p002.pdf", file_size: 30, content_type: "application/pdf", page: 2 },
      ],
      pages: 2,
      pages_skipped: [{ page: 2, reason: "is 66667×417 pixels at 300 DPI" }],
      dpi: 300,
      jpeg: { quality: 95, chroma: "4:2:0", mozjpeg: true },
      input: { r2_key: "a/report.pdf", bytes: 100, encryption: "owner-password" },
      ...over,
    }) as PdfCallback;

  it("adds each page's JPEG and PDF with its source page; warns of a page without JPEG and of a PDF written decrypted", () => {
    const outcome = pdfSplitting.result(task, body());
    expect(outcome).toEqual({
      ok: true,
      add: [
        { r2_key: "a/report-p001.jpg", logical_path: "a/report-p001.jpg", file_name: "report-p001.jpg", file_size: 10, content_type: "image/jpeg", source_r2_key: "a/report.pdf", source_page: 1, dpi: 300 },
        { r2_key: "a/report-p001.pdf", logical_path: "a/report-p001.pdf", file_name: "report-p001.pdf", file_size: 20, content_type: "application/pdf", source_r2_key: "a/report.pdf", source_page: 1 },
        { r2_key: "a/report-p002.pdf", logical_path: "a/report-p002.pdf", file_name: "report-p002.pdf", file_size: 30, content_type: "application/pdf", source_r2_key: "a/report.pdf", source_page: 2 },
      ],
      warnings: ["page 2: no JPEG: is 66667×417 pixels at 300 DPI", "the PDF has an owner password (no password to open it): its single-page PDFs are written without encryption"],
    });
  });

  it("refuses a callback about another input, or whose first output is not the one it names", () => {
    expect(pdfSplitting.result(task, body({ input: { r2_key: "a/other.pdf", bytes: 1, encryption: "none" } }))).toMatchObject({ ok: false, retryable: false });
    expect(pdfSplitting.result(task, body({ output_r2_key: "a/report-p001.pdf" }))).toMatchObject({ ok: false, retryable: false });
    expect(pdfSplitting.result(task, { task_id: "pdf-000001", batch_id: "b", status: "error", error: "the PDF is encrypted", retryable: false })).toEqual({ ok: false, error: "the PDF is encrypted", retryable: false });
  });
});
