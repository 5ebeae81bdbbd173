/**
 * Small pieces of SQL shared by the resource routes: the listing order, and
 * recognising the constraint failures D1 reports.
 */
import { asc, sql, type SQL } from "drizzle-orm";
import type { SQLiteColumn } from "drizzle-orm/sqlite-core";

/**
 * Creation order. `createdAt` has millisecond resolution, so rows made in
 * the same millisecond fall back to SQLite's rowid, which grows with every
 * insert. Only for queries over a single table, where rowid is unambiguous.
 */
export const oldestFirst = (createdAt: SQLiteColumn): SQL[] => [
  asc(createdAt),
  sql`rowid`,
];

/**
 * True when `error`, or any error it wraps, is SQLite refusing a row for a
 * `kind` constraint on `table.column` (on any column if omitted). drizzle
 * wraps the driver's error, so the original sits in `cause`.
 */
export function isConstraintViolation(
  error: unknown,
  kind: "UNIQUE" | "NOT NULL",
  column?: string,
): boolean {
  const prefix = `${kind} constraint failed: `;
  for (let e: unknown = error; e instanceof Error; e = e.cause) {
    const at = e.message.indexOf(prefix);
    if (at < 0) continue;
    const failed = e.message.slice(at + prefix.length).match(/^[\w.]+/)?.[0];
    if (!column || failed === column) return true;
  }
  return false;
}
