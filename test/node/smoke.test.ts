import { it, expect } from "vitest";
it("node smoke", () => { expect(process.versions.node.startsWith("22")).toBe(true); });
