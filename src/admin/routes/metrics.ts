// GET /metrics: the process's Prometheus registry in the text format (0.0.4). Role "metrics": no
// credential from admin.metrics_allow addresses, else an operator certificate (auth.ts).
import { Type } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import { HttpProblem } from "../../http/http.js";
import type { AdminContext } from "../context.js";
import { Problem, Strict } from "./schemas.js";

export function registerMetricsRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.get(
    "/metrics",
    {
      config: { role: "metrics" },
      schema: {
        summary: "Prometheus metrics (text format 0.0.4); docs/metrics.md lists the series",
        tags: ["metrics"],
        querystring: Strict({}),
        response: {
          200: { description: "Prometheus text exposition", content: { "text/plain": { schema: Type.String() } } },
          401: Problem,
          403: Problem,
          404: Problem,
        },
      },
    },
    async (_request, reply) => {
      if (!ctx.metrics) throw new HttpProblem(404, "not-found", "this server keeps no metrics");
      const { contentType, body } = await ctx.metrics.scrape();
      return reply.type(contentType).header("cache-control", "no-store").send(body);
    },
  );
}
