// authority.issue: a CSR (or a public key we generated) and a device id in, a recorded
// device certificate out. The device profile decides every field; the CSR contributes its key.
import type { KeyObject } from "node:crypto";
import { parseDuration } from "../../config/duration.js";
import type { CertificateTable } from "../../store/schema.js";
import { SerialInUse } from "../../store/operations/certificates.js";
import { CsrError, parseCsrAsync } from "../../x509/csr.js";
import { KeyPolicyError, assertModulusNotPrimeAsync, checkKeyObject, checkPublicKey, importPolicyKey } from "../../x509/key-policy.js";
import type { PolicyKey } from "../../x509/key-policy.js";
import { toPem } from "../../x509/pem.js";
import type { GeneralName } from "../../x509/extensions.js";
import { DEVICE_ID_PATTERN, IssuerExpired, deviceDnsName, deviceSpiffeId, type IssuedCertificate } from "../../x509/profiles.js";
import { CaNotActive, CsrInvalid, InvalidArgument, InvalidDeviceId, KeyTypeNotAllowed, ReEnrollRequired } from "../errors.js";
import type { FleetServices } from "../services.js";
import { certificateRow, issueAuditDetails, issuedRecord } from "./records.js";
import type { IssueCondition } from "./conditions.js";

declare const policyChecked: unique symbol;

/** A key the CA may certify. Only keyFromCsr and subjectKeyOf make one, after the key policy. */
export interface SubjectKey {
  /** Canonical DER SubjectPublicKeyInfo (re-encoded from the checked key). */
  spki: Buffer;
  /** Its BIT STRING value. */
  subjectPublicKey: Buffer;
  keyType: string;
  /** An RSA modulus whose primality test is still due (issueForKey runs it). */
  readonly rsaModulus?: Buffer;
  readonly [policyChecked]: true;
}

const subjectKey = (k: { spki: Buffer; subjectPublicKey: Buffer; keyType: string; rsaModulus?: Buffer }): SubjectKey => {
  const { spki, subjectPublicKey, keyType, rsaModulus } = k;
  return { spki, subjectPublicKey, keyType, ...(rsaModulus && { rsaModulus }) } as SubjectKey;
};

/** The primality test of the key policy, where it is due; CSR keys it refuses are CsrInvalid. */
export async function assertModulusNotPrime(key: SubjectKey): Promise<void> {
  try {
    await assertModulusNotPrimeAsync({ modulus: key.rsaModulus });
  } catch (e) {
    if (e instanceof KeyPolicyError) throw new CsrInvalid(e.reason, `CSR: ${e.message}`);
    throw e;
  }
}

/** A key that arrives without a CSR (one generated for a factory bundle), through the same key policy. */
export function subjectKeyOf(key: KeyObject): SubjectKey {
  try {
    return subjectKey(checkKeyObject(key));
  } catch (e) {
    if (e instanceof KeyPolicyError)
      throw e.reason === "key-type-not-allowed" ? new KeyTypeNotAllowed(e.message) : new InvalidArgument(e.message);
    throw e;
  }
}

/**
 * The key of a certificate fleetpki issued, for checking a signature made with it; refused when it
 * fails today's key policy (certificates issued before it existed may hold keys anyone can sign for).
 */
export function certificateKey(spki: Buffer, serial: string): KeyObject {
  let key: PolicyKey;
  try {
    key = checkPublicKey(spki);
  } catch (e) {
    if (e instanceof KeyPolicyError)
      throw new ReEnrollRequired(`certificate ${serial} holds a key the key policy refuses (${e.message}); it cannot renew: re-enroll`);
    throw e;
  }
  return importPolicyKey(key);
}

export interface DeviceIssueRequest {
  deviceId: string;
  /** Who asked (audit actor), e.g. "cli", "est:token", "spiffe://.../operator/admin". */
  actor: string;
  /** Issuing CA: "devices" (default) or a local CA id for factory certificates. */
  caId?: string;
  /** Overrides validity.device. */
  lifetimeMs?: number;
  /** The request time, when the caller read it already (fleet.clock otherwise). */
  now?: Date;
  /** Free-form context for the audit event (e.g. { via: "est-simpleenroll" }). */
  context?: Record<string, unknown>;
  /** Consumed in the recording transaction (token, nonce, approval); refuses the certificate if it cannot be. */
  condition?: IssueCondition;
}

export interface DeviceCertificate {
  deviceId: string;
  serial: string;
  der: Buffer;
  certificatePem: string;
  /** Issuing CA certificate(s), without the root. */
  chainPem: string;
  /** The root: the trust anchor for the device. */
  caPem: string;
  notBefore: Date;
  notAfter: Date;
  keyType: string;
}

/**
 * A device certificate recorded earlier, answered again (a retry after a lost answer). It may have
 * been committed by a concurrent request whose sync is still running: waits until it is durable.
 */
export async function recordedDeviceCertificate(fleet: FleetServices, row: CertificateTable, keyType: string): Promise<DeviceCertificate> {
  await fleet.store.durable();
  const { chain, root } = await fleet.chainPem(row.issuer_ca);
  const der = Buffer.from(row.der);
  return {
    deviceId: row.device_id ?? row.subject_id,
    serial: row.serial,
    der,
    certificatePem: toPem("CERTIFICATE", der),
    chainPem: chain,
    caPem: root,
    notBefore: new Date(row.not_before),
    notAfter: new Date(row.not_after),
    keyType,
  };
}

export function assertDeviceId(id: string): void {
  if (!DEVICE_ID_PATTERN.test(id)) throw new InvalidDeviceId(id);
  // OpenSSL reads a dotted CN as a host name and checks it against the devices CA's DNS name
  // constraint (there is no DNS SAN), so such a certificate would fail every TLS handshake.
  if (id.includes("."))
    throw new InvalidDeviceId(
      id,
      "device ids must not contain '.': OpenSSL would read the certificate's CN as a host name outside the fleet domain and reject it",
    );
}

/**
 * Verifies the CSR (signature check off the event loop) and extracts its key as typed authority
 * errors. An RSA modulus is tested for primality later, in issueForKey, after authentication.
 */
export async function keyFromCsr(csr: Buffer | string): Promise<SubjectKey> {
  try {
    return subjectKey(await parseCsrAsync(csr));
  } catch (e) {
    if (e instanceof CsrError) {
      if (e.reason === "key-type-not-allowed") throw new KeyTypeNotAllowed(e.message);
      throw new CsrInvalid(e.reason, e.message);
    }
    throw e;
  }
}

export async function issueDeviceCertificate(
  fleet: FleetServices,
  req: DeviceIssueRequest & { csr: Buffer | string },
): Promise<DeviceCertificate> {
  assertDeviceId(req.deviceId);
  return issueForKey(fleet, req, await keyFromCsr(req.csr));
}

const MAX_SERIAL_ATTEMPTS = 3;

/** Signs a device certificate for a verified key and records it (certificate row + audit event, one transaction). */
export async function issueForKey(fleet: FleetServices, req: DeviceIssueRequest, key: SubjectKey): Promise<DeviceCertificate> {
  assertDeviceId(req.deviceId);
  await assertModulusNotPrime(key);
  const caId = req.caId ?? "devices";
  const kind = caId === "devices" ? "device" : "factory";
  const template = await fleet.leafTemplate(caId, kind);
  const now = req.now ?? fleet.clock.now();
  const lifetimeMs = req.lifetimeMs ?? parseDuration(fleet.config.validity.device);
  // Only operational certificates name the robot as a host; a factory bundle only enrolls.
  const sans: GeneralName[] = [{ uri: deviceSpiffeId(fleet.domain, req.deviceId) }];
  const dnsName = kind === "device" ? deviceDnsName(fleet.domain, req.deviceId) : undefined;
  if (dnsName) sans.push({ dns: dnsName });

  for (let attempt = 1; ; attempt++) {
    let issued: IssuedCertificate;
    try {
      issued = template.issue(req.deviceId, sans, { spki: key.spki, subjectPublicKey: key.subjectPublicKey, now, lifetimeMs });
    } catch (e) {
      if (e instanceof IssuerExpired) throw new CaNotActive(e.message);
      throw e;
    }
    const record = issuedRecord(issued, { issuerCa: caId, kind, subjectId: req.deviceId, deviceId: req.deviceId });
    try {
      await fleet.recorder.record(
        certificateRow(record, now),
        {
          actor: req.actor,
          action: "certificate.issue",
          subject: `device:${req.deviceId}`,
          details: issueAuditDetails(record, { key_type: key.keyType, ...req.context }),
          at: now,
        },
        req.condition,
      );
    } catch (e) {
      // A 128-bit serial collision is astronomically unlikely, but uniqueness is checked, not assumed.
      if (e instanceof SerialInUse && attempt < MAX_SERIAL_ATTEMPTS) continue;
      throw e;
    }
    const { chain, root } = await fleet.chainPem(caId);
    return {
      deviceId: req.deviceId,
      serial: issued.serialHex,
      der: issued.der,
      certificatePem: toPem("CERTIFICATE", issued.der),
      chainPem: chain,
      caPem: root,
      notBefore: issued.notBefore,
      notAfter: issued.notAfter,
      keyType: key.keyType,
    };
  }
}
