// The dashboard against a stack whose reads need READ_TOKEN (set the documented local way, as
// `READ_TOKEN=… npm start` does), in a real browser (Debian's chromium driven by playwright-core):
// it asks for the read token (again after a wrong one), keeps it for the tab, sends it only as an
// Authorization header — on the event stream too, which it reads with fetch because EventSource
// sends no header — and follows a batch to DONE live.
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSamples } from "../../local/samples.ts";
import { submitBatch } from "../../local/submit.ts";
import { openBrowser, type Browser } from "./support/browser.ts";
import { startE2EStack, type E2EStack } from "./support/stack.ts";

const READ_TOKEN = "dashboard-read-token-0123456789";
const b = "ui-read";

describe("the dashboard when reads need a token", () => {
  let stack: E2EStack;
  let browser: Browser;
  let page: Page;

  beforeAll(async () => {
    browser = await openBrowser();
    page = browser.page;
    stack = await startE2EStack({ readToken: READ_TOKEN, vars: { MAX_CONCURRENT_MACHINES: "2" } });
  }, 180_000);
  afterAll(async () => {
    await browser?.close();
    await stack?.dispose();
  });

  it("asks for the read token (again after a wrong one), lists the batch, and follows its event stream with the token as a header to DONE", async () => {
    const dir = join(stack.workDir, "samples", b);
    await generateSamples(dir, { count: 6, width: 900, height: 700 });
    await submitBatch(stack.api, stack.s3client, stack.bucket, { dir, batchId: b });
    const requests: { url: string; authorization: string | undefined }[] = [];
    page.on("request", (r) => requests.push({ url: r.url(), authorization: r.headers()["authorization"] }));
    const streamAnswers: number[] = [];
    page.on("response", (r) => {
      if (new URL(r.url()).pathname === `/status/${b}/events`) streamAnswers.push(r.status());
    });

    await page.goto(stack.orchestratorUrl + "/");
    const dialog = page.locator("#token-dialog");
    await expect.poll(() => dialog.evaluate((d) => (d as unknown as { open: boolean }).open), { timeout: 20_000 }).toBe(true);
    expect(await page.locator("#token-title").textContent()).toBe("Read token");
    await page.locator("#token-input").fill("a-wrong-read-token-000000");
    await page.locator("#token-ok").click();
    // Refused (401): asked again.
    await expect.poll(() => dialog.evaluate((d) => (d as unknown as { open: boolean }).open), { timeout: 20_000 }).toBe(true);
    await page.locator("#token-input").fill(READ_TOKEN);
    await page.locator("#token-ok").click();
    const row = page.locator(`[data-testid=batch-list] tr[data-batch="${b}"]`);
    await row.waitFor({ timeout: 60_000 });

    await row.locator("a").click();
    await page.waitForURL(`**/#/batch/${b}`);
    const badge = page.getByTestId("batch-status");
    await expect.poll(() => badge.textContent(), { timeout: 180_000, interval: 200 }).toBe("DONE");
    await expect.poll(() => page.getByTestId("progress").textContent()).toContain("6 / 6 done");

    // The stream was read with the token as a header; no request ever carried it in its URL.
    const streams = requests.filter((r) => new URL(r.url).pathname === `/status/${b}/events`);
    expect(streams.length).toBeGreaterThan(0);
    expect(streams.every((r) => r.authorization === `Bearer ${READ_TOKEN}`)).toBe(true);
    expect(requests.filter((r) => r.url.includes(READ_TOKEN))).toEqual([]);
    expect(streamAnswers[0], `event stream answers: ${streamAnswers.join(", ")}`).toBe(200);
    // Kept for the tab only.
    expect(await page.evaluate(() => [sessionStorage.getItem("fanout.readToken"), localStorage.length])).toEqual([READ_TOKEN, 0]);
  });
});
