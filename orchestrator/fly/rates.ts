// Fly's rate limits per action (https://fly.io/docs/machines/api/working-with-machines-api/#rate-limits):
// 1 request/s with a short-term burst of 3 for every action, except Get Machine: 5/s, burst 10.
// Create and list are scoped by the app; get and destroy by the machine, but the orchestrator
// budgets them per app (every batch of the app draws from one bucket per action), which can only
// be stricter. The create rate is its own vars (FLY_CREATE_RATE_PER_SECOND, FLY_CREATE_BURST);
// FLY_API_RATES overrides the others (`list=1/3,get=5/10,destroy=1/3`), for tests and emulators.

/** The Fly API calls the orchestrator makes, each with its own budget. */
export const FLY_ACTIONS = ["create", "list", "get", "destroy"] as const;
export type FlyAction = (typeof FLY_ACTIONS)[number];

export interface Rate {
  perSecond: number;
  burst: number;
}

export type Rates = Record<FlyAction, Rate>;

/** The documented limits of the actions other than create. */
export const DOCUMENTED_RATES: Omit<Rates, "create"> = {
  list: { perSecond: 1, burst: 3 },
  get: { perSecond: 5, burst: 10 },
  destroy: { perSecond: 1, burst: 3 },
};

/** Parses FLY_API_RATES (`list=1/3,get=5/10`; any subset; empty: the documented ones); throws naming the bad part. */
export function parseApiRates(text: string): Omit<Rates, "create"> {
  const rates = { ...DOCUMENTED_RATES };
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const match = /^(list|get|destroy)=([0-9]*\.?[0-9]+)\/([0-9]+)$/.exec(part);
    const perSecond = Number(match?.[2]);
    const burst = Number(match?.[3]);
    if (!match || !(perSecond > 0) || !(burst >= 1)) {
      throw new Error(`"${part}" must be ACTION=RATE/BURST with ACTION list, get or destroy, RATE > 0 per second and BURST >= 1 (e.g. list=1/3)`);
    }
    rates[match[1] as Exclude<FlyAction, "create">] = { perSecond, burst };
  }
  return rates;
}
