// The dashboard in a real browser (Debian's chromium driven by playwright-core) against the real
// local stack: the list shows a submitted batch, its page advances live to DONE without a reload,
// a failing TIFF's reason appears named by its file with the logs command that works here, the
// admin token is asked once, and the redrive button (offered only with failed tasks) re-runs only
// the failed task. dashboard-redrive.test.ts follows a batch across reset and redrive.
// UPDATE_SCREENSHOT=1 also writes docs/dashboard.png (the README's picture).
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../local/orchestrator-process.ts";
import { generateSamples } from "../../local/samples.ts";
import { submitBatch } from "../../local/submit.ts";
import { startE2EStack, type E2EStack } from "./support/stack.ts";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
// Root in a closed network: no sandbox (needs user namespaces), nothing phoning home.
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const good = "ui-good";
const bad = "ui-bad";

describe("the dashboard in chromium", () => {
  let stack: E2EStack;
  let browser: BrowserContext;
  let page: Page;
  let profile: string;
  const began = Date.now();

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`no chromium at ${CHROMIUM}: install Debian's package (apt-get install -y chromium; .ci/run does) or set CHROMIUM_PATH`);
    }
    // Two machines at a time, so the good batch runs for a few seconds while the page watches.
    stack = await startE2EStack({ vars: { MAX_CONCURRENT_MACHINES: "2" } });
    profile = await mkdtemp(join(tmpdir(), "fanout-chromium-"));
    // A fresh --user-data-dir per run (Playwright passes it for a persistent context).
    browser = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, args: FLAGS, viewport: { width: 1280, height: 1000 } });
    page = browser.pages()[0] ?? (await browser.newPage());
    page.on("pageerror", (error) => console.error(`[browser] page error: ${error.message}`));
    page.on("console", (msg) => {
      if (msg.type() === "error") console.error(`[browser] ${msg.text()}`);
    });
  });
  afterAll(async () => {
    await browser?.close();
    await stack?.dispose();
    if (profile) await rm(profile, { recursive: true, force: true });
    console.log(`[dashboard.test] browser test ran ${((Date.now() - began) / 1000).toFixed(1)} s (stack start included)`);
  });

  it("lists a submitted batch; its page advances to DONE live, without a reload", async () => {
    const dir = join(stack.workDir, "samples", good);
    await generateSamples(dir, { count: 10, width: 1000, height: 800 });
    await submitBatch(stack.api, stack.s3client, stack.bucket, { dir, batchId: good });

    const home = await page.goto(stack.orchestratorUrl + "/");
    // Served from dashboard/ with its _headers: the page may load only its own scripts.
    expect(home?.headers()["content-security-policy"]).toContain("script-src 'self'");
    const row = page.locator(`[data-testid=batch-list] tr[data-batch="${good}"]`);
    // The list refreshes itself every 3 s: the batch appears once its BatchDO has written its row.
    await row.waitFor({ timeout: 30_000 });
    await expect.poll(() => row.locator("td").nth(5).textContent(), { timeout: 30_000 }).toBe("10");

    const streamAnswers: number[] = [];
    const reads = { timeline: 0, tasks: 0 };
    const onResponse = (r: { url(): string; status(): number }) => {
      const path = new URL(r.url()).pathname;
      if (path === `/status/${good}/events`) streamAnswers.push(r.status());
      if (path === `/status/${good}/timeline`) reads.timeline++;
      if (path.startsWith(`/status/${good}/tasks`)) reads.tasks++;
    };
    page.on("response", onResponse);
    await row.locator("a").click();
    await page.waitForURL(`**/#/batch/${good}`);
    // A marker on the window proves the page is never reloaded while it follows the batch.
    await page.evaluate(() => ((globalThis as unknown as { __notReloaded: boolean }).__notReloaded = true));
    const badge = page.getByTestId("batch-status");
    const seen = new Set<string>();
    const deadline = Date.now() + 120_000;
    for (;;) {
      const text = (await badge.textContent()) ?? "";
      if (text) seen.add(text);
      if (text === "DONE") break;
      if (Date.now() > deadline) throw new Error(`batch page never showed DONE; saw ${[...seen].join(", ")}`);
      await page.waitForTimeout(100);
    }
    expect([...seen].some((s) => s !== "DONE"), `statuses seen: ${[...seen].join(", ")}`).toBe(true);
    expect(await page.evaluate(() => (globalThis as unknown as { __notReloaded?: boolean }).__notReloaded)).toBe(true);
    await expect.poll(() => page.getByTestId("progress").textContent()).toContain("10 / 10 done");
    await expect.poll(() => page.getByTestId("eta").textContent()).toBe("finished");
    expect(await page.getByTestId("throughput").textContent()).toMatch(/^[0-9.]+ tasks\/s$/);
    // The phase table and the machine timeline: one row per machine, a bar per task.
    expect(await page.locator('[data-testid=phases] tr[data-phase="TIFF_CONVERSION"]').count()).toBe(1);
    // Its machines (10, one per TIFF in single-task mode, with their size) and their estimated cost; the default
    // pipeline's PDF_SPLITTING found nothing to do in a batch of TIFFs.
    expect(await page.locator('[data-testid=phases] tr[data-phase="TIFF_CONVERSION"] td').nth(6).textContent()).toMatch(/^10 × (shared-cpu|performance)-\d+x \d+ MB/);
    expect(await page.locator('[data-testid=phases] tr[data-phase="TIFF_CONVERSION"] td').nth(7).textContent()).toMatch(/^\$\d+\.\d{4}$/);
    expect(await page.locator('[data-testid=phases] tr[data-phase="PDF_SPLITTING"]').textContent()).toContain("nothing to do");
    await expect.poll(() => page.locator("[data-testid=timeline] .tl-bar.done").count(), { timeout: 20_000 }).toBe(10);
    expect(await page.locator("[data-testid=timeline] .tl-row[data-machine]").count()).toBe(10);
    // The timeline came from one request per refresh (GET /status/:id/timeline), no task list and no task reads.
    expect(reads.timeline).toBeGreaterThanOrEqual(1);
    expect(reads.tasks).toBe(0);
    // DONE with no failed task: nothing to redrive, nothing to reset, so neither is offered.
    expect(await page.getByTestId("redrive").isHidden()).toBe(true);
    expect(await page.getByTestId("reset").isHidden()).toBe(true);
    // The page followed the Worker's event stream (GET /status/:id/events), not a poll.
    page.off("response", onResponse);
    expect(streamAnswers[0], `event stream answers: ${streamAnswers.join(", ")}`).toBe(200);
  });

  it("rides out a stream that ends without a final event (as a deploy or restart ends it): reconnects, then a done event", async () => {
    // A stream cut off mid-batch is hard to produce on cue with the real Worker: the browser is
    // served streams in the documented shape (progress, keep-alive, then done, with ids).
    const body = [
      `id: 1\nevent: progress\ndata: ${JSON.stringify({ tasks_total: 10, tasks_completed: 7, tasks_failed: 1 })}\n\n`,
      `: keep-alive\n\n`,
    ].join("");
    let served = 0;
    await page.route(`**/status/${good}/events`, async (route) => {
      served++;
      await route.fulfill({ status: 200, headers: { "content-type": "text/event-stream", "cache-control": "no-store" }, body });
    });
    // Every text the progress card shows, however briefly (the real status overwrites the canned counts).
    await page.addInitScript({
      content: `globalThis.__progressSeen = [];
        new MutationObserver(() => {
          const el = document.querySelector("[data-testid=progress]");
          if (el) globalThis.__progressSeen.push(el.textContent);
        }).observe(document, { subtree: true, childList: true, characterData: true });`,
    });
    await page.goto("about:blank");
    await page.goto(`${stack.orchestratorUrl}/#/batch/${good}`);
    const progressSeen = () => page.evaluate(() => (globalThis as unknown as { __progressSeen: string[] }).__progressSeen);
    await expect.poll(async () => (await progressSeen()).some((t) => t.includes("7 / 10 done · 1 failed")), { timeout: 30_000 }).toBe(true);
    await expect.poll(() => page.getByTestId("live").textContent()).toMatch(/event stream|reconnecting/);
    expect(served).toBeGreaterThanOrEqual(1);
    // The stream ended without a final event: EventSource reconnects, the page says so, and a
    // done event then brings the real status back.
    await page.unroute(`**/status/${good}/events`);
    await page.route(`**/status/${good}/events`, (route) =>
      route.fulfill({ status: 200, headers: { "content-type": "text/event-stream" }, body: `id: 2\nevent: done\ndata: {"status":"DONE"}\n\n` }),
    );
    await expect.poll(() => page.getByTestId("progress").textContent(), { timeout: 20_000 }).toContain("10 / 10 done");
    await expect.poll(() => page.getByTestId("live").textContent()).toBe("finished");
    await page.unroute(`**/status/${good}/events`);
  });

  it("`fanout list` shows the same batches from GET /batches", async () => {
    const run = (args: string[]) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
        execFile(
          process.execPath,
          [join(REPO_ROOT, "local/cli/main.ts"), "list", ...args],
          { env: { PATH: process.env.PATH ?? "", ORCHESTRATOR_URL: stack.orchestratorUrl, FANOUT_STATE_DIR: "/nonexistent-fanout-state" } },
          (error, stdout, stderr) => resolve({ code: typeof error?.code === "number" ? error.code : error ? 1 : 0, stdout, stderr }),
        );
      });
    const table = await run(["--status", "DONE"]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(new RegExp(`${good}\\s+DONE\\s+10\\s+0\\s+10\\s+single`));
    const json = await run(["--json", "--all", "--limit", "1"]);
    expect(json.code, json.stderr).toBe(0);
    const body = JSON.parse(json.stdout) as { batches: { batch_id: string }[]; next_cursor: string | null };
    expect(body.batches.map((b) => b.batch_id)).toContain(good);
    expect(body.next_cursor).toBeNull();
    const bad = await run(["--status", "done;drop"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--status "done;drop": must be');
  });

  it("shows a failing TIFF's reason, named by its file, and a copyable logs command (the local stack's own)", async () => {
    const dir = join(stack.workDir, "samples", bad);
    await generateSamples(dir, { count: 5, width: 600, height: 450 });
    await writeFile(join(dir, "scan-9999-broken.tif"), "this is not a TIFF at all, just text with a .tif name\n");
    await submitBatch(stack.api, stack.s3client, stack.bucket, { dir, batchId: bad });

    await page.goto(`${stack.orchestratorUrl}/#/batch/${bad}`);
    const reason = page.locator('[data-testid=failures] tr[data-task] [data-testid=failure-reason]');
    await reason.first().waitFor({ timeout: 120_000 });
    await expect.poll(async () => (await page.getByTestId("batch-status").textContent()) ?? "", { timeout: 120_000 }).toMatch(/^(DONE|FAILED)$/);
    const text = (await reason.first().textContent()) ?? "";
    const api = await stack.api.allTasks(bad, "failed");
    expect(api).toHaveLength(1);
    expect(text).toBe(api[0].error);
    expect(text.length).toBeGreaterThan(10);
    expect(await page.getByTestId("failure-file").first().textContent()).toBe("scan-9999-broken.tif");
    const command = await page.locator("[data-testid=failures] .cmd code").first().textContent();
    // LOGS_COMMAND of the local stack: the command that works here (no Fly app to ask).
    expect(command).toMatch(/^npm run fanout -- logs [0-9a-f]{14}$/);
    expect(command).toBe(api[0].logs);
    await expect.poll(() => page.locator("[data-testid=timeline] .tl-bar.failed").count(), { timeout: 20_000 }).toBeGreaterThanOrEqual(1);

    const shot = join(stack.workDir, "dashboard.png");
    await page.screenshot({ path: shot, fullPage: true });
    if (process.env.UPDATE_SCREENSHOT === "1") {
      await mkdir(join(REPO_ROOT, "docs"), { recursive: true });
      await copyFile(shot, join(REPO_ROOT, "docs", "dashboard.png"));
    }
  });

  it("redrive is offered with failed tasks: it asks for the admin token once (sessionStorage, sent only as a header) and re-runs only the failed task", async () => {
    const before = stack.emulator.core.machines().length;
    await page.goto(`${stack.orchestratorUrl}/#/batch/${bad}`);
    await expect.poll(() => page.getByTestId("batch-status").textContent(), { timeout: 30_000 }).toBe("DONE");
    const adminCalls: { url: string; auth: string | undefined }[] = [];
    page.on("request", (r) => {
      if (new URL(r.url()).pathname.startsWith("/admin/")) adminCalls.push({ url: r.url(), auth: r.headers().authorization });
    });
    const terminalAgain = async () => {
      await expect.poll(() => page.getByTestId("batch-status").textContent(), { timeout: 120_000 }).toBe("DONE");
      await expect.poll(() => page.getByTestId("redrive").isVisible(), { timeout: 20_000 }).toBe(true);
    };
    for (let i = 0; i < 2; i++) {
      await page.getByTestId("redrive").click();
      if (i === 0) {
        await page.locator("#token-input").fill(stack.adminToken);
        await page.locator("#token-ok").click();
      }
      await expect.poll(() => page.getByTestId("action-result").textContent(), { timeout: 20_000 }).toMatch(/^redrive: /);
      if (i === 0) {
        // The broken scan fails again, on exactly one new machine, and nothing else is converted again.
        await expect.poll(() => stack.emulator.core.machines().length - before, { timeout: 60_000 }).toBe(1);
        await expect.poll(async () => (await stack.api.allTasks(bad, "failed"))[0]?.attempt ?? 0, { timeout: 60_000 }).toBeGreaterThan(1);
        expect((await stack.api.status(bad)).progress.tasks_completed).toBe(5);
      }
      // The page follows the redrive to its end (not the first run's) and offers it again.
      await terminalAgain();
    }
    expect(await page.locator("#token-dialog").evaluate((d) => (d as unknown as { open: boolean }).open)).toBe(false);
    expect(adminCalls).toHaveLength(2);
    for (const call of adminCalls) {
      expect(call.auth).toBe(`Bearer ${stack.adminToken}`);
      expect(call.url).not.toContain(stack.adminToken);
    }
    expect(await page.evaluate(() => (globalThis as unknown as { sessionStorage: { getItem(k: string): string | null } }).sessionStorage.getItem("fanout.adminToken"))).toBe(stack.adminToken);
    expect(await page.evaluate(() => (globalThis as unknown as { localStorage: { length: number } }).localStorage.length)).toBe(0);
  });
});
