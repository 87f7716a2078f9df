// Enrollment with a factory certificate from a local CA (`ca issue-batch`), presented over TLS. A
// factory certificate enrolls its device once; another needs `fleetpki device reprovision`.
import type { FactoryEnrollmentTable } from "../../../store/schema.js";
import { parseCertificate } from "../../../x509/certificate.js";
import { NotPermitted } from "../../errors.js";
import type { FleetServices } from "../../services.js";
import { issueForKey, keyFromCsr, recordedDeviceCertificate, type DeviceCertificate, type SubjectKey } from "../../issue/issuance.js";
import { factoryAlreadyEnrolled, type IssueCondition } from "../../issue/conditions.js";
import { issued, type Provisioner } from "../provisioner.js";
import { usablePresentedCertificate, type KnownCertificate, type PresentedCertificateRequest } from "../presented-certificate.js";
import { sourceContext } from "../request-source.js";

export interface FactoryEnrollment extends PresentedCertificateRequest {
  /** The device id the requester names, if any: it must be the factory certificate's. */
  deviceId?: string;
}

/** Not exported: reached through factoryProvisioner, after the switch (enrollment.ts). */
async function factoryEnrollment(fleet: FleetServices, req: FactoryEnrollment): Promise<DeviceCertificate> {
  const now = req.now ?? fleet.clock.now();
  const known = await usablePresentedCertificate(
    fleet,
    req.clientCertificate,
    "the factory certificate",
    "factory",
    "only certificates from a local (factory) CA can enroll; operational certificates renew at /renew",
    now,
  );
  if (req.deviceId !== undefined && req.deviceId !== known.deviceId)
    throw new NotPermitted("identity-mismatch", `the factory certificate belongs to "${known.deviceId}", not "${req.deviceId}"`);
  const key = await keyFromCsr(req.csr);
  const attempt = async (): Promise<DeviceCertificate> => {
    // A factory certificate enrolls its device once: a copied bundle must not mint certificates
    // for its year of life. Checked before signing; the condition settles racing requests.
    const previous = await fleet.store.ops.enrollment.factoryEnrollment(known.deviceId);
    if (previous)
      return (await factoryRetryAnswer(fleet, previous, known.row.serial, key, now)) ?? refuseFactoryReenrollment(known, previous);
    const condition: IssueCondition = { kind: "factory", deviceId: known.deviceId, factorySerial: known.row.serial, at: now.toISOString() };
    const context = sourceContext(req.source, { provisioner: "factory", factory_serial: known.row.serial });
    return issueForKey(fleet, { deviceId: known.deviceId, actor: `factory:${known.row.issuer_ca}`, now, context, condition }, key);
  };
  try {
    return await attempt();
  } catch (e) {
    // Lost the race to a concurrent enrollment of the same device: answer as if it came second.
    if (e instanceof NotPermitted && e.reason === "factory-already-enrolled" && !(e instanceof FactoryRefusal)) return attempt();
    throw e;
  }
}

/**
 * The refusal of a second factory enrollment. Not audited one row each (a copied bundle could
 * flood the log): Enrollment counts it against the source like a failed authentication and
 * tallies it (AuthFailureLog, action "enrollment.refuse"), with the details carried here.
 */
export class FactoryRefusal extends NotPermitted {
  constructor(
    readonly deviceId: string,
    /** The factory certificate presented now, and the enrollment that already used the device's one. */
    readonly details: { factory_serial: string; enrolled_with: string; enrolled_certificate: string },
  ) {
    const e = factoryAlreadyEnrolled(deviceId);
    super(e.reason, e.message);
  }
}

/**
 * The answer to a factory enrollment repeated because its answer was lost: the same factory
 * certificate and the same key get the certificate already issued. Anything else is a second enrollment.
 */
async function factoryRetryAnswer(
  fleet: FleetServices,
  previous: FactoryEnrollmentTable,
  factorySerial: string,
  key: SubjectKey,
  now: Date,
): Promise<DeviceCertificate | undefined> {
  if (previous.factory_serial !== factorySerial) return undefined;
  const row = await fleet.store.ops.certificates.bySerial(previous.certificate_serial);
  if (!row || row.status !== "valid" || row.not_after <= now.toISOString()) return undefined;
  if (!parseCertificate(Buffer.from(row.der)).spki.equals(key.spki)) return undefined;
  return recordedDeviceCertificate(fleet, row, key.keyType);
}

function refuseFactoryReenrollment(known: KnownCertificate, previous: FactoryEnrollmentTable): never {
  throw new FactoryRefusal(known.deviceId, {
    factory_serial: known.row.serial,
    enrolled_with: previous.factory_serial,
    enrolled_certificate: previous.certificate_serial,
  });
}

export const factoryProvisioner: Provisioner = {
  name: "factory",
  operation: "enroll",
  switch: "factory",
  failures: "count",
  credential: true,
  asks: "a factory client certificate",
  presents: (r) => r.clientCertificate !== undefined,
  failureVia: (transport) => `${transport}-factory`,
  async run(fleet, r, { now }) {
    const { clientCertificate, deviceId, csr, source } = r;
    return issued(await factoryEnrollment(fleet, { clientCertificate: clientCertificate!, deviceId, csr, source, now }));
  },
};
