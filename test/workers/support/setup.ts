// Before every workerd test file: the batch index's schema, and the SQLite limit guard on every
// store (sql-limits.ts). A test that leaves a refusal unclaimed fails, naming it.
import { afterAll, afterEach } from "vitest";
import "./d1-setup.ts";
import { installSqlLimits, sqlMaxima, takeSqlLimitViolations } from "./sql-limits.ts";

installSqlLimits();

afterEach(() => {
  const left = takeSqlLimitViolations();
  if (left.length > 0) {
    throw new Error(`statements past the Durable Object SQLite limits: ${left.map((v) => `${v.limit}: ${v.detail} in: ${v.query}`).join("; ")}`);
  }
});

// The worst each measure reached in this file (`--silent=false` shows it): the figures beside the limits.
afterAll(() => {
  console.log(`[sql-limits] maxima: ${JSON.stringify(sqlMaxima)}`);
});
