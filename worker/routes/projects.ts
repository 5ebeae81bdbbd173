import { newRouter } from "../router";

export const projectRoutes = newRouter();
