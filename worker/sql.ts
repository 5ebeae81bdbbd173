/**
 * Small pieces of SQL shared by the resource routes: the listing order, and
 * recognising D1 constraint failures.
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
 * True when `error`, or any error it wraps, is SQLite refusing a duplicate
 * for the `table.column` unique constraint (any unique one if omitted).
 * drizzle wraps the driver's error, so the original sits in `cause`.
 */
export function isUniqueViolation(error: unknown, column?: string): boolean {
  for (let e: unknown = error; e instanceof Error; e = e.cause) {
    const match = e.message.match(/UNIQUE constraint failed: ([\w.]+)/);
    if (match && (!column || match[1] === column)) return true;
  }
  return false;
}
