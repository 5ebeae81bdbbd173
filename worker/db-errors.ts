/**
 * Recognising constraint failures from D1. drizzle wraps the driver's error
 * (its message names the failed query), so the original sits in `cause`.
 */

/**
 * True when `error`, or any error it wraps, is SQLite refusing a duplicate
 * for the `table.column` unique constraint (any unique one if omitted).
 */
export function isUniqueViolation(error: unknown, column?: string): boolean {
  for (let e: unknown = error; e instanceof Error; e = e.cause) {
    const match = e.message.match(/UNIQUE constraint failed: ([\w.]+)/);
    if (match && (!column || match[1] === column)) return true;
  }
  return false;
}
