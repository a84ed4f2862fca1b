// The dashboard in chromium across reset and redrive, against the real local stack: the attempts a
// reset ended are drawn as cancelled, never as running; after a redrive the page follows the new run
// to DONE instead of stopping on the reset's replayed `error`; a batch with nothing to do shows its
// warning and offers no redrive; and plain `chromium --headless --screenshot` captures a batch page
// while the batch runs (the live stream opens after the page's load event).
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TERMINAL } from "../../local/api.ts";
import { generateSamples } from "../../local/samples.ts";
import { submitBatch } from "../../local/submit.ts";
import { startE2EStack, type E2EStack } from "./support/stack.ts";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const TASKS = 20;

/** Plain `chromium --headless --screenshot` of `url`: resolves with its exit code, or "hung" when it has not exited after `limitMs`. */
async function plainScreenshot(url: string, file: string, limitMs: number): Promise<number | "hung"> {
  const profile = await mkdtemp(join(tmpdir(), "fanout-shot-"));
  const child = spawn(CHROMIUM, [...FLAGS, `--user-data-dir=${profile}`, `--screenshot=${file}`, "--window-size=1280,1000", url], { stdio: "ignore" });
  const code = await new Promise<number | "hung">((resolve) => {
    const timer = setTimeout(() => resolve("hung"), limitMs);
    child.once("exit", (c) => {
      clearTimeout(timer);
      resolve(c ?? -1);
    });
  });
  if (code === "hung") {
    const gone = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await gone;
  }
  await rm(profile, { recursive: true, force: true });
  return code;
}

describe("the dashboard across reset and redrive", () => {
  let stack: E2EStack;
  let browser: BrowserContext;
  let page: Page;
  let profile: string;

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`no chromium at ${CHROMIUM}: install Debian's package (apt-get install -y chromium) or set CHROMIUM_PATH`);
    // Two machines at a time, each booting for 2 s: a 20-task batch runs for 20 s or more, long
    // enough to reset it mid-run, and its redrive long enough to screenshot while it runs.
    stack = await startE2EStack({ vars: { MAX_CONCURRENT_MACHINES: "2" }, emulator: { faults: { bootDelayMs: 2000 } } });
    profile = await mkdtemp(join(tmpdir(), "fanout-chromium-"));
    browser = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, args: FLAGS, viewport: { width: 1280, height: 1000 } });
    page = browser.pages()[0] ?? (await browser.newPage());
    page.on("pageerror", (error) => console.error(`[browser] page error: ${error.message}`));
    // Every text the header's live note shows, so a failure says how the page followed the batch.
    await page.addInitScript({
      content: `globalThis.__live = [];
        new MutationObserver(() => {
          const el = document.querySelector("[data-testid=live]");
          const badge = document.querySelector("[data-testid=batch-status]");
          const text = (el?.textContent ?? "") + " | " + (badge?.textContent ?? "");
          if (globalThis.__live.at(-1) !== text) globalThis.__live.push(text);
        }).observe(document, { subtree: true, childList: true, characterData: true });`,
    });
  });
  /** Waits for the header's live note to read `text`; a failure lists every note and badge the page showed. */
  async function untilLive(text: string): Promise<void> {
    try {
      await expect.poll(() => page.getByTestId("live").textContent(), { timeout: 30_000 }).toBe(text);
    } catch (error) {
      const seen = await page.evaluate(() => (globalThis as unknown as { __live: string[] }).__live);
      throw new Error(`${error instanceof Error ? error.message : String(error)}\nlive note | badge, as they changed: ${seen.join(" → ")}`, { cause: error });
    }
  }
  afterAll(async () => {
    await browser?.close();
    await stack?.dispose();
    if (profile) await rm(profile, { recursive: true, force: true });
  });

  it("a batch with nothing to do shows the warning and offers no redrive", async () => {
    const dir = join(stack.workDir, "samples", "ui-empty");
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "readme.txt"), "no scans here\n");
    await submitBatch(stack.api, stack.s3client, stack.bucket, { dir, batchId: "ui-empty" });
    await page.goto(`${stack.orchestratorUrl}/#/batch/ui-empty`);
    await expect.poll(() => page.getByTestId("batch-status").textContent(), { timeout: 60_000 }).toBe("DONE");
    await expect.poll(() => page.getByTestId("warnings").isVisible(), { timeout: 20_000 }).toBe(true);
    expect(await page.locator("[data-testid=warnings] li").allTextContents()).toEqual(["nothing to do: no file of the batch (1 file) needed any of TIFF_CONVERSION, PDF_SPLITTING"]);
    expect(await page.getByTestId("redrive").isHidden()).toBe(true);
  });

  it("reset mid-run: no attempt drawn as running; redrive: the page follows run 1 to DONE; plain chromium --screenshot captures it running", async () => {
    const batchId = "ui-redo";
    const dir = join(stack.workDir, "samples", batchId);
    await generateSamples(dir, { count: TASKS, width: 800, height: 600 });
    await submitBatch(stack.api, stack.s3client, stack.bucket, { dir, batchId });
    await page.goto(`${stack.orchestratorUrl}/#/batch/${batchId}`);
    // Mid-run: some done, machines live.
    for (;;) {
      const s = await stack.api.status(batchId).catch(() => null);
      if (s && TERMINAL.has(s.status)) throw new Error(`the batch ended before the reset: ${JSON.stringify(s.progress)}`);
      if (s && s.progress.tasks_completed >= 2 && s.progress.starting + s.progress.running > 0) break;
      await page.waitForTimeout(200);
    }
    page.once("dialog", (d) => void d.accept());
    await page.getByTestId("reset").click();
    await page.locator("#token-input").fill(stack.adminToken);
    await page.locator("#token-ok").click();
    await expect.poll(() => page.getByTestId("batch-status").textContent(), { timeout: 30_000 }).toBe("ERROR");
    await untilLive("finished");

    // Every attempt the reset ended is closed (engine state), and the timeline draws none as running.
    const tasks = await stack.api.allTasks(batchId);
    const open: string[] = [];
    for (const t of tasks.filter((x) => x.attempt > 0)) {
      const detail = (await (await fetch(`${stack.orchestratorUrl}/status/${batchId}/tasks/${t.task_id}`)).json()) as { attempts: { attempt: number; outcome: string; ended_at: string | null }[] };
      for (const a of detail.attempts) if (a.outcome === "open" || a.ended_at === null) open.push(`${t.task_id}#${a.attempt} ${a.outcome}`);
    }
    expect(open, "attempts left open by the reset").toEqual([]);
    await expect.poll(() => page.locator("[data-testid=timeline] .tl-bar.cancelled").count(), { timeout: 20_000 }).toBeGreaterThan(0);
    expect(await page.locator("[data-testid=timeline] .tl-bar.open").count()).toBe(0);
    const failedByReset = (await stack.api.status(batchId)).progress.tasks_failed;
    expect(failedByReset).toBeGreaterThan(0);

    // Redrive (the token is kept): run 1. The stream replays run 0's `error`; the page must not stop on it.
    expect(await page.getByTestId("redrive").isVisible()).toBe(true);
    await page.getByTestId("redrive").click();
    await expect.poll(() => page.getByTestId("action-result").textContent(), { timeout: 20_000 }).toMatch(/^redrive: /);
    await untilLive("live: event stream");

    // While it runs: plain chromium, no Playwright, captures the page (it never did: the stream kept it loading).
    const shot = join(stack.workDir, "running.png");
    const exited = await plainScreenshot(`${stack.orchestratorUrl}/#/batch/${batchId}`, shot, 120_000);
    const duringShot = await stack.api.status(batchId);
    expect(exited, "chromium --headless --screenshot of the running batch page").toBe(0);
    expect((await readFile(shot)).subarray(1, 4).toString()).toBe("PNG");
    expect(TERMINAL.has(duringShot.status), `the batch must still run when the screenshot is taken: ${JSON.stringify(duringShot.progress)}`).toBe(false);

    // The page follows the redrive to its end.
    await expect.poll(() => page.getByTestId("batch-status").textContent(), { timeout: 180_000 }).toBe("DONE");
    await expect.poll(() => page.getByTestId("progress").textContent(), { timeout: 20_000 }).toContain(`${TASKS} / ${TASKS} done`);
    await untilLive("finished");
    await expect.poll(() => page.locator("[data-testid=timeline] .tl-bar.done").count(), { timeout: 20_000 }).toBe(TASKS);
    expect(await page.locator("[data-testid=timeline] .tl-bar.open").count()).toBe(0);
    expect(await page.getByTestId("redrive").isHidden()).toBe(true);
  });
});
