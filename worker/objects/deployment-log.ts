import { DurableObject } from "cloudflare:workers";
export class DeploymentLog extends DurableObject<Env> {}
