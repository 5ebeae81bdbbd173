/**
 * The runner's one logger: leveled, namespaced, one line per entry on stderr.
 *
 * stdout stays free for anything a caller may want to pipe; operators read
 * stderr (or journald, which captures it). The level comes from
 * AEROPLANE_LOG_LEVEL (debug | info | warn | error; default info).
 */

export const logLevels = ["debug", "info", "warn", "error"] as const;
export type LogLevel = (typeof logLevels)[number];

/** Structured context printed after the message as `key=value`. */
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  /** A logger whose every entry also carries `fields` (e.g. the deployment id). */
  with(fields: LogFields): Logger;
}

/** Where entries go; tests may swap it to capture output. */
export type LogSink = (entry: string) => void;

/** The default sink: one line per entry on stderr. */
export const stderrSink: LogSink = (entry) => process.stderr.write(entry + "\n");

function configuredLevel(): LogLevel {
  const value = process.env.AEROPLANE_LOG_LEVEL?.toLowerCase();
  return logLevels.find((level) => level === value) ?? "info";
}

function formatValue(value: unknown): string {
  if (value instanceof Error) return JSON.stringify(value.message);
  if (typeof value === "string")
    return /^[\w.:/@-]+$/.test(value) ? value : JSON.stringify(value);
  return JSON.stringify(value) ?? String(value);
}

function formatFields(fields: LogFields): string {
  return Object.entries(fields)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => ` ${key}=${formatValue(value)}`)
    .join("");
}

/**
 * Creates a logger for one namespace such as `runner:docker`.
 *
 * The level is read when the logger is made, so a test can set
 * AEROPLANE_LOG_LEVEL before creating the code under test.
 */
export function createLogger(
  namespace: string,
  options: { level?: LogLevel; sink?: LogSink; fields?: LogFields } = {},
): Logger {
  const threshold = logLevels.indexOf(options.level ?? configuredLevel());
  const sink = options.sink ?? stderrSink;
  const base = options.fields ?? {};

  const write = (level: LogLevel, message: string, fields?: LogFields) => {
    if (logLevels.indexOf(level) < threshold) return;
    const label = level.toUpperCase().padEnd(5);
    const context = formatFields({ ...base, ...fields });
    sink(`${new Date().toISOString()} ${label} ${namespace} ${message}${context}`);
  };

  return {
    debug: (message, fields) => write("debug", message, fields),
    info: (message, fields) => write("info", message, fields),
    warn: (message, fields) => write("warn", message, fields),
    error: (message, fields) => write("error", message, fields),
    with: (fields) =>
      createLogger(namespace, {
        level: logLevels[threshold],
        sink,
        fields: { ...base, ...fields },
      }),
  };
}

/** The message of anything thrown, for log lines and failure reasons. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
