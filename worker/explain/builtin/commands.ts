/**
 * Shell commands the built-in explanations suggest: Aeroplane API calls in
 * the README's curl style, and the git and Docker commands that check a
 * cause on the user's own machine.
 */

const AUTH = '-H "Authorization: Bearer $AEROPLANE_API_KEY"';

/** Quotes `text` for a POSIX shell. */
export function shellQuote(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", `'\\''`)}'`;
}

/** Changes service settings through the API. */
export function patchService(serviceId: string, fields: Record<string, unknown>): string {
  return (
    `curl -X PATCH "$AEROPLANE_URL/api/services/${serviceId}" ${AUTH} ` +
    `-H "Content-Type: application/json" -d ${shellQuote(JSON.stringify(fields))}`
  );
}

/** Queues a new deployment of the service. */
export const redeploy = (serviceId: string) =>
  `curl -X POST "$AEROPLANE_URL/api/services/${serviceId}/deployments" ${AUTH}`;

/** Reads the whole deployment log. */
export const showLogs = (deploymentId: string) =>
  `curl "$AEROPLANE_URL/api/deployments/${deploymentId}/logs" ${AUTH}`;

/** A repository URL without the credentials it may embed. */
export const withoutCredentials = (url: string) =>
  url.replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^/\s@]+@/gi, "$1");

/** `docker build` of the service's image from a checkout of its repository. */
export function dockerBuild(
  rootDir: string,
  dockerfilePath: string,
  tag?: string,
): string {
  const context = rootDir === "" ? "." : rootDir;
  const dockerfile = rootDir === "" ? dockerfilePath : `${rootDir}/${dockerfilePath}`;
  const tagged = tag ? ` -t ${shellQuote(tag)}` : "";
  return `docker build${tagged} -f ${shellQuote(dockerfile)} ${shellQuote(context)}`;
}
