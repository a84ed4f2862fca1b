// What the emulator's API accepts and shows: a create body checked with messages in the API's
// style (the guest sizes and regions Fly accepts), and request and machine records with every
// config.env value redacted. Web standards only.
import type { MachineConfig } from "./machines.ts";

/** Fly's public regions (fly.io/docs/reference/regions). */
export const FLY_REGIONS = [
  "ams", "arn", "atl", "bog", "bom", "bos", "cdg", "den", "dfw", "ewr", "eze", "fra", "gdl", "gig",
  "gru", "hkg", "iad", "jnb", "lax", "lhr", "mad", "mia", "nrt", "ord", "otp", "phx", "qro", "scl",
  "sea", "sin", "sjc", "syd", "waw", "yul", "yyz",
];

/** A create body the API accepts, its defaults filled in. */
export type ValidCreate = { name: string | undefined; region: string; config: MachineConfig };

/** The create body as the API would take it, or the API's message refusing it (answered 422). */
export function validateCreate(json: unknown, regions: string[]): ValidCreate | string {
  if (!isObject(json)) return "invalid request body: expected a JSON object";
  if (json.name !== undefined && (typeof json.name !== "string" || json.name.length > 63)) {
    return "invalid machine name: must be a string of at most 63 characters";
  }
  const region = json.region === undefined ? (regions[0] ?? "iad") : json.region;
  if (typeof region !== "string" || !regions.includes(region)) return `invalid region "${String(region)}": unknown region`;
  const config = json.config;
  if (!isObject(config)) return "invalid config: config is required";
  if (typeof config.image !== "string" || config.image.trim() === "") return "invalid config.image: an image is required";

  const guest = config.guest ?? { cpu_kind: "shared", cpus: 1, memory_mb: 256 };
  if (!isObject(guest)) return "invalid config.guest: expected an object";
  const kind = guest.cpu_kind ?? "shared";
  const cpus = guest.cpus ?? 1;
  const memory = guest.memory_mb ?? 256;
  if (kind !== "shared" && kind !== "performance") return `invalid config.guest.cpu_kind "${String(kind)}": must be shared or performance`;
  if (typeof cpus !== "number" || ![1, 2, 4, 8, 16].includes(cpus)) return `invalid config.guest.cpus ${String(cpus)}: must be 1, 2, 4, 8 or 16`;
  if (typeof memory !== "number" || !Number.isInteger(memory) || memory % 256 !== 0) {
    return `invalid config.guest.memory_mb ${String(memory)}: memory must be in increments of 256 MiB`;
  }
  const [min, max] = kind === "shared" ? [256 * cpus, 2048 * cpus] : [2048 * cpus, 8192 * cpus];
  if (memory < min || memory > max) {
    return `invalid config.guest.memory_mb ${memory}: a ${kind}-cpu-${cpus}x guest takes ${min} to ${max} MiB`;
  }
  const env = config.env ?? {};
  if (!isStringMap(env)) return "invalid config.env: expected an object of string values";
  const metadata = config.metadata ?? {};
  if (!isStringMap(metadata)) return "invalid config.metadata: expected an object of string values";
  const restart = config.restart ?? { policy: "always" };
  if (!isObject(restart) || !["no", "always", "on-failure"].includes(String(restart.policy))) {
    return `invalid config.restart.policy "${isObject(restart) ? String(restart.policy) : ""}": must be no, always or on-failure`;
  }
  if (config.auto_destroy !== undefined && typeof config.auto_destroy !== "boolean") return "invalid config.auto_destroy: expected a boolean";
  return {
    name: json.name as string | undefined,
    region,
    config: {
      ...config,
      image: config.image,
      guest: { cpu_kind: kind, cpus, memory_mb: memory },
      env: { ...env },
      metadata: { ...metadata },
      auto_destroy: config.auto_destroy === true,
      restart: { policy: String(restart.policy) },
    },
  };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isStringMap(v: unknown): v is Record<string, string> {
  return isObject(v) && Object.values(v).every((x) => typeof x === "string");
}

/** A request body as the emulator records it: JSON with every config.env value "[redacted]". */
export function redactBody(text: string): unknown {
  if (!text) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return text.length > 200 ? `${text.slice(0, 200)}…` : text;
  }
  if (isObject(json) && isObject(json.config) && isObject(json.config.env)) {
    const env = Object.fromEntries(Object.keys(json.config.env).map((k) => [k, "[redacted]"]));
    return { ...json, config: { ...json.config, env } };
  }
  return json;
}

/** A machine view with every config.env value "[redacted]" (the emulator's own machine list). */
export function stripEnv(view: Record<string, unknown>): Record<string, unknown> {
  const config = view.config;
  if (!isObject(config) || !isObject(config.env)) return view;
  return { ...view, config: { ...config, env: Object.fromEntries(Object.keys(config.env).map((k) => [k, "[redacted]"])) } };
}
