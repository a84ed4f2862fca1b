export { BatchDO } from "./batch-do.ts";
export default {
  async fetch(): Promise<Response> {
    return Response.json({ ok: true });
  },
} satisfies ExportedHandler;
