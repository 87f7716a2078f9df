// Every route module of the admin API. Each registers its routes with a declared role and full
// request/response schemas (the OpenAPI document is generated from them).
import type { FastifyInstance } from "fastify";
import type { AdminContext } from "../context.js";
import { registerDeviceRoutes } from "./devices.js";
import { registerListRoutes } from "./lists.js";

export type AdminRoutes = (app: FastifyInstance, ctx: AdminContext) => void | Promise<void>;

export const ADMIN_ROUTES: readonly AdminRoutes[] = [registerDeviceRoutes, registerListRoutes];
