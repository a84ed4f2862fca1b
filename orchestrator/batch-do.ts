import { DurableObject } from "cloudflare:workers";
export class BatchDO extends DurableObject {
  ping(): string { return "pong"; }
}
