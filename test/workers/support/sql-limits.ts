// The workerd tests' stand-in for production's SQLite limits. Local workerd takes a 16 MB bound
// value without a word; a deployed Durable Object refuses anything past its documented limits
// (developers.cloudflare.com/durable-objects/platform/limits/, "SQL storage limits": 2 MB per
// string, BLOB or row, 100 KB per statement, 100 bound parameters). Every store the tests make
// runs its statements through this guard, which refuses (throws) past the store's own ceilings
// (a bound value over MAX_BOUND_VALUE_BYTES = 1 MB, a statement over 100 KB, more than 100
// parameters) and records each refusal: the engine catches step errors and retries them, so a
// refusal could otherwise pass unseen. The setup file fails any test that left one unclaimed.
import { MAX_BOUND_PARAMETERS, MAX_BOUND_VALUE_BYTES, MAX_STATEMENT_BYTES, setSqlWrapper } from "../../../orchestrator/store/sql.ts";

export interface SqlLimitViolation {
  limit: "bound value" | "statement" | "parameters";
  detail: string;
  query: string;
}

const violations: SqlLimitViolation[] = [];
/** The largest of each measure any statement of this test file had (for the limits' worst cases). */
export const sqlMaxima = { valueBytes: 0, statementBytes: 0, parameters: 0 };
const encoder = new TextEncoder();

/** UTF-8 bytes of `s`, encoding only when the cheap bounds cannot decide. */
function utf8Bytes(s: string, over: number): number {
  if (s.length * 3 <= over) return s.length; // cannot be over
  if (s.length > over) return s.length; // over whatever the encoding
  return encoder.encode(s).byteLength;
}

export function checkStatement(query: string, params: unknown[]): SqlLimitViolation | null {
  const short = query.replace(/\s+/g, " ").slice(0, 120);
  const queryBytes = utf8Bytes(query, MAX_STATEMENT_BYTES);
  if (queryBytes > MAX_STATEMENT_BYTES) return { limit: "statement", detail: `${queryBytes} bytes of SQL (limit ${MAX_STATEMENT_BYTES})`, query: short };
  if (params.length > MAX_BOUND_PARAMETERS) {
    return { limit: "parameters", detail: `${params.length} bound parameters (limit ${MAX_BOUND_PARAMETERS})`, query: short };
  }
  for (const [i, p] of params.entries()) {
    const bytes = typeof p === "string" ? utf8Bytes(p, MAX_BOUND_VALUE_BYTES) : p instanceof ArrayBuffer || ArrayBuffer.isView(p) ? p.byteLength : 0;
    if (bytes > MAX_BOUND_VALUE_BYTES) {
      return { limit: "bound value", detail: `parameter ${i + 1} is ${bytes} bytes (limit ${MAX_BOUND_VALUE_BYTES})`, query: short };
    }
  }
  return null;
}

/** Records the sizes of a statement the store ran (the worst cases reported beside the limits; a refused one is not run). */
function measure(query: string, params: unknown[]): void {
  sqlMaxima.statementBytes = Math.max(sqlMaxima.statementBytes, encoder.encode(query).byteLength);
  sqlMaxima.parameters = Math.max(sqlMaxima.parameters, params.length);
  for (const p of params) {
    const bytes = typeof p === "string" ? encoder.encode(p).byteLength : p instanceof ArrayBuffer || ArrayBuffer.isView(p) ? p.byteLength : 0;
    sqlMaxima.valueBytes = Math.max(sqlMaxima.valueBytes, bytes);
  }
}

/** The SQL API with every exec checked first. */
export function guardSql(sql: SqlStorage): SqlStorage {
  return new Proxy(sql, {
    get(target, prop) {
      if (prop === "exec") {
        return (query: string, ...params: unknown[]) => {
          const v = checkStatement(query, params);
          if (v) {
            violations.push(v);
            console.error(`[sql-limits] refused: ${v.limit}: ${v.detail} in: ${v.query}`);
            throw new Error(`SQLite limit exceeded (${v.limit}: ${v.detail}); production refuses this statement`);
          }
          measure(query, params);
          return target.exec(query, ...params);
        };
      }
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

export function installSqlLimits(): void {
  setSqlWrapper(guardSql);
}

/** The refusals since the last call, claimed: a test that expects some takes them here. */
export function takeSqlLimitViolations(): SqlLimitViolation[] {
  return violations.splice(0, violations.length);
}
