import { newRouter } from "../router";

export const serviceRoutes = newRouter();
