// An organisation's quota as the emulator enforces it: live machines, vCPUs and memory across its
// apps and regions, from FANOUT_FLY_QUOTA (`machines=20,vcpus=64,memory_mb=131072`; any subset).
import { z } from "zod";

export interface Quota {
  machines?: number;
  vcpus?: number;
  memory_mb?: number;
}

/** What is live: machines, their vCPUs and their memory. */
export interface Usage {
  machines: number;
  vcpus: number;
  memory_mb: number;
}

const KEYS = ["machines", "vcpus", "memory_mb"] as const;
const Amount = z.coerce.number({ message: "must be a whole number" }).int("must be a whole number").min(1, "must be at least 1");

/** Parses `machines=20,vcpus=64,memory_mb=131072`; an empty string is no quota. Throws naming the bad part. */
export function parseQuota(text: string | undefined, name = "FANOUT_FLY_QUOTA"): Quota | undefined {
  if (text === undefined || text.trim() === "") return undefined;
  const quota: Quota = {};
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const [key, value, extra] = part.split("=").map((s) => s.trim());
    if (!(KEYS as readonly string[]).includes(key) || value === undefined || extra !== undefined) {
      throw new Error(`${name}: "${part}" is not one of ${KEYS.map((k) => `${k}=N`).join(", ")} (e.g. machines=20,vcpus=64,memory_mb=131072)`);
    }
    const parsed = Amount.safeParse(value);
    if (!parsed.success) throw new Error(`${name}: ${key} ${parsed.error.issues[0].message}, got "${value}"`);
    quota[key as (typeof KEYS)[number]] = parsed.data;
  }
  return quota;
}

/** Live machines per region from `iad=2,ord=10` (FANOUT_FLY_REGION_CAPACITY). Throws naming the bad part. */
export function parseRegionCapacity(text: string | undefined, name = "FANOUT_FLY_REGION_CAPACITY"): Record<string, number> | undefined {
  if (text === undefined || text.trim() === "") return undefined;
  const out: Record<string, number> = {};
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const [region, value] = part.split("=").map((s) => s.trim());
    const parsed = z.coerce.number().int().min(0).safeParse(value);
    if (!/^[a-z]{3}$/.test(region ?? "") || value === undefined || !parsed.success) {
      throw new Error(`${name}: "${part}" must be REGION=MACHINES, e.g. iad=2`);
    }
    out[region] = parsed.data;
  }
  return out;
}
