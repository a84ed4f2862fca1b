// Debian's chromium driven by playwright-core, opened the way the dashboard tests open it: headless,
// its own profile (removed on close), the page's errors on the test's output.
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

export interface OpenChromium {
  browser: BrowserContext;
  page: Page;
  close(): Promise<void>;
}

export async function openChromium(viewport: { width: number; height: number }): Promise<OpenChromium> {
  if (!existsSync(CHROMIUM)) throw new Error(`no chromium at ${CHROMIUM}: install Debian's package (apt-get install -y chromium) or set CHROMIUM_PATH`);
  const profile = await mkdtemp(join(tmpdir(), "fanout-chromium-"));
  const browser = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, args: FLAGS, viewport });
  const page = browser.pages()[0] ?? (await browser.newPage());
  page.on("pageerror", (error) => console.error(`[browser] page error: ${error.message}`));
  return {
    browser,
    page,
    close: async () => {
      await browser.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}
