import { newRouter } from "../router";

export const deploymentRoutes = newRouter();
