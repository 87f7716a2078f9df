// JSON schemas shared by the admin routes (TypeBox builds plain JSON Schema; fastify validates
// with it and @fastify/swagger publishes it). Objects refuse unknown fields.
import { Type, type TObject, type TProperties } from "@sinclair/typebox";

/** An object schema that refuses unknown fields. */
export const Strict = <T extends TProperties>(properties: T, description?: string): TObject<T> =>
  Type.Object(properties, { additionalProperties: false, ...(description ? { description } : {}) });

export const Problem = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String(),
  },
  { additionalProperties: true, description: "RFC 9457 problem details" },
);

/** The problem answers every authenticated route can give. */
export const PROBLEMS = { 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem, 413: Problem, 415: Problem };

export const DeviceId = Type.String({ pattern: "^[a-z0-9][a-z0-9._-]{0,62}$", description: "device id" });
export const DeviceIdParams = Strict({ id: DeviceId });

export const Labels = Type.Record(Type.String(), Type.String());

export const Device = Type.Object({
  id: Type.String(),
  group: Type.Union([Type.String(), Type.Null()]),
  labels: Labels,
  status: Type.String({ description: "active | held | revoked | removed" }),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});

export const CertificateSummary = Type.Object({
  serial: Type.String(),
  issuer: Type.String(),
  kind: Type.String(),
  notBefore: Type.String(),
  notAfter: Type.String(),
  status: Type.String({ description: "valid | revoked | hold | expired" }),
  fingerprintSha256: Type.String(),
});

export const StatusChange = Type.Object({ serials: Type.Array(Type.String()), cas: Type.Array(Type.String()) });

/** A device's status change: also the ROS 2 enclaves of the device it revoked, held or released (their serials are in serials). */
export const DeviceStatusChange = Type.Object({
  serials: Type.Array(Type.String()),
  cas: Type.Array(Type.String()),
  enclaves: Type.Array(Type.Object({ keystore: Type.String(), path: Type.String() }), { description: "ROS 2 enclaves of the device" }),
});

/** A duration as the configuration writes it: 15m, 24h, 7d, 90s. */
export const Duration = Type.String({ pattern: "^[1-9][0-9]{0,5}[smhdwy]$", description: "a duration such as 24h or 7d" });

export const CreatedToken = Type.Object({
  token: Type.String({ description: "shown once: give it to the device (fleetpki agent --token)" }),
  deviceId: Type.String(),
  expiresAt: Type.String(),
});

export const AuditEvent = Type.Object({
  seq: Type.Integer(),
  at: Type.String(),
  actor: Type.String(),
  action: Type.String(),
  details: Type.Unknown(),
});

/** A certificate serial as operators paste it: hexadecimal, optionally with colons. */
export const Serial = Type.String({ pattern: "^(0[xX])?[0-9A-Fa-f:]{1,64}$", description: "serial number (hex)" });
export const SerialParams = Strict({ serial: Serial });

/** Operator and service names: a SPIFFE path segment. */
export const Name = Type.String({ pattern: "^[a-z0-9][a-z0-9_-]{0,62}$" });
export const NameParams = Strict({ name: Name });

export const OperatorRole = Type.Union([Type.Literal("viewer"), Type.Literal("operator"), Type.Literal("admin")]);

/** A PEM text (a CSR); bounded well below the body limit. */
export const Pem = Type.String({ minLength: 1, maxLength: 65536 });
