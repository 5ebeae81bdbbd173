/** Keeps secrets out of deployment logs. */
import { redactUrlCredentials } from "./git.js";

/** Values shorter than this are too likely to be ordinary words or numbers. */
const minimumSecretLength = 4;

/**
 * Returns a function that replaces every environment value (of at least
 * four characters) and every credential embedded in a URL with `***`.
 */
export function createRedactor(env: Record<string, string>): (line: string) => string {
  // Longest first, so a secret that contains another is hidden whole.
  const secrets = [...new Set(Object.values(env))]
    .filter((value) => value.length >= minimumSecretLength)
    .sort((a, b) => b.length - a.length);

  return (line) => {
    let redacted = redactUrlCredentials(line);
    for (const secret of secrets) {
      if (redacted.includes(secret)) redacted = redacted.split(secret).join("***");
    }
    return redacted;
  };
}
