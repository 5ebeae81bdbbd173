/** The Worker's entry: the HTTP app and the Durable Object classes. */
import { createApp } from "./app";

export { DeploymentLog } from "./objects/deployment-log";
export { RunnerChannel } from "./objects/runner-channel";

const app = createApp();

export default {
  fetch: app.fetch,
} satisfies ExportedHandler<Env>;
