// The Fly Machines API's shapes as the client sends and reads them
// (https://fly.io/docs/machines/api/machines-resource/), and the guest sizes Fly accepts.
// Runs in workerd: zod only.
import { z } from "zod";

export interface GuestSize {
  cpu_kind: "shared" | "performance";
  cpus: number;
  memory_mb: number;
}

const GUEST_CPUS = [1, 2, 4, 8, 16];
/** MiB per CPU a guest may have: shared 256–2048, performance 2048–8192 (Fly's machine sizes). */
const MEMORY_PER_CPU = { shared: [256, 2048], performance: [2048, 8192] } as const;

/**
 * The guest for `slots` tasks of size `one` side by side, as Fly accepts it: CPUs rounded up to
 * 1, 2, 4, 8 or 16, memory in whole 256 MiB within the CPU count's range. `perSlotMb` is what each
 * task may then use (less than `one.memory_mb` only when the largest guest is too small).
 */
export function guestForSlots(one: GuestSize, slots: number): { guest: GuestSize; perSlotMb: number } {
  const cpus = GUEST_CPUS.find((c) => c >= one.cpus * slots) ?? GUEST_CPUS[GUEST_CPUS.length - 1];
  const [min, max] = MEMORY_PER_CPU[one.cpu_kind];
  const memory = Math.min(max * cpus, Math.max(min * cpus, Math.ceil((one.memory_mb * slots) / 256) * 256));
  return { guest: { cpu_kind: one.cpu_kind, cpus, memory_mb: memory }, perSlotMb: Math.min(one.memory_mb, Math.floor(memory / slots)) };
}

export interface MachineSpec {
  name: string;
  image: string;
  guest: GuestSize;
  env: Record<string, string>;
  metadata: Record<string, string>;
  /** Tried in order; a capacity error moves on to the next one. */
  regions: string[];
}

/** A create token from the app's budget (Fly's create limit), or when the next one will be there. */
export type CreateToken = { ok: true } | { ok: false; retryAt: number };

export interface CreateOptions {
  /** Called before every create POST (first try, retry, next region); without a token nothing is sent. */
  draw?: () => Promise<CreateToken>;
}

/** Which resource of the organisation's quota Fly said it refused; "unknown" when its words did not say. */
export type QuotaResource = "machines" | "vcpus" | "memory_mb" | "unknown";

export type CreateOutcome =
  | { kind: "created"; machineId: string; name: string; region: string; state: string }
  | { kind: "rate_limited"; retryAfterMs: number }
  /** Every region tried had no room. */
  | { kind: "no_capacity"; message: string }
  /** The organisation's quota: everywhere (422 machines limit), or in every region tried (403). */
  | { kind: "quota"; resource: QuotaResource; message: string }
  /** A request Fly calls bad as it is (image, guest, config, token, app): `field` names what to fix. */
  | { kind: "invalid"; status: number; message: string; field: string }
  | { kind: "unknown"; message: string }
  /** Nothing sent: out of subrequests, or out of create tokens until `retryAt`. */
  | { kind: "budget"; retryAt?: number };

/** A token from the app's budget for one request, or when the next one will be there. */
export type ApiToken = CreateToken;

/** What a destroy did; `budget`: not sent, no destroy token until `retryAt`. */
export type DestroyOutcome = "destroyed" | "not_found" | "failed" | { kind: "budget"; retryAt: number };

export interface FlyMachine {
  id: string;
  name: string;
  state: string;
  region: string;
  metadata: Record<string, string>;
  created_at?: string;
  updated_at?: string;
}

/** Why a read (list/get) could not be answered. */
export type FlyApiErrorKind = "budget" | "rate_limited" | "http" | "network" | "timeout" | "malformed";

export class FlyApiError extends Error {
  readonly kind: FlyApiErrorKind;
  readonly status: number | undefined;
  /** 429: Retry-After; budget: how long until the app's budget has a token for this action. */
  readonly retryAfterMs: number | undefined;
  constructor(kind: FlyApiErrorKind, message: string, status?: number, retryAfterMs?: number) {
    super(message);
    this.name = "FlyApiError";
    this.kind = kind;
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }
}

// Wire shapes (loose: Fly adds fields over time; we read only what we use)

const StringMap = z.record(z.string(), z.string());

export const MachineWire = z.looseObject({
  id: z.string().min(1),
  name: z.string().nullish(),
  state: z.string(),
  region: z.string().nullish(),
  // metadata lives in config; config.env is deliberately never read (it holds secrets).
  config: z.looseObject({ metadata: StringMap.nullish() }).nullish(),
  created_at: z.string().nullish(),
  updated_at: z.string().nullish(),
});

export function toFlyMachine(wire: z.infer<typeof MachineWire>): FlyMachine {
  const machine: FlyMachine = {
    id: wire.id,
    name: wire.name ?? "",
    state: wire.state,
    region: wire.region ?? "",
    metadata: wire.config?.metadata ?? {},
  };
  if (wire.created_at) machine.created_at = wire.created_at;
  if (wire.updated_at) machine.updated_at = wire.updated_at;
  return machine;
}

/** Fly's error body ({"error": "...", "status": "..."}), or its text when it is not JSON. */
const ErrorWire = z.looseObject({ error: z.string().optional(), status: z.string().optional() });

export function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export function parseError(text: string): { error?: string; status?: string } {
  const parsed = ErrorWire.safeParse(safeJson(text));
  if (parsed.success) return parsed.data;
  return text.trim() ? { error: text.trim() } : {};
}
