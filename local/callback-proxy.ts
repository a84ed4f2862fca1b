// A pass-through proxy between machines and the orchestrator that delivers a seeded fraction
// of callbacks twice — the duplicate a machine sends when its first answer was lost. Used by
// the fault tests; the duplicate is a byte-for-byte replay through the real HTTP path.
import { seededRandom } from "./fly-emulator/faults.ts";
import { forward, listenLoopback, readForwarded, relay } from "./forward.ts";

export interface CallbackProxyOptions {
  /** Where callbacks really go, e.g. http://127.0.0.1:8787 */
  target: string;
  /** Fraction of callbacks delivered a second time (after the first answer). */
  duplicateRate: number;
  seed?: number;
  /** Delay before the duplicate; default 200 ms. */
  duplicateDelayMs?: number;
}

export interface DuplicateRecord {
  path: string;
  firstStatus: number;
  duplicateStatus: number | null;
  /** The orchestrator's `outcome` for the duplicate ("ignored" when it was recognised). */
  duplicateOutcome: string | null;
}

export interface CallbackProxy {
  url: string;
  /** Callbacks received from machines. */
  received(): number;
  duplicates(): DuplicateRecord[];
  /** Resolves when every duplicate in flight has been delivered. */
  settled(): Promise<void>;
  stop(): Promise<void>;
}

export async function startCallbackProxy(options: CallbackProxyOptions): Promise<CallbackProxy> {
  const target = options.target.replace(/\/+$/, "");
  const random = seededRandom(options.seed ?? 7);
  const duplicates: DuplicateRecord[] = [];
  const inFlight = new Set<Promise<void>>();
  let received = 0;

  const server = await listenLoopback(async (req, res) => {
    const held = await readForwarded(req);
    const isCallback = req.method === "POST" && held.path.startsWith("/callback/");
    if (isCallback) received++;
    const firstStatus = await relay(res, target, held);
    if (firstStatus === null) return;
    const firstOk = firstStatus >= 200 && firstStatus < 300;
    if (!isCallback || !firstOk || random() >= options.duplicateRate) return;
    const record: DuplicateRecord = { path: held.path, firstStatus, duplicateStatus: null, duplicateOutcome: null };
    duplicates.push(record);
    const replay = (async () => {
      await new Promise((r) => setTimeout(r, options.duplicateDelayMs ?? 200));
      try {
        const again = await forward(target, held);
        record.duplicateStatus = again.status;
        const json = (await again.json().catch(() => null)) as { outcome?: unknown } | null;
        record.duplicateOutcome = typeof json?.outcome === "string" ? json.outcome : null;
      } catch {
        record.duplicateStatus = 0;
      }
    })();
    inFlight.add(replay);
    void replay.finally(() => inFlight.delete(replay));
  });
  return {
    url: server.url,
    received: () => received,
    duplicates: () => [...duplicates],
    settled: async () => {
      while (inFlight.size > 0) await Promise.all([...inFlight]);
    },
    stop: async () => {
      await Promise.all([...inFlight]);
      await server.close();
    },
  };
}
