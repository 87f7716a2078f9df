// Devices: add (with a first token), show (with recent events and whether it is connected), change
// group and labels, remove, tokens, revoke, hold, unhold. The list and search belong to another module.
import { Type } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import { addDevice, recentDeviceEvents, showDevice, updateDevice } from "../../authority/devices.js";
import { createToken } from "../../authority/enroll/tokens.js";
import { issueDeviceCertificate } from "../../authority/issue/issuance.js";
import { listGatewaySessions } from "../../gateway/sessions.js";
import { holdDevice, removeDevice, REVOKE_REASONS, revokeDevice, unholdDevice } from "../../authority/status/revocation.js";
import { actorOf } from "../auth.js";
import type { AdminContext } from "../context.js";
import {
  AuditEvent,
  CertificateSummary,
  CreatedToken,
  Device,
  DeviceId,
  DeviceIdParams,
  Duration,
  Pem,
  PROBLEMS,
  DeviceStatusChange,
  Strict,
} from "./schemas.js";

const RevokeBody = Strict({ reason: Type.Optional(Type.Union(REVOKE_REASONS.map((r) => Type.Literal(r)))) });
const TokenOptions = Strict({ ttl: Type.Optional(Duration) });
const Group = Type.String({ maxLength: 63, description: "1-63 characters a-z 0-9 . _ - starting with a letter or digit" });
/** Label maps stay small: they are substituted into topic filters and kept in every audit row of the device. */
const LabelMap = Type.Record(Type.String({ maxLength: 63 }), Type.String({ maxLength: 256 }), { maxProperties: 64 });

const AddBody = Strict({ id: DeviceId, group: Type.Optional(Group), labels: Type.Optional(LabelMap), token: Type.Optional(TokenOptions) });
const PatchBody = Strict(
  {
    group: Type.Optional(Type.Union([Group, Type.Null()])),
    labels: Type.Optional(
      Type.Record(Type.String({ maxLength: 63 }), Type.Union([Type.String({ maxLength: 256 }), Type.Null()]), { maxProperties: 64 }),
    ),
  },
  "group: a new group, or null for none; labels: a value sets a label, null removes it",
);

/** Whether a session with the device's client id is open: this process's gateway, else the sessions files of every gateway here. */
function connected(ctx: AdminContext, id: string): boolean {
  const sessions = ctx.gateway ? ctx.gateway.sessions() : listGatewaySessions(ctx.fleet.dir).flatMap((f) => f.sessions);
  return sessions.some((s) => s.kind === "device" && s.name === id);
}

export function registerDeviceRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.post<{ Body: { id: string; group?: string; labels?: Record<string, string>; token?: { ttl?: string } } }>(
    "/api/devices",
    {
      config: { role: "operator" },
      schema: {
        summary: "Register a device (and, with `token`, its first one-time enrollment token, shown once)",
        tags: ["devices"],
        body: AddBody,
        response: { 201: Type.Intersect([Device, Type.Object({ token: Type.Optional(CreatedToken) })]), ...PROBLEMS },
      },
    },
    async (request, reply) => {
      const { id, group, labels, token } = request.body;
      const device = await addDevice(ctx.fleet, { id, group, labels, token, actor: actorOf(request) });
      return reply.code(201).send(device);
    },
  );

  app.get<{ Params: { id: string } }>(
    "/api/devices/:id",
    {
      config: { role: "viewer" },
      schema: {
        summary: "A device with its certificates, its last 20 audit events and whether it is connected to a gateway now",
        tags: ["devices"],
        params: DeviceIdParams,
        response: {
          200: Type.Intersect([
            Device,
            Type.Object({ certificates: Type.Array(CertificateSummary), recentEvents: Type.Array(AuditEvent), connected: Type.Boolean() }),
          ]),
          ...PROBLEMS,
        },
      },
    },
    async (request) => {
      const device = await showDevice(ctx.fleet, request.params.id);
      const recentEvents = await recentDeviceEvents(ctx.fleet, device.id, 20);
      return { ...device, recentEvents, connected: connected(ctx, device.id) };
    },
  );

  app.patch<{ Params: { id: string }; Body: { group?: string | null; labels?: Record<string, string | null> } }>(
    "/api/devices/:id",
    {
      config: { role: "operator" },
      schema: {
        summary: "Change a device's group and labels",
        tags: ["devices"],
        params: DeviceIdParams,
        body: PatchBody,
        response: { 200: Device, ...PROBLEMS },
      },
    },
    async (request) => {
      const labels = Object.entries(request.body.labels ?? {});
      return updateDevice(ctx.fleet, {
        id: request.params.id,
        group: request.body.group,
        setLabels: Object.fromEntries(labels.filter((e): e is [string, string] => e[1] !== null)),
        unsetLabels: labels.filter(([, v]) => v === null).map(([k]) => k),
        actor: actorOf(request),
      });
    },
  );

  app.delete<{ Params: { id: string } }>(
    "/api/devices/:id",
    {
      config: { role: "operator" },
      schema: {
        summary: "Remove (decommission) a device: its certificates revoked, its tokens and requests closed; it never enrolls again",
        tags: ["devices"],
        params: DeviceIdParams,
        response: { 200: DeviceStatusChange, ...PROBLEMS },
      },
    },
    async (request) => removeDevice(ctx.fleet, { deviceId: request.params.id, actor: actorOf(request) }),
  );

  app.post<{ Params: { id: string }; Body: { ttl?: string } | undefined }>(
    "/api/devices/:id/tokens",
    {
      config: { role: "operator" },
      schema: {
        summary: "A one-time enrollment token for the device (shown once; only its hash is stored)",
        tags: ["devices"],
        params: DeviceIdParams,
        body: TokenOptions,
        response: { 201: CreatedToken, ...PROBLEMS },
      },
    },
    async (request, reply) => {
      const token = await createToken(ctx.fleet, { deviceId: request.params.id, ttl: request.body?.ttl, actor: actorOf(request) });
      return reply.code(201).send(token);
    },
  );

  app.post<{ Params: { id: string }; Body: { csr: string } }>(
    "/api/devices/:id/certificates",
    {
      config: { role: "operator" },
      schema: {
        summary: "Sign a CSR for the device by hand (device profile; the key policy and CSR checks are `fleetpki device issue`'s)",
        tags: ["devices"],
        params: DeviceIdParams,
        body: Strict({ csr: Pem }),
        response: {
          201: Type.Object({
            serial: Type.String(),
            notBefore: Type.String(),
            notAfter: Type.String(),
            certificate: Type.String({ description: "PEM" }),
            chain: Type.String({ description: "PEM of the issuing CA(s), without the root" }),
          }),
          ...PROBLEMS,
        },
      },
    },
    async (request, reply) => {
      const cert = await issueDeviceCertificate(ctx.fleet, {
        deviceId: request.params.id,
        csr: request.body.csr,
        actor: actorOf(request),
        context: { via: "admin-api" },
      });
      return reply.code(201).send({
        serial: cert.serial,
        notBefore: cert.notBefore.toISOString(),
        notAfter: cert.notAfter.toISOString(),
        certificate: cert.certificatePem,
        chain: cert.chainPem,
      });
    },
  );

  app.post<{ Params: { id: string }; Body: { reason?: (typeof REVOKE_REASONS)[number] } }>(
    "/api/devices/:id/revoke",
    {
      config: { role: "operator" },
      schema: {
        summary: "Revoke every certificate of the device; it never enrolls again",
        tags: ["devices"],
        params: DeviceIdParams,
        body: RevokeBody,
        response: { 200: DeviceStatusChange, ...PROBLEMS },
      },
    },
    async (request) => revokeDevice(ctx.fleet, { deviceId: request.params.id, reason: request.body.reason, actor: actorOf(request) }),
  );

  for (const [verb, change, summary] of [
    ["hold", holdDevice, "Put the device's certificates on hold"],
    ["unhold", unholdDevice, "Release a held device"],
  ] as const)
    app.post<{ Params: { id: string } }>(
      `/api/devices/:id/${verb}`,
      {
        config: { role: "operator" },
        schema: {
          summary,
          tags: ["devices"],
          params: DeviceIdParams,
          body: Strict({}),
          response: { 200: DeviceStatusChange, ...PROBLEMS },
        },
      },
      async (request) => change(ctx.fleet, { deviceId: request.params.id, actor: actorOf(request) }),
    );
}
