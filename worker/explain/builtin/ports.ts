/**
 * Which port an app says it listens on. Apps announce it in many ways
 * ("listening on 8080", "port: 8080", "http://0.0.0.0:8080", ":8080"), and
 * also mention ports that are not their own (a database's), so only lines
 * that sound like a server starting count.
 */
import type { FailureContext } from "../context";
import { buildSteps } from "./log";

export type AnnouncedPort = { port: number; line: string };

const SERVER_WORDS =
  /\bport\b|listen|serv(?:er|ing|e)\b|start(?:ed|ing)?\b|running|bound|ready|available|https?:\/\//i;
const OTHER_SERVICE =
  /connect(?:ing|ed|ion)?\s+to|database|postgres|mysql|redis|mongo|amqp|rabbit|kafka|smtp|proxy(?:ing)?\s+to|upstream|metrics|inspector|debugger/i;
/** Each captures a port; a number followed by ":" or "-" is a time or a date. */
const PORT_PATTERNS = [
  /\bport\s*[:=#]?\s*(\d{1,5})\b/i,
  /(?:localhost|0\.0\.0\.0|127\.0\.0\.1|\[::1?\]|::):(\d{1,5})\b/i,
  /https?:\/\/[\w.-]+:(\d{1,5})\b/i,
  /\b(?:on|at)\s+:?(\d{2,5})(?![\d:.-])/i,
  /(?:^|\s):(\d{2,5})\b/,
];

/** The ports `lines` announce as the app's own, in order of appearance. */
export function announcedPorts(lines: string[]): AnnouncedPort[] {
  const found: AnnouncedPort[] = [];
  for (const line of lines) {
    if (!SERVER_WORDS.test(line) || OTHER_SERVICE.test(line)) continue;
    for (const pattern of PORT_PATTERNS) {
      const port = Number(line.match(pattern)?.[1]);
      if (Number.isInteger(port) && port >= 1 && port <= 65535) {
        found.push({ port, line });
        break;
      }
    }
  }
  return found;
}

const ALL_INTERFACES = /0\.0\.0\.0|\[::\]|all interfaces/i;

/**
 * The line where the app announces `port` on a loopback address only, or
 * null. Such an app cannot be reached from outside its container.
 */
export function loopbackOnly(lines: string[], port: number): string | null {
  if (lines.some((line) => ALL_INTERFACES.test(line))) return null;
  const loopback = new RegExp(
    String.raw`(?:127\.0\.0\.1|localhost|\[::1\]):${port}\b`,
    "i",
  );
  return lines.find((line) => loopback.test(line) && SERVER_WORDS.test(line)) ?? null;
}

/** The ports the Dockerfile's EXPOSE steps declare, as the build log shows them. */
export function exposedPorts(context: FailureContext): number[] {
  return buildSteps(context)
    .filter((step) => /^EXPOSE\s/i.test(step.instruction))
    .flatMap((step) => [
      ...step.instruction.matchAll(/\b(\d{1,5})(?:\/(?:tcp|udp))?\b/gi),
    ])
    .map((match) => Number(match[1]))
    .filter((port) => port >= 1 && port <= 65535);
}
