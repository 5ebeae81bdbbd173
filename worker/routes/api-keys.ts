import { newRouter } from "../router";

export const apiKeyRoutes = newRouter();
