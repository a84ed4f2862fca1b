// `fanout doctor`: what the orchestrator says of itself (deep, with the admin token), one
// sentence per problem, plus what this CLI itself needs to submit.
import { parseArgs } from "node:util";
import { ApiError, type HealthReport } from "../api.ts";
import { context } from "./context.ts";
import { EXIT, printJson } from "./output.ts";

export async function doctor(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: "boolean" } } });
  const { api, local, env } = context();
  const lines: string[] = [];
  const problems: string[] = [];
  // No answer at all is exit 4 (main.ts): UnreachableError.
  const shallow = await api.healthReport(false);
  let report: HealthReport = shallow;
  const hasToken = env.ADMIN_TOKEN !== undefined || local !== null;
  if (!shallow.checks.some((c) => c.name === "config" && !c.ok)) {
    if (!hasToken) {
      problems.push("ADMIN_TOKEN is not set, so the Fly API, storage and callback URL were not checked: set it to the orchestrator's ADMIN_TOKEN secret.");
    } else {
      try {
        report = await api.healthReport(true);
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) {
          problems.push(`the orchestrator at ${api.url} refused ADMIN_TOKEN: set it to the value you stored with \`npx wrangler secret put ADMIN_TOKEN\`.`);
        } else throw error;
      }
    }
  }
  // What this CLI itself needs to submit to a deployed orchestrator.
  if (!local && env.R2_ENDPOINT === undefined) {
    problems.push("R2_ENDPOINT is not set here, so `submit` cannot upload: set R2_ENDPOINT=https://<account_id>.r2.cloudflarestorage.com with R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY and R2_BUCKET.");
  }
  for (const c of report.checks) {
    const mark = c.ok ? (c.severity === "warning" ? "!" : "✓") : "✗";
    lines.push(`${mark} ${c.name}${c.problem ? `: ${c.problem}${c.fix ? ` — fix: ${c.fix}` : ""}` : ""}`);
  }
  for (const p of problems) lines.push(`✗ ${p}`);
  const failed = report.checks.some((c) => !c.ok) || problems.length > 0;
  if (values.json) {
    printJson({ orchestrator_url: api.url, ok: !failed, deep: report.deep, checks: report.checks, problems });
  } else {
    console.log(`fanout doctor: ${api.url}${local ? " (the local stack)" : ""}${report.deep ? "" : " — configuration only"}`);
    for (const line of lines) console.log(`  ${line}`);
    console.log(failed ? "Some checks failed: fix the ✗ lines above, deploy again if you changed the Worker, and re-run doctor." : "Everything checked is in order.");
  }
  return failed ? EXIT.failed : EXIT.ok;
}
