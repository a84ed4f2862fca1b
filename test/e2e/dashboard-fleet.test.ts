// The dashboard's fleet view (#/fleet) in a real browser (Debian's chromium driven by
// playwright-core) against the real local stack, with a fleet of 2 machines and two batches at
// once: it shows the limits and what is live, both batches with their shares, the one waiting for
// room with its place, the API tokens of each action, and the batches leaving as they end.
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSamples } from "../../local/samples.ts";
import { submitBatch } from "../../local/submit.ts";
import { openBrowser, type Browser } from "./support/browser.ts";
import { startE2EStack, type E2EStack } from "./support/stack.ts";

describe("the dashboard's fleet view in chromium", () => {
  let stack: E2EStack;
  let chromium: Browser;
  let page: Page;

  beforeAll(async () => {
    chromium = await openBrowser();
    page = chromium.page;
    // A fleet of two machines and one machine per task: two batches at once cannot both have all they want.
    stack = await startE2EStack({ vars: { FLEET_MAX_MACHINES: "2", MAX_CONCURRENT_MACHINES: "" } });
  });
  afterAll(async () => {
    await chromium?.close();
    await stack?.dispose();
  });

  it("shows the limits, both batches with their shares, the waiting one with its place, the API tokens; batches leave as they end", async () => {
    await page.goto(`${stack.orchestratorUrl}/`);
    await page.getByTestId("nav-fleet").click();
    await page.waitForURL("**/#/fleet");
    await expect.poll(() => page.locator("#fleet-app").textContent()).toBe("fanout-worker");
    await expect.poll(() => page.locator("[data-testid=fleet-tokens] tbody tr").count()).toBe(4);
    expect(await page.locator('[data-testid=fleet-tokens] tr[data-action="list"] td').nth(3).textContent()).toBe("1/s");

    for (const batchId of ["ui-fleet-a", "ui-fleet-b"]) {
      const dir = join(stack.workDir, "samples", batchId);
      await generateSamples(dir, { count: 6, width: 1400, height: 1000 });
      await submitBatch(stack.api, stack.s3client, stack.bucket, { dir, batchId });
    }
    // Watch the page (it refreshes itself every 3 s) until it has shown both batches sharing the
    // fleet, one of them waiting for room with its place.
    const seen = { both: false, waiting: "", machines: "" };
    const deadline = Date.now() + 120_000;
    while (!(seen.both && seen.waiting) && Date.now() < deadline) {
      const rows = page.locator("[data-testid=fleet-batches] tbody tr");
      const ids = await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute("data-batch")));
      if (ids.includes("ui-fleet-a") && ids.includes("ui-fleet-b")) {
        seen.both = true;
        const shares = await rows.evaluateAll((trs) => trs.map((tr) => tr.children[3]?.textContent));
        expect(shares.map(Number).reduce((a, b) => a + b, 0), `shares ${shares.join(", ")} of 2 machines`).toBeLessThanOrEqual(2);
      }
      // The batch below its share is first in line; one at its share that wants more waits behind it.
      for (const state of await page.getByTestId("fleet-state").allTextContents()) if (/^waiting for room \(1 of [12]\)$/.test(state)) seen.waiting = state;
      seen.machines = (await page.getByTestId("fleet-machines").textContent()) ?? "";
      expect(seen.machines).toMatch(/^machines[0-2] \/ 2/);
      await page.waitForTimeout(200);
    }
    expect(seen.both, "both batches were listed in the fleet").toBe(true);
    expect(seen.waiting, "a batch was shown first in line for room").toMatch(/^waiting for room \(1 of [12]\)$/);
    // Both end; the fleet empties.
    for (const id of ["ui-fleet-a", "ui-fleet-b"]) await expect.poll(async () => (await stack.api.status(id)).status, { timeout: 180_000, interval: 1000 }).toBe("DONE");
    await expect.poll(() => page.locator("#fleet-empty").isVisible(), { timeout: 60_000, interval: 500 }).toBe(true);
    expect(await page.getByTestId("fleet-waiting").textContent()).toBe("No batch is waiting for room.");
    expect(stack.emulator.core.usage().peak.machines).toBeLessThanOrEqual(2);
  }, 300_000);
});
