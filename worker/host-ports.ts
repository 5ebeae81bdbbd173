/**
 * Host ports: where a runner publishes each service's container. Every
 * service holds a distinct one (a unique index in D1); services created
 * without one get the lowest free port of the configured range.
 */
import { sql } from "drizzle-orm";
import { services } from "../schema/tables";
import { conflict } from "./errors";
import { numberSetting, type Database } from "./router";

/** Inclusive bounds of the automatically assigned ports. */
export type PortRange = { min: number; max: number };

/** The range of automatically assigned host ports, from the Worker's vars. */
export function hostPortRange(env: Env): PortRange {
  const min = numberSetting(env, "HOST_PORT_MIN", 20_000);
  const max = numberSetting(env, "HOST_PORT_MAX", 29_999);
  if (max < min) {
    throw new Error(`HOST_PORT_MAX (${max}) is below HOST_PORT_MIN (${min})`);
  }
  return { min, max };
}

/**
 * The lowest port in `range` no service uses, or null when all are taken.
 * The lowest free port is either the range's start or one past a used port,
 * so only those candidates are probed, each through the unique index.
 */
export async function lowestFreeHostPort(db: Database, range: PortRange) {
  const [row] = await db.all<{ port: number | null }>(sql`
    SELECT MIN(candidate) AS port FROM (
      SELECT ${range.min} AS candidate
      UNION
      SELECT ${services.hostPort} + 1 FROM ${services}
      WHERE ${services.hostPort} BETWEEN ${range.min} AND ${range.max - 1}
    )
    WHERE candidate NOT IN (SELECT ${services.hostPort} FROM ${services})
  `);
  return row?.port ?? null;
}

/** 409 for a port another service already holds. */
export const hostPortConflict = (port: number) =>
  conflict(`Host port ${port} is already used by another service`);

/** 409 for a range with no free port left, saying how to get out of it. */
export const hostPortsExhausted = (range: PortRange) =>
  conflict(
    `Every host port from ${range.min} to ${range.max} is taken; ` +
      "give the service an explicit hostPort or widen HOST_PORT_MIN/HOST_PORT_MAX",
  );
