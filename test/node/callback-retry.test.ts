// The fly-worker's callback delivery against a real HTTP server on loopback: a 503 whose
// Retry-After is an HTTP date (RFC 9110) is waited out, not retried at backoff speed.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { sendCallback } from "../../fly-worker/callback.ts";
import type { CallbackBody } from "../../shared/contracts.ts";

let server: Server | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

/** Answers each POST with the next scripted reply (a status and headers); 200 once they run out. */
async function scriptedServer(script: (() => { status: number; headers?: Record<string, string> })[]): Promise<{ url: string; hits: number[] }> {
  const hits: number[] = [];
  server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      hits.push(Date.now());
      const next = script.shift()?.() ?? { status: 200 };
      res.writeHead(next.status, { "content-type": "application/json", ...next.headers });
      res.end(JSON.stringify({ ok: next.status === 200 }));
    });
  });
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server!.address() as AddressInfo).port}/callback/b-1/tiff-000001`, hits };
}

const body: CallbackBody = { task_id: "tiff-000001", batch_id: "b-1", status: "error", error: "simulated" };

describe("fly-worker callback retry timing", () => {
  it("honours a 503 with an HTTP-date Retry-After", async () => {
    let askedUntil = 0;
    const { url, hits } = await scriptedServer([
      () => {
        // Whole seconds only in an HTTP date: two seconds ahead is at least one second away.
        askedUntil = (Math.floor(Date.now() / 1000) + 2) * 1000;
        return { status: 503, headers: { "retry-after": new Date(askedUntil).toUTCString() } };
      },
    ]);
    const outcome = await sendCallback(url, "t0ken", body, { maxAttempts: 3, backoffMs: 10, timeoutMs: 5000 });
    expect(outcome).toMatchObject({ delivered: true, attempts: 2 });
    expect(hits).toHaveLength(2);
    // Backoff alone would post again after ~10 ms.
    expect(hits[1], `second POST ${hits[1] - hits[0]} ms after the 503`).toBeGreaterThanOrEqual(askedUntil - 50);
  });

  it("honours delay-seconds, and backs off quickly when no Retry-After is sent", async () => {
    const { url, hits } = await scriptedServer([() => ({ status: 503, headers: { "retry-after": "1" } }), () => ({ status: 502 })]);
    const outcome = await sendCallback(url, "t0ken", body, { maxAttempts: 3, backoffMs: 10, timeoutMs: 5000 });
    expect(outcome).toMatchObject({ delivered: true, attempts: 3 });
    expect(hits[1] - hits[0]).toBeGreaterThanOrEqual(950);
    expect(hits[2] - hits[1], "502 without Retry-After: backoff of ~10-20 ms").toBeLessThan(900);
  });
});
