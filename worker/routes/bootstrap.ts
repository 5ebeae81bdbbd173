import { newRouter } from "../router";

export const bootstrapRoutes = newRouter();
