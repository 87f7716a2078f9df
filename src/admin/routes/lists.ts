// The fleet's lists: devices (search, filters, last seen, connected now), certificates, those
// expiring, and the audit log. One page per call; `nextCursor` gives the next (authority/queries.ts).
// Querystring values arrive as strings: patterns validate them, the handler converts.
import { Type, type TSchema } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import {
  CERTIFICATE_KINDS,
  CERTIFICATE_STATES,
  DEVICE_STATES,
  listAuditPage,
  listCertificatePage,
  listDevicePage,
  MAX_PAGE,
  type AuditListQuery,
  type CertificateListQuery,
  type DeviceListQuery,
} from "../../authority/queries.js";
import { expiringCertificates, parseExpiryWindow } from "../../authority/status/expiry.js";
import type { AdminContext } from "../context.js";
import { Labels, PROBLEMS, Strict } from "./schemas.js";

const Limit = Type.String({ pattern: "^([1-9][0-9]?|[1-4][0-9]{2}|500)$", description: `page size, 1-${MAX_PAGE} (default 50)` });
// Any text up to 1 KiB: whether it is a cursor is for the query to say (400 invalid-cursor).
const Cursor = Type.String({ minLength: 1, maxLength: 1024, description: "nextCursor of the previous page (opaque)" });
const Name = (description: string) => Type.String({ minLength: 1, maxLength: 256, description });
const OneOf = (values: readonly string[], description: string) =>
  Type.Union(
    values.map((v) => Type.Literal(v)),
    { description },
  );
const Instant = (description: string) =>
  Type.String({ pattern: "^\\d{4}-\\d{2}-\\d{2}(T\\d{2}:\\d{2}(:\\d{2}(\\.\\d{1,9})?)?(Z|[+-]\\d{2}:\\d{2}))?$", description });

const PageOf = <T extends TSchema>(item: T) =>
  Type.Object({ items: Type.Array(item), nextCursor: Type.Union([Type.String(), Type.Null()]) });

const limitOf = (text: string | undefined) => (text === undefined ? undefined : Number(text));

const DeviceQuery = Strict({
  q: Type.Optional(Type.String({ maxLength: 63, description: "part of the device id" })),
  group: Type.Optional(Type.String({ pattern: "^[a-z0-9][a-z0-9._-]{0,62}$", description: "group name" })),
  state: Type.Optional(OneOf(DEVICE_STATES, "device status (default: all but removed)")),
  label: Type.Optional(Type.String({ pattern: "^[a-z0-9][a-z0-9._/-]{0,62}=.{1,256}$", description: "key=value" })),
  cursor: Type.Optional(Cursor),
  limit: Type.Optional(Limit),
});
type DeviceQueryString = Omit<DeviceListQuery, "limit"> & { limit?: string };

const DeviceItem = Type.Object({
  id: Type.String(),
  group: Type.Union([Type.String(), Type.Null()]),
  labels: Labels,
  status: Type.String({ description: DEVICE_STATES.join(" | ") }),
  createdAt: Type.String(),
  updatedAt: Type.String(),
  certificate: Type.Union([
    Type.Object({
      serial: Type.String(),
      notAfter: Type.String(),
      status: Type.String({ description: "valid | revoked | hold | expired" }),
    }),
    Type.Null(),
  ]),
  lastSeen: Type.Union([Type.String({ description: "last enrollment, renewal or gateway admission" }), Type.Null()]),
  connected: Type.Boolean({ description: "a gateway session of this server is open now" }),
});

const CertificateQuery = Strict({
  kind: Type.Optional(OneOf(CERTIFICATE_KINDS, "certificate kind")),
  status: Type.Optional(OneOf(CERTIFICATE_STATES, "status (expired: valid but past notAfter)")),
  subject: Type.Optional(Name("device id, operator, service or server name, CA id")),
  issuer: Type.Optional(Name("issuing CA id")),
  cursor: Type.Optional(Cursor),
  limit: Type.Optional(Limit),
});
type CertificateQueryString = Omit<CertificateListQuery, "limit"> & { limit?: string };

const Nullable = (t: TSchema) => Type.Union([t, Type.Null()]);
const CertificateItem = Type.Object({
  serial: Type.String(),
  kind: Type.String(),
  subject: Type.String(),
  deviceId: Nullable(Type.String()),
  issuer: Type.String(),
  notBefore: Type.String(),
  notAfter: Type.String(),
  status: Type.String({ description: "valid | revoked | hold | expired" }),
  revokedAt: Nullable(Type.String()),
  revocationReason: Nullable(Type.String()),
  fingerprintSha256: Type.String(),
});

const ExpiringQuery = Strict({
  within: Type.Optional(Type.String({ pattern: "^[0-9]{1,7}[smhdwy]$", description: "window from now, e.g. 14d (default), 12h, 2w" })),
});
const ExpiringItem = Type.Object({
  kind: Type.String(),
  subject: Type.String(),
  serial: Type.String(),
  issuer: Type.String(),
  notAfter: Type.String(),
  secondsLeft: Type.Integer(),
  status: Type.String({ description: "valid | hold" }),
});

const AuditQuery = Strict({
  from: Type.Optional(Instant("at or after (ISO 8601)")),
  to: Type.Optional(Instant("before (ISO 8601)")),
  actor: Type.Optional(Name('e.g. "operator:alice", "cli", "gateway"')),
  action: Type.Optional(Name('e.g. "device.revoke"')),
  subject: Type.Optional(Name('e.g. "device:robot-1"')),
  cursor: Type.Optional(Cursor),
  limit: Type.Optional(Limit),
});
type AuditQueryString = Omit<AuditListQuery, "limit"> & { limit?: string };

const AuditItem = Type.Object({
  seq: Type.Integer(),
  at: Type.String(),
  actor: Type.String(),
  action: Type.String(),
  subject: Type.String(),
  details: Type.Object({}, { additionalProperties: true }),
  hash: Type.String(),
});

export function registerListRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.get<{ Querystring: DeviceQueryString }>(
    "/api/devices",
    {
      config: { role: "viewer" },
      schema: {
        summary: "Devices by id: search, filter by group, state and label; one page per call",
        tags: ["devices"],
        querystring: DeviceQuery,
        response: { 200: PageOf(DeviceItem), ...PROBLEMS },
      },
    },
    async (request) => {
      // Which devices have a session in this process's gateway now (one pass over its sessions).
      const sessions = ctx.gateway?.sessions() ?? [];
      const connected = new Set(sessions.filter((s) => s.kind === "device").map((s) => s.name));
      const { limit, ...query } = request.query;
      return listDevicePage(ctx.fleet, { ...query, limit: limitOf(limit) }, (id) => connected.has(id));
    },
  );

  app.get<{ Querystring: CertificateQueryString }>(
    "/api/certificates",
    {
      config: { role: "viewer" },
      schema: {
        summary: "Certificates by serial: filter by kind, status, subject and issuer; one page per call",
        tags: ["certificates"],
        querystring: CertificateQuery,
        response: { 200: PageOf(CertificateItem), ...PROBLEMS },
      },
    },
    async (request) => {
      const { limit, ...query } = request.query;
      return listCertificatePage(ctx.fleet, { ...query, limit: limitOf(limit) });
    },
  );

  app.get<{ Querystring: { within?: string } }>(
    "/api/certificates/expiring",
    {
      config: { role: "viewer" },
      schema: {
        summary: "Certificates in force ending within the window (renewed ones left out), soonest first",
        tags: ["certificates"],
        querystring: ExpiringQuery,
        response: { 200: Type.Object({ items: Type.Array(ExpiringItem) }), ...PROBLEMS },
      },
    },
    async (request) => ({ items: await expiringCertificates(ctx.fleet, { within: parseExpiryWindow(request.query.within ?? "14d") }) }),
  );

  app.get<{ Querystring: AuditQueryString }>(
    "/api/audit",
    {
      config: { role: "viewer" },
      schema: {
        summary: "The audit log, newest first: filter by time, actor, action and subject; one page per call",
        tags: ["audit"],
        querystring: AuditQuery,
        response: { 200: PageOf(AuditItem), ...PROBLEMS },
      },
    },
    async (request) => {
      const { limit, ...query } = request.query;
      return listAuditPage(ctx.fleet, { ...query, limit: limitOf(limit) });
    },
  );
}
