// The worker's image: no Docker engine runs here, so check what a build would need —
// every path the Dockerfile copies exists and survives .dockerignore, the entrypoint runs
// as plain `node fly-worker/main.ts`, and everything it imports is in the image.
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "./support/worker.ts";

const dockerfile = readFileSync(join(REPO_ROOT, "fly-worker/Dockerfile"), "utf8");
const dockerignore = readFileSync(join(REPO_ROOT, ".dockerignore"), "utf8")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith("#"));
const copies = [...dockerfile.matchAll(/^COPY\s+(?!--from)(.+)$/gm)].map((m) => {
  const parts = m[1].trim().split(/\s+/).filter((p) => !p.startsWith("--"));
  return { sources: parts.slice(0, -1), dest: parts.at(-1) ?? "" };
});
const copiedSources = copies.flatMap((c) => c.sources.map((s) => s.replace(/\/$/, "")));

/** A path is excluded when a .dockerignore pattern (simple prefix/glob subset) matches it. */
function ignored(path: string): boolean {
  return dockerignore.some((pattern) => {
    if (pattern.startsWith("!")) return false;
    const re = new RegExp(`^${pattern.replace(/\*\*\//g, "(.*/)?").replace(/\./g, "\\.").replace(/\*/g, "[^/]*")}(/.*)?$`);
    return re.test(path);
  });
}

function imports(file: string): string[] {
  const text = readFileSync(file, "utf8");
  return [...text.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+"([^"]+)"/gm)].map((m) => m[1]);
}

describe("fly-worker image", () => {
  it("copies only paths that exist and are not excluded by .dockerignore", () => {
    expect(copiedSources).toEqual(expect.arrayContaining(["package.json", "package-lock.json", "shared", "fly-worker"]));
    for (const source of copiedSources) {
      expect(existsSync(join(REPO_ROOT, source)), `COPY ${source}: missing`).toBe(true);
      expect(ignored(source), `COPY ${source}: excluded by .dockerignore`).toBe(false);
    }
  });

  it("runs node fly-worker/main.ts on Node 22 slim, production deps, non-root, MALLOC_ARENA_MAX=2", () => {
    expect(dockerfile).toMatch(/^FROM node:22-slim/m);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
    expect(dockerfile).toMatch(/MALLOC_ARENA_MAX=2/);
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toMatch(/^CMD \["node", "fly-worker\/main\.ts"\]$/m);
    expect(existsSync(join(REPO_ROOT, "fly-worker/main.ts"))).toBe(true);
  });

  it("everything the entrypoint imports is copied into the image or a production dependency", () => {
    const pkg = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { dependencies: Record<string, string> };
    const seen = new Set<string>();
    const queue = [join(REPO_ROOT, "fly-worker/main.ts")];
    while (queue.length > 0) {
      const file = queue.pop() as string;
      if (seen.has(file)) continue;
      seen.add(file);
      const rel = relative(REPO_ROOT, file);
      expect(copiedSources.some((s) => rel === s || rel.startsWith(`${s}/`)) && !ignored(rel), `${rel} is not in the image`).toBe(true);
      for (const spec of imports(file)) {
        if (spec.startsWith(".")) {
          const target = resolve(dirname(file), spec);
          expect(spec.endsWith(".ts") && statSync(target).isFile(), `${rel} imports ${spec}: use an existing .ts path`).toBe(true);
          queue.push(target);
        } else if (!spec.startsWith("node:")) {
          const name = spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0];
          expect(pkg.dependencies, `${rel} imports ${name}, which is not a production dependency`).toHaveProperty([name]);
        }
      }
    }
    expect(seen.size).toBeGreaterThan(5);
  });

  it("fly.toml builds this Dockerfile and defines no services", () => {
    const toml = readFileSync(join(REPO_ROOT, "fly.toml"), "utf8");
    expect(toml).toMatch(/^app = "fanout-worker"$/m);
    expect(toml).toMatch(/dockerfile = "fly-worker\/Dockerfile"/);
    expect(toml).not.toMatch(/^\[(http_service|\[services\])/m);
    const wrangler = readFileSync(join(REPO_ROOT, "wrangler.jsonc"), "utf8");
    expect(wrangler, "the orchestrator's FLY_APP_NAME is this app").toMatch(/"FLY_APP_NAME":\s*"fanout-worker"/);
  });
});
