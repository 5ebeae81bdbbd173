import { DurableObject } from "cloudflare:workers";
export class RunnerChannel extends DurableObject<Env> {}
