// A stand-in for fly-worker in emulator tests: logs, optionally runs a while (FAKE_RUN_MS) and
// spawns a grandchild (FAKE_GRANDCHILD=1), POSTs a callback to CALLBACK_URL, exits FAKE_EXIT_CODE.
import { spawn } from "node:child_process";

const env = process.env;
const log = (msg: string) =>
  console.log(JSON.stringify({ msg, machine_id: env.FLY_MACHINE_ID, task_id: env.TASK_ID, region: env.FLY_REGION }));

log("fake machine started");
console.error("fake machine stderr line");
if (env.FAKE_GRANDCHILD === "1") {
  const grandchild = spawn(process.execPath, ["-e", "setTimeout(() => {}, 600000)"], { stdio: "ignore" });
  log(`grandchild ${grandchild.pid}`);
}
await new Promise((resolve) => setTimeout(resolve, Number(env.FAKE_RUN_MS ?? 0)));
if (env.CALLBACK_URL) {
  const response = await fetch(env.CALLBACK_URL, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${env.CALLBACK_TOKEN ?? ""}` },
    body: JSON.stringify({
      task_id: env.TASK_ID,
      machine_id: env.FLY_MACHINE_ID,
      app: env.FLY_APP_NAME,
      region: env.FLY_REGION,
      host_home_visible: env.FAKE_HOST_SECRET !== undefined,
    }),
  });
  log(`callback answered ${response.status}`);
}
log("fake machine exiting");
process.exit(Number(env.FAKE_EXIT_CODE ?? 0));
