// The access policy: show it, replace it (validated, dry run first if asked, audited), ask it.
import { Type } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import type { AccessAction } from "../../access/identity.js";
import { MAX_POLICY_BYTES } from "../../access/policy.js";
import type { Ros2Action } from "../../access/ros2-policy.js";
import { replacePolicy, showPolicy, testPolicy, testRos2Policy, type PolicySubject } from "../../authority/policy.js";
import { actorOf } from "../auth.js";
import type { AdminContext } from "../context.js";
import { DeviceId, Name, OperatorRole, PROBLEMS, Strict } from "./schemas.js";

const Problem = Type.Object({ line: Type.Integer(), field: Type.String(), message: Type.String() });
const Outcome = Type.Object({ outcome: Type.String(), rule: Type.Union([Type.String(), Type.Null()]) });

const TestBody = Type.Union(
  [
    Strict({
      device: DeviceId,
      action: Type.Union([Type.Literal("publish"), Type.Literal("subscribe"), Type.Literal("receive")]),
      topic: Type.String({ minLength: 1, maxLength: 65535 }),
    }),
    Strict({
      service: Name,
      action: Type.Union([Type.Literal("publish"), Type.Literal("subscribe"), Type.Literal("receive")]),
      topic: Type.String({ minLength: 1, maxLength: 65535 }),
    }),
    Strict({
      operator: Name,
      role: OperatorRole,
      action: Type.Union([Type.Literal("publish"), Type.Literal("subscribe"), Type.Literal("receive")]),
      topic: Type.String({ minLength: 1, maxLength: 65535 }),
    }),
    // ROS 2: a device's enclave and a fully qualified name (as `policy test --ros2-*`).
    Strict({
      device: DeviceId,
      enclave: Type.String({ minLength: 1, maxLength: 255 }),
      action: Type.Union(["publish", "subscribe", "request", "reply", "call", "execute"].map((a) => Type.Literal(`ros2-${a}`))),
      name: Type.String({ minLength: 1, maxLength: 255 }),
    }),
  ],
  {
    description:
      "who asks (exactly one of device, service, operator with role), what, and the topic (or a device's ROS 2 enclave and name)",
  },
);
type TestRequest =
  | ({ action: AccessAction | "receive"; topic: string } & (
      { device: string } | { service: string } | { operator: string; role: "viewer" | "operator" | "admin" }
    ))
  | { device: string; enclave: string; action: `ros2-${Ros2Action}`; name: string };

export function registerPolicyRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.get(
    "/api/policy",
    {
      config: { role: "viewer" },
      schema: {
        summary: "The access policy file, whether it is valid, and its problems",
        tags: ["policy"],
        response: {
          200: Type.Object({
            yaml: Type.String(),
            valid: Type.Boolean(),
            errors: Type.Array(Problem),
            sha256: Type.Union([Type.String(), Type.Null()]),
            mode: Type.Union([Type.String(), Type.Null()]),
            rules: Type.Union([Type.Integer(), Type.Null()]),
          }),
          ...PROBLEMS,
        },
      },
    },
    async () => showPolicy(ctx.fleet),
  );

  app.put<{ Body: { yaml: string; dryRun?: boolean } }>(
    "/api/policy",
    {
      config: { role: "admin" },
      schema: {
        summary: "Replace the access policy (or, with dryRun, only say which decisions for active devices would change)",
        description: "An invalid policy is refused (400 policy-invalid) with every problem and its line; the file is untouched.",
        tags: ["policy"],
        body: Strict({ yaml: Type.String({ maxLength: MAX_POLICY_BYTES }), dryRun: Type.Optional(Type.Boolean()) }),
        response: {
          200: Type.Object({
            dryRun: Type.Boolean(),
            previousSha256: Type.Union([Type.String(), Type.Null()]),
            sha256: Type.String(),
            mode: Type.String(),
            rules: Type.Integer(),
            devices: Type.Integer(),
            changed: Type.Integer(),
            changes: Type.Array(
              Type.Object({ device: Type.String(), action: Type.String(), topic: Type.String(), before: Outcome, after: Outcome }),
            ),
          }),
          ...PROBLEMS,
        },
      },
    },
    async (request) => replacePolicy(ctx.fleet, { yaml: request.body.yaml, dryRun: request.body.dryRun, actor: actorOf(request) }),
  );

  app.post<{ Body: TestRequest }>(
    "/api/policy/test",
    {
      config: { role: "viewer" },
      schema: {
        summary: "What the policy in force decides for one identity and topic, and the rule that decides (as `fleetpki policy test`)",
        tags: ["policy"],
        body: TestBody,
        response: {
          200: Type.Object({
            allowed: Type.Boolean(),
            outcome: Type.String(),
            rule: Type.Union([Type.String(), Type.Null()]),
            reason: Type.String(),
            mode: Type.String(),
            deviceStatus: Type.Optional(Type.String()),
          }),
          ...PROBLEMS,
        },
      },
    },
    async (request) => {
      const b = request.body;
      if ("enclave" in b) {
        const action = b.action.slice("ros2-".length) as Ros2Action;
        const d = await testRos2Policy(ctx.fleet, { device: b.device, enclave: b.enclave, action, name: b.name });
        const { allowed, outcome, reason, mode, deviceStatus } = d;
        return { allowed, outcome, rule: d.rule ?? null, reason, mode, deviceStatus };
      }
      const who: PolicySubject =
        "device" in b ? { device: b.device } : "service" in b ? { service: b.service } : { operator: b.operator, role: b.role };
      const d = await testPolicy(ctx.fleet, { who, action: b.action, topic: b.topic });
      return { allowed: d.allowed, outcome: d.outcome, rule: d.rule ?? null, reason: d.reason, mode: d.mode, deviceStatus: d.deviceStatus };
    },
  );
}
