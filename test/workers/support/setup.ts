// Before every workerd test file: the batch index's schema, and the SQLite limit guard on every
// store (sql-limits.ts). A test that leaves a refusal unclaimed fails, naming it.
import { afterEach } from "vitest";
import "./d1-setup.ts";
import { installSqlLimits, takeSqlLimitViolations } from "./sql-limits.ts";

installSqlLimits();

afterEach(() => {
  const left = takeSqlLimitViolations();
  if (left.length > 0) {
    throw new Error(`statements past the Durable Object SQLite limits: ${left.map((v) => `${v.limit}: ${v.detail} in: ${v.query}`).join("; ")}`);
  }
});
