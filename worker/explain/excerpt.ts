/**
 * The part of a long log worth showing to a model: its tail, where a
 * deployment fails, plus the earlier lines that look like errors, since a
 * build often fails long before its last words.
 */
import type { LogEntry } from "./context";

/** How many of the log's last lines are always shown. */
export const TAIL_LINES = 150;

/** How many earlier error-looking lines are shown at most (the latest ones). */
export const EARLIER_LINES = 50;

/** Longer lines are cut; minified bundles and progress bars say little. */
const MAX_LINE_CHARS = 500;

/** Words that mark a line as worth showing even far from the end. */
const NOTABLE = new RegExp(
  [
    String.raw`\b(?:error|errors|fatal|failed|failure|exception|panic|traceback)\b`,
    String.raw`\b(?:denied|refused|not found|no such|cannot|can't|unable|killed)\b`,
    String.raw`\bnon-zero code\b|\bexit(?:ed)? (?:with )?code\b|ERR!`,
    String.raw`\bE[A-Z]{3,}\b`, // Node's ENOENT, EADDRINUSE, …
    String.raw`^Step \d+/\d+ :`, // which build step ran, for context
  ].join("|"),
  "i",
);

export type LogExcerpt = {
  /** Notable lines from before the tail, oldest first. */
  earlier: LogEntry[];
  tail: LogEntry[];
  /** Lines of the log that appear in neither. */
  omitted: number;
};

/** Picks the tail and the notable earlier lines, each cut to a sane length. */
export function logExcerpt(lines: LogEntry[]): LogExcerpt {
  const cut = Math.max(0, lines.length - TAIL_LINES);
  const earlier = lines
    .slice(0, cut)
    .filter((entry) => NOTABLE.test(entry.line))
    .slice(-EARLIER_LINES);
  const tail = lines.slice(cut);
  return {
    earlier: earlier.map(shorten),
    tail: tail.map(shorten),
    omitted: lines.length - earlier.length - tail.length,
  };
}

function shorten(entry: LogEntry): LogEntry {
  if (entry.line.length <= MAX_LINE_CHARS) return entry;
  return { ...entry, line: `${entry.line.slice(0, MAX_LINE_CHARS)}… (cut)` };
}

/** One line as the model reads it: `#12 stderr: text`. */
export const formatEntry = (entry: LogEntry) =>
  `#${entry.id} ${entry.stream}: ${entry.line}`;
