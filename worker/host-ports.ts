/**
 * Host ports: where a runner publishes each service's container. Every
 * service holds a distinct one (a unique index in D1); services created
 * without one get the lowest free port of the configured range.
 */
import { sql, type SQL } from "drizzle-orm";
import { services } from "../schema/tables";
import { conflict } from "./errors";
import { numberSetting } from "./router";

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
 * SQL for the lowest port in `range` that no service uses, NULL when all are
 * taken. It is meant to be the inserted value itself: finding and claiming
 * the port is then one statement, which D1 runs without interleaving another
 * write, so concurrent creations can never pick the same port.
 *
 * The lowest free port is either the range's start or one past a used port,
 * so only those candidates are probed, each through the unique index.
 */
export function lowestFreeHostPort(range: PortRange): SQL {
  return sql`(
    SELECT MIN(candidate) FROM (
      SELECT ${range.min} AS candidate
      UNION
      SELECT ${services.hostPort} + 1 FROM ${services}
      WHERE ${services.hostPort} BETWEEN ${range.min} AND ${range.max - 1}
    )
    WHERE candidate NOT IN (SELECT ${services.hostPort} FROM ${services})
  )`;
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
