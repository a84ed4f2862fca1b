// Number and money formatting shared by the report's sections.
import type { Guest } from "../../shared/fly-model.ts";

export const f = (x: number, digits = 1) => x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
export const mb = (bytes: number) => f(bytes / 1024 / 1024, 1);
export const n0 = (x: number) => Math.round(x).toLocaleString("en-US");
export const usd = (x: number, digits = 2) => `$${x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })}`;
export const guestText = (g: Guest) => `${g.cpu_kind === "shared" ? "shared-cpu" : "performance"}-${g.cpus}x ${n0(g.memory_mb)} MB`;
