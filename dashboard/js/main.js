// The fanout dashboard: native ES modules, no build step, served by the Worker's `assets`.
// Reads the same HTTP API as the CLI: GET /batches, /status/:id (+ /events when the Worker has
// it, polling every 2 s when not), /status/:id/tasks[/:taskId]; reset and redrive with the admin
// token, which lives in sessionStorage and is only ever sent as an Authorization header.
//   main.js        this: wires the header and the routes
//   router.js      hash routes → pages (each page returns its teardown)
//   api.js         fetch with the admin token, ApiError     tokens.js  the admin token dialog
//   sse.js         the event stream follower                dom.js / format.js / widgets.js  shared pieces
//   list-page.js   #/            the batch list      fleet-page.js  #/fleet  the Fly app's fleet
//   batch-page.js  #/batch/:id   one batch: status, polling or stream, reset and redrive
//     summary.js   its cards and phase table   failures.js  its failures   timeline.js  its machine timeline
import { showBatch } from "./batch-page.js";
import { $ } from "./dom.js";
import { showFleet } from "./fleet-page.js";
import { showList } from "./list-page.js";
import { startRouter } from "./router.js";
import { wireForgetButton } from "./tokens.js";

wireForgetButton();
startRouter($("#view"), [
  { pattern: /^#\/batch\/(.+)$/, show: showBatch },
  { pattern: /^#\/fleet$/, show: showFleet },
  { pattern: /^/, show: showList },
]);
