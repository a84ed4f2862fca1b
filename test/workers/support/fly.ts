// Installs the Fly Machines API emulator as the target of every fetch to http://fly.test in a
// workerd test (the orchestrator's FLY_API_HOSTNAME there); other URLs pass through untouched.
import { vi } from "vitest";
import { FlyEmulator, emulatorFetch, type FlyEmulatorOptions } from "../../../local/fly-emulator/api.ts";

export interface FakeFly {
  core: FlyEmulator;
  /** Every API request the emulator answered (env values redacted), oldest first. */
  requests: FlyEmulator["requests"];
  /** The routed fetch, to hand to a FlyMachines client directly. */
  fetch: (input: Request | string | URL, init?: RequestInit) => Promise<Response>;
  /** Puts globalThis.fetch back and stops the emulator (kills simulated machines, answers waits). */
  restore(): Promise<void>;
}

export function installFakeFly(options: FlyEmulatorOptions & { host?: string } = {}): FakeFly {
  const { host = "fly.test", ...emulatorOptions } = options;
  const core = new FlyEmulator(emulatorOptions);
  const routed = emulatorFetch(core);
  const original = globalThis.fetch;
  const spy = vi.spyOn(globalThis, "fetch").mockImplementation((input, init) => {
    const request = new Request(input, init);
    if (new URL(request.url).host === host) return routed(request);
    return original(request);
  });
  return {
    core,
    requests: core.requests,
    fetch: routed,
    async restore() {
      spy.mockRestore();
      await core.stop();
    },
  };
}
