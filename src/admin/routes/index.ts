// Every route module of the admin API. Each registers its routes with a declared role and full
// request/response schemas (the OpenAPI document is generated from them).
import type { FastifyInstance } from "fastify";
import type { AdminContext } from "../context.js";
import { registerApprovalRoutes } from "./approvals.js";
import { registerAuditRoutes } from "./audit.js";
import { registerCaRoutes } from "./cas.js";
import { registerCertificateRoutes } from "./certificates.js";
import { registerDeviceRoutes } from "./devices.js";
import { registerGatewayRoutes } from "./gateway.js";
import { registerListRoutes } from "./lists.js";
import { registerOperatorRoutes } from "./operators.js";
import { registerPolicyRoutes } from "./policy.js";
import { registerServiceRoutes } from "./services.js";

export type AdminRoutes = (app: FastifyInstance, ctx: AdminContext) => void | Promise<void>;

export const ADMIN_ROUTES: readonly AdminRoutes[] = [
  registerDeviceRoutes,
  registerListRoutes,
  registerApprovalRoutes,
  registerCertificateRoutes,
  registerCaRoutes,
  registerAuditRoutes,
  registerPolicyRoutes,
  registerGatewayRoutes,
  registerOperatorRoutes,
  registerServiceRoutes,
];
