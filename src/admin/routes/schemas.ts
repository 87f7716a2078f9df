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
