/**
 * Reading a failed deployment's log the way the built-in rules need it:
 * where the app's own output is, which build step ran last, which line looks
 * like the error. The patterns follow the runner's wording loosely, so a
 * reworded line still reads.
 */
import type { FailureContext } from "../context";

/** Why the deployment failed: the recorded reason, else the log's last words. */
export function failureReason(context: FailureContext): string {
  if (context.failureReason) return context.failureReason;
  const lines = context.lines;
  return (lastOf(lines, (l) => l.stream === "stderr") ?? lines.at(-1))?.line ?? "";
}

/** The match of `pattern` in the failure reason, which says which step failed. */
export function matchReason(
  context: FailureContext,
  pattern: RegExp,
): RegExpMatchArray | null {
  return failureReason(context).match(pattern);
}

/** The match of `pattern` in the reason, else in the log read from its end. */
export function findLast(
  context: FailureContext,
  pattern: RegExp,
): RegExpMatchArray | null {
  const reasonMatch = failureReason(context).match(pattern);
  if (reasonMatch) return reasonMatch;
  for (let i = context.lines.length - 1; i >= 0; i--) {
    const match = context.lines[i].line.match(pattern);
    if (match) return match;
  }
  return null;
}

/** The runner's header above the app's last output lines. */
const OUTPUT_HEADER = /\blines? of (?:output|logs?) from \S+?:?\s*$/i;
const CANDIDATE_STARTED = /^Starting (?:the )?candidate\b/i;
/** Platform lines that can sit among or after the app's output. */
const PLATFORM_LINE =
  /^(?:Health check\b|The app (?:exited|did not answer)|Cleaning up\b)/i;

/**
 * The app's own output, as the runner copied it into the log after a failed
 * health check or an exit; [] when the app never ran or wrote nothing.
 */
export function appOutput(context: FailureContext): string[] {
  const lines = context.lines.map((l) => l.line);
  const reason = failureReason(context);
  let start = lastIndexOf(lines, (line) => OUTPUT_HEADER.test(line));
  if (start < 0) start = lastIndexOf(lines, (line) => CANDIDATE_STARTED.test(line));
  if (start < 0) return [];
  return lines
    .slice(start + 1)
    .filter((line) => line !== reason && !PLATFORM_LINE.test(line) && line.trim() !== "");
}

export type BuildStep = {
  number: number;
  total: number;
  instruction: string;
  index: number;
};

const CLASSIC_STEP = /^Step (\d+)\/(\d+) ?: ?(.+)$/;
const BUILDKIT_STEP = /^#\d+ \[(?:[\w-]+ )?(\d+)\/(\d+)\] (.+)$/;

/** Every build step the log shows, in order. */
export function buildSteps(context: FailureContext): BuildStep[] {
  const steps: BuildStep[] = [];
  context.lines.forEach(({ line }, index) => {
    const match = line.match(CLASSIC_STEP) ?? line.match(BUILDKIT_STEP);
    if (match) {
      const [, number, total, instruction] = match;
      steps.push({ number: Number(number), total: Number(total), instruction, index });
    }
  });
  return steps;
}

/** A line that names the error itself, such as "TypeError: x is undefined". */
const STRONG_ERROR =
  /^\s*(?:Uncaught\s+)?(?:[\w.$]*(?:Error|Exception)\b[:\]]|panic:|fatal(?: error)?:|FATAL\b|ERROR\b|npm ERR!|error(?:\[\w+\])?:)/i;
/** A line that only mentions trouble. */
const WEAK_ERROR =
  /\b(?:error|exception|fatal|failed|cannot|can't|unable|denied|not found|no such|killed)\b|\bE[A-Z]{3,}\b/i;

/** Error-looking lines that only point elsewhere, such as npm's log file. */
const BOILERPLATE =
  /complete log of this run|^npm ERR!\s*(?:$|code |errno |syscall |path |A complete)|^\s*at\s|for more information|--verbose/i;

/**
 * The line that best states the error among `lines`: the last one naming an
 * error, else the last one mentioning trouble, else null.
 */
export function errorLine(lines: string[]): string | null {
  const telling = lines.filter((line) => !BOILERPLATE.test(line));
  return (
    lastOf(telling, (l) => STRONG_ERROR.test(l)) ??
    lastOf(telling, (l) => WEAK_ERROR.test(l)) ??
    null
  );
}

/** Array#findLastIndex, which the Worker's ES2022 typings lack. */
export function lastIndexOf<T>(items: readonly T[], test: (item: T) => boolean): number {
  for (let i = items.length - 1; i >= 0; i--) if (test(items[i])) return i;
  return -1;
}

/** Array#findLast, likewise. */
export function lastOf<T>(
  items: readonly T[],
  test: (item: T) => boolean,
): T | undefined {
  const index = lastIndexOf(items, test);
  return index < 0 ? undefined : items[index];
}

/** A log line quoted inside an explanation, cut to a readable length. */
export function quote(line: string, max = 300): string {
  const text = line.trim();
  return `"${text.length > max ? `${text.slice(0, max)}…` : text}"`;
}
