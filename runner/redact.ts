/**
 * Keeps secrets out of deployment logs without corrupting the rest of them.
 *
 * Masking every environment value would turn `MODE=exit` into "***ing" in
 * every "exiting", and `GREETING=Step` into a mask on each Docker build step.
 * So a value is hidden only when it looks like a secret: long enough to be
 * one, or shorter but under a name that says it is one. A short value is
 * hidden only where it stands as a word of its own.
 */
import { redactUrlCredentials } from "./git.js";

/** Values at least this long are hidden whatever their name. */
const secretLength = 8;

/** Shorter values are hidden only under a secret-like name, and from this length. */
const namedSecretLength = 4;

/** Names that say their value is a secret, anywhere in the name. */
const secretName =
  /KEY|TOKEN|SECRET|PASS|PWD|AUTH|CREDENTIAL|PRIVATE|DSN|COOKIE|SESSION/i;

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Whether `value` of the variable `name` is treated as a secret. */
export function isSecretLike(name: string, value: string): boolean {
  if (value.length >= secretLength) return true;
  return value.length >= namedSecretLength && secretName.test(name);
}

/**
 * Returns a function that replaces every secret-like environment value with
 * `[redacted:NAME]` and hides credentials embedded in URLs.
 */
export function createRedactor(env: Record<string, string>): (line: string) => string {
  // One name per value; a value shared by several variables shows the first.
  const names = new Map<string, string>();
  for (const [name, value] of Object.entries(env)) {
    if (isSecretLike(name, value) && !names.has(value)) names.set(value, name);
  }
  if (names.size === 0) return redactUrlCredentials;

  // Longest first, so a secret that contains another is hidden whole; one
  // pass, so a replacement is never searched again for a shorter value.
  const alternatives = [...names.keys()]
    .sort((a, b) => b.length - a.length)
    .map((value) => {
      const pattern = escapeRegExp(value);
      // A short value inside a longer word is that word, not the secret.
      return value.length >= secretLength
        ? pattern
        : `(?<![\\p{L}\\p{N}_])${pattern}(?![\\p{L}\\p{N}_])`;
    });
  const secrets = new RegExp(alternatives.join("|"), "gu");

  return (line) =>
    redactUrlCredentials(line).replace(
      secrets,
      (value) => `[redacted:${names.get(value) ?? "?"}]`,
    );
}
