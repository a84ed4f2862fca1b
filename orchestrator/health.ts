// GET /health: is this orchestrator configured to work, and (with ?deep=1 and the admin token)
// can it reach what it needs — the Fly Machines API, its storage, and itself at CALLBACK_BASE_URL.
// Every problem names the setting and how to fix it; no check ever echoes a configured value.
import { AwsClient } from "aws4fetch";
import { z } from "zod";
import { bearerToken, timingSafeEqualText } from "../shared/token.ts";
import { ConfigError, loadConfig, ratesOf, type Config } from "./config.ts";
import { FlyApiError } from "./fly/api.ts";
import { FlyMachines } from "./fly/client.ts";

export interface Check {
  name: string;
  ok: boolean;
  /** "warning": works, but likely not what was meant; "error": batches will fail. */
  severity?: "error" | "warning";
  problem?: string;
  fix?: string;
}

export interface HealthReport {
  ok: boolean;
  service: "fanout";
  deep: boolean;
  /**
   * Whether status, events, tasks and the batch index need a token: `token` (READ_TOKEN is set:
   * send it, or the admin token, as `Authorization: Bearer`), `open`, or null when the configuration
   * cannot be read. The dashboard asks for the token when it says `token`.
   */
  reads: "open" | "token" | null;
  checks: Check[];
}

const LOOPBACK = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/;
const PLACEHOLDER = /(^|\.)example\.(com|org|net|workers\.dev)$|(^|\.)example$/;
const DEEP_TIMEOUT_MS = 8000;

const fail = (name: string, problem: string, fix: string, severity: "error" | "warning" = "error"): Check => ({ name, ok: severity === "warning", severity, problem, fix });

/** The configuration checks: cheap, no network, safe to answer without a token. */
export function configChecks(env: Env): { config: Config | null; checks: Check[] } {
  let config: Config;
  try {
    config = loadConfig(env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return {
      config: null,
      checks: [fail("config", error.message, "set each named var in wrangler.jsonc (or its [env]) and each secret with `npx wrangler secret put NAME`, then deploy again")],
    };
  }
  const checks: Check[] = [{ name: "config", ok: true }];

  const callback = new URL(config.CALLBACK_BASE_URL);
  if (PLACEHOLDER.test(callback.hostname)) {
    checks.push(fail("callback_base_url", "CALLBACK_BASE_URL is still the placeholder host from wrangler.jsonc: machines could never call back", "deploy once, then set CALLBACK_BASE_URL to the URL `wrangler deploy` printed (https://<name>.<subdomain>.workers.dev) and deploy again"));
  } else if (callback.protocol !== "https:" && !LOOPBACK.test(callback.hostname)) {
    checks.push(fail("callback_base_url", "CALLBACK_BASE_URL is plain http on a non-loopback host: callback tokens would travel unencrypted", "use the https:// URL of this Worker", "warning"));
  } else if (callback.pathname !== "/" || callback.search) {
    checks.push(fail("callback_base_url", "CALLBACK_BASE_URL has a path or query: machines append /callback/... to it", "set it to the Worker's origin only, e.g. https://<name>.<subdomain>.workers.dev", "warning"));
  } else {
    checks.push({ name: "callback_base_url", ok: true });
  }

  if (/:latest$/.test(config.FLY_IMAGE) || !/[:@]/.test(config.FLY_IMAGE.split("/").pop() ?? "")) {
    checks.push(fail("fly_image", "FLY_IMAGE names no tag or `:latest`, but `fly deploy --build-only --push --image-label <label>` pushes only the label you give it", "push with `--image-label v1` (or the next label) and set FLY_IMAGE to registry.fly.io/<app>:v1", "warning"));
  } else if (!config.FLY_IMAGE.includes(`/${config.FLY_APP_NAME}:`) && !config.FLY_IMAGE.includes(`/${config.FLY_APP_NAME}@`)) {
    checks.push(fail("fly_image", "FLY_IMAGE is not an image of FLY_APP_NAME: a deploy token for that app cannot pull another app's image", "set FLY_IMAGE to registry.fly.io/<FLY_APP_NAME>:<label>; the app in fly.toml, FLY_APP_NAME, FLY_IMAGE and the token's -a change together", "warning"));
  } else {
    checks.push({ name: "fly_image", ok: true });
  }

  // `fly tokens create` prints "FlyV1 fm2_…"; the prefix is part of what the API expects.
  if (/^fm2_/.test(config.FLY_API_TOKEN.trim())) {
    checks.push(fail("fly_api_token", "FLY_API_TOKEN looks like a Fly macaroon without the `FlyV1 ` prefix flyctl prints", "set the secret to the whole line `fly tokens create deploy` printed, `FlyV1 fm2_…` included", "warning"));
  } else if (/^Bearer\s/i.test(config.FLY_API_TOKEN.trim())) {
    checks.push(fail("fly_api_token", "FLY_API_TOKEN starts with `Bearer `: the orchestrator adds that itself", "set the secret to the token only (`FlyV1 fm2_…`)"));
  } else {
    checks.push({ name: "fly_api_token", ok: true });
  }

  if (!config.READ_TOKEN) {
    checks.push(fail("read_token", "READ_TOKEN is not set: anyone who can reach this Worker reads every batch's status, events, tasks (key names, errors) and the batch index", "generate one with `openssl rand -base64 32` and set it with `npx wrangler secret put READ_TOKEN` (locally: `READ_TOKEN=… npm start`)", "warning"));
  } else {
    checks.push({ name: "read_token", ok: true });
  }
  for (const name of ["CALLBACK_SECRET", "ADMIN_TOKEN"] as const) {
    if (config[name].length < 32) {
      checks.push(fail(name.toLowerCase(), `${name} is shorter than 32 characters: too easy to guess`, `generate one with \`openssl rand -base64 32\` and set it with \`npx wrangler secret put ${name}\``, "warning"));
    }
  }
  return { config, checks };
}

/** True when the request carries the admin token (compared in constant time). */
export function isAdmin(req: Request, config: Config | null): boolean {
  if (!config) return false;
  const given = bearerToken(req.headers.get("authorization"));
  return given !== null && timingSafeEqualText(given, config.ADMIN_TOKEN);
}

export interface DeepOptions {
  fetch?: typeof fetch;
  /** Origin the health request itself arrived at: when it is CALLBACK_BASE_URL's, that URL demonstrably reaches us. */
  requestOrigin?: string;
}

/** The checks that leave the Worker: a Fly list call, a storage HEAD, CALLBACK_BASE_URL/health. */
export async function deepChecks(env: Env, config: Config, options: DeepOptions = {}): Promise<Check[]> {
  const doFetch = options.fetch ?? fetch;
  return await Promise.all([flyCheck(config, env, doFetch), ...storageChecks(env, config, doFetch), callbackCheck(config, doFetch, options.requestOrigin)]);
}

async function flyCheck(config: Config, env: Env, doFetch: typeof fetch): Promise<Check> {
  // The list draws from the app's list budget like every other Fly call (fly/rates.ts).
  const budget = env.FLY_BUDGET.getByName(config.FLY_APP_NAME);
  const list = ratesOf(config).list;
  const fly = new FlyMachines({
    apiHostname: config.FLY_API_HOSTNAME,
    apiToken: config.FLY_API_TOKEN,
    appName: config.FLY_APP_NAME,
    fetch: (input, init) => doFetch(input, init), // unbound: workerd's fetch refuses another `this`
    requestTimeoutMs: DEEP_TIMEOUT_MS,
    maxAttempts: 1,
    log: () => undefined,
    draw: (action) => budget.draw(action, list.perSecond, list.burst),
    blocked: (action, until) => budget.block(action, until),
  });
  try {
    // A metadata filter no machine has: the call proves the token and app, and returns nothing.
    await fly.listMachines({ fanout_health: "probe" });
    return { name: "fly_api", ok: true };
  } catch (error) {
    if (!(error instanceof FlyApiError)) throw error;
    if (error.status === 401 || error.status === 403) {
      return fail("fly_api", `the Fly Machines API refused FLY_API_TOKEN for FLY_APP_NAME (HTTP ${error.status})`, "create a token with `fly tokens create deploy -a <FLY_APP_NAME>` and set the whole printed line with `npx wrangler secret put FLY_API_TOKEN`");
    }
    if (error.status === 404) {
      return fail("fly_api", "the Fly Machines API has no app named by FLY_APP_NAME (HTTP 404)", "create it with `fly apps create <name> --org <org>`, or set FLY_APP_NAME to the app in fly.toml");
    }
    if (error.kind === "rate_limited") return fail("fly_api", "the Fly Machines API rate-limited the check (429)", "try again in a few seconds", "warning");
    if (error.kind === "budget") return fail("fly_api", "the app's Fly API list budget is spent by running batches", "try again in a few seconds", "warning");
    return fail("fly_api", `cannot list machines at FLY_API_HOSTNAME (${error.kind}${error.status ? ` ${error.status}` : ""})`, "check FLY_API_HOSTNAME (https://api.machines.dev in production) and Fly's status page");
  }
}

function storageChecks(env: Env, config: Config, doFetch: typeof fetch): Promise<Check>[] {
  const out: Promise<Check>[] = [];
  if (!config.R2_ENDPOINT) {
    // The orchestrator reads manifests through the binding.
    out.push(
      (async (): Promise<Check> => {
        try {
          await env.BUCKET.head("fanout-health-probe");
          return { name: "storage_binding", ok: true };
        } catch {
          return fail("storage_binding", "the R2 binding BUCKET cannot be read", "check r2_buckets in wrangler.jsonc names a bucket this account has (`npx wrangler r2 bucket list`)");
        }
      })(),
    );
  }
  // Machines use the S3 API with R2_ACCESS_KEY_ID/R2_SECRET_ACCESS_KEY: HEAD the bucket with them.
  const endpoint = config.R2_ENDPOINT ?? `https://${config.R2_ACCOUNT_ID}.r2.cloudflarestorage.com`;
  out.push(
    (async (): Promise<Check> => {
      const aws = new AwsClient({ accessKeyId: config.R2_ACCESS_KEY_ID, secretAccessKey: config.R2_SECRET_ACCESS_KEY, service: "s3", region: "auto" });
      const url = `${endpoint.replace(/\/+$/, "")}/${encodeURIComponent(config.R2_BUCKET)}`;
      let res: Response;
      try {
        const signed = await aws.sign(url, { method: "HEAD" });
        res = await doFetch(signed, { signal: AbortSignal.timeout(DEEP_TIMEOUT_MS) });
        await res.body?.cancel();
      } catch {
        return fail("storage_s3", `cannot reach the S3 endpoint machines use (${config.R2_ENDPOINT ? "R2_ENDPOINT" : "from R2_ACCOUNT_ID"})`, config.R2_ENDPOINT ? "check R2_ENDPOINT" : "set R2_ACCOUNT_ID to the account id shown in the Cloudflare dashboard (R2 overview)");
      }
      if (res.ok) return { name: "storage_s3", ok: true };
      if (res.status === 401 || res.status === 403) {
        return fail("storage_s3", `the S3 API refused R2_ACCESS_KEY_ID/R2_SECRET_ACCESS_KEY for R2_BUCKET (HTTP ${res.status})`, "create an R2 API token with Object Read & Write on that bucket only, and set both keys with `npx wrangler secret put`");
      }
      if (res.status === 404) return fail("storage_s3", "the bucket named by R2_BUCKET does not exist at that endpoint (HTTP 404)", "create it (`npx wrangler r2 bucket create <name>`) or fix R2_BUCKET / R2_ACCOUNT_ID");
      return fail("storage_s3", `HEAD of R2_BUCKET answered HTTP ${res.status}`, "check R2_ACCOUNT_ID, R2_BUCKET and Cloudflare's status page");
    })(),
  );
  return out;
}

const ShallowHealth = z.looseObject({ service: z.literal("fanout") });

async function callbackCheck(config: Config, doFetch: typeof fetch, requestOrigin?: string): Promise<Check> {
  // This very request came in through CALLBACK_BASE_URL: it reaches us (and Cloudflare refuses a
  // Worker fetching its own workers.dev URL, so a self-fetch could not show it anyway).
  if (requestOrigin && new URL(config.CALLBACK_BASE_URL).origin === requestOrigin) return { name: "callback_reachable", ok: true };
  const url = `${config.CALLBACK_BASE_URL.replace(/\/+$/, "")}/health`;
  try {
    const res = await doFetch(url, { signal: AbortSignal.timeout(DEEP_TIMEOUT_MS) });
    const body: unknown = await res.json().catch(() => null);
    if (ShallowHealth.safeParse(body).success) return { name: "callback_reachable", ok: true };
    return fail("callback_reachable", `CALLBACK_BASE_URL/health answered HTTP ${res.status}, not this orchestrator (or Cloudflare refused the Worker fetching itself)`, "set CALLBACK_BASE_URL to the URL this Worker is deployed at, and run doctor with ORCHESTRATOR_URL set to that same URL", "warning");
  } catch {
    return fail("callback_reachable", "CALLBACK_BASE_URL/health could not be reached", "set CALLBACK_BASE_URL to the URL `wrangler deploy` printed for this Worker");
  }
}

/** The whole answer of GET /health[?deep=1]: 200 when every check is ok, else 503. */
export async function health(req: Request, env: Env, options: DeepOptions = {}): Promise<Response> {
  const deep = ["1", "true"].includes(new URL(req.url).searchParams.get("deep") ?? "");
  const { config, checks } = configChecks(env);
  if (deep) {
    if (!config) {
      // Without a valid config there is no admin token to check; the config problem is the answer.
    } else if (!isAdmin(req, config)) {
      return Response.json({ error: "admin token missing or invalid (GET /health?deep=1 needs Authorization: Bearer $ADMIN_TOKEN)" }, { status: 401 });
    } else {
      checks.push(...(await deepChecks(env, config, { requestOrigin: new URL(req.url).origin, ...options })));
    }
  }
  const reads = config === null ? null : config.READ_TOKEN ? "token" : "open";
  const report: HealthReport = { ok: checks.every((c) => c.ok), service: "fanout", deep: deep && config !== null, reads, checks };
  return Response.json(report, { status: report.ok ? 200 : 503 });
}
