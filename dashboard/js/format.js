// Numbers, durations, timestamps and the batch status vocabulary, as every page shows them.

/** A batch in one of these ends here: nothing more to follow. */
export const TERMINAL = new Set(["DONE", "ERROR", "FAILED"]);

export const n = (x) => Number(x).toLocaleString("en-US");

export function duration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return "—";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** An ISO timestamp to the second, in UTC: "2025-01-02 03:04:05Z". */
export const time = (iso) => (iso ? new Date(iso).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "");

/** The badge colour of a batch status. */
export const statusClass = (s) => (s === "DONE" ? "ok" : s === "ERROR" || s === "FAILED" ? "bad" : "run");
