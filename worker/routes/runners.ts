import { newRouter } from "../router";

export const runnerRoutes = newRouter();
