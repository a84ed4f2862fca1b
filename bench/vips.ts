// The reference converter: the `vips` command line from Debian's libvips-tools, installed
// with apt-get when missing (the bench machines run as root; apt-get update first).
import { execFileSync, spawnSync } from "node:child_process";

export interface VipsInfo {
  version: string;
  installed: "already" | "now";
}

function vipsVersion(): string | null {
  const r = spawnSync("vips", ["--version"], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : null;
}

export function ensureVips(log: (line: string) => void): VipsInfo {
  const before = vipsVersion();
  if (before) return { version: before, installed: "already" };
  if (process.getuid?.() !== 0) {
    throw new Error("the conversion benchmark needs `vips` (Debian: apt-get install libvips-tools); run as root or install it first");
  }
  log("installing libvips-tools with apt-get (once) …");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  execFileSync("apt-get", ["update", "-qq"], { stdio: ["ignore", "ignore", "inherit"], env });
  execFileSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", "libvips-tools", "time"], { stdio: ["ignore", "ignore", "inherit"], env });
  const after = vipsVersion();
  if (!after) throw new Error("apt-get installed libvips-tools, but `vips --version` still fails");
  return { version: after, installed: "now" };
}
