/**
 * Keeps secrets out of what is sent to an AI provider: the service's
 * environment values and anything shaped like a credential.
 */

/**
 * Values shorter than this are left alone: hiding every "1" or "on" would
 * make the log unreadable, and so short a value protects nothing anyway.
 */
const MIN_SECRET_LENGTH = 4;

/** `[pattern, replacement]` pairs for credentials that need no env to spot. */
const CREDENTIAL_PATTERNS: [RegExp, string][] = [
  // user:password@ or token@ inside a URL, of any scheme.
  [/\b([a-z][a-z0-9+.-]*:\/\/)[^/\s@]+@/gi, "$1[redacted]@"],
  [/\b(Bearer)\s+[A-Za-z0-9._~+/=-]{8,}/gi, "$1 [redacted]"],
  // Longer, so that prose such as "Basic authentication" is left alone.
  [/\b(Basic|Token)\s+[A-Za-z0-9._~+/=-]{16,}/gi, "$1 [redacted]"],
  // Aeroplane's own API keys and runner tokens.
  [/\bapr?_[A-Za-z0-9_-]{8,}/g, "[redacted]"],
  // Well-known token prefixes: OpenAI, GitHub, GitLab, Slack, AWS.
  [/\bsk-[A-Za-z0-9_-]{16,}/g, "[redacted]"],
  [/\b(?:gh[pousr]_|github_pat_)[A-Za-z0-9_]{16,}/g, "[redacted]"],
  [/\bglpat-[A-Za-z0-9_-]{16,}/g, "[redacted]"],
  [/\bxox[abprs]-[A-Za-z0-9-]{10,}/g, "[redacted]"],
  [/\bAKIA[0-9A-Z]{16}\b/g, "[redacted]"],
  // NAME=value or "name": "value" where the name says it is a secret.
  [
    /\b([\w-]*(?:password|passwd|secret|token|api[_-]?key|private[_-]?key)[\w-]*)(["']?\s*[=:]\s*["']?)[^\s"',;&]+/gi,
    "$1$2[redacted]",
  ],
];

/**
 * Returns a function that replaces every environment value (of at least
 * four characters) with `[redacted:NAME]` and every credential-shaped
 * string with `[redacted]`. Naming the variable keeps the line useful: a
 * reader still sees that the app printed, say, its DATABASE_URL.
 */
export function createRedactor(env: Record<string, string>): (text: string) => string {
  // Longest first, so a value that contains another is hidden whole.
  const values = Object.entries(env)
    .filter(([, value]) => value.length >= MIN_SECRET_LENGTH)
    .sort(([, a], [, b]) => b.length - a.length);

  return (text) => {
    let redacted = text;
    for (const [name, value] of values) {
      if (redacted.includes(value))
        redacted = redacted.split(value).join(`[redacted:${name}]`);
    }
    for (const [pattern, replacement] of CREDENTIAL_PATTERNS) {
      redacted = redacted.replace(pattern, replacement);
    }
    return redacted;
  };
}
