// Renewal over mTLS: the current, unexpired device certificate presented as TLS client certificate.
import type { FleetServices } from "../../services.js";
import { keyFromCsr, type DeviceCertificate } from "../../issue/issuance.js";
import { issued, type Provisioner } from "../provisioner.js";
import { usablePresentedCertificate, type PresentedCertificateRequest } from "../presented-certificate.js";
import { renewOnce } from "../renew-once.js";
import { sourceContext } from "../request-source.js";

export type MtlsRenewal = PresentedCertificateRequest;

/** Not exported: reached through renewalProvisioner (enrollment.ts). */
async function mtlsRenewal(fleet: FleetServices, req: MtlsRenewal): Promise<DeviceCertificate> {
  const now = req.now ?? fleet.clock.now();
  const known = await usablePresentedCertificate(
    fleet,
    req.clientCertificate,
    "the client certificate",
    "device",
    "only operational device certificates renew; factory certificates enroll",
    now,
  );
  const key = await keyFromCsr(req.csr);
  return renewOnce(fleet, known, key, { now, context: sourceContext(req.source, { renews: known.row.serial }) });
}

export const renewalProvisioner: Provisioner = {
  name: "renewal",
  operation: "renew",
  failures: "audit",
  credential: true,
  asks: "the current device certificate as TLS client certificate",
  presents: (r) => r.clientCertificate !== undefined,
  failureVia: (transport) => (transport === "est" ? "est-reenroll" : `${transport}-renew`),
  async run(fleet, r, { now }) {
    return issued(await mtlsRenewal(fleet, { clientCertificate: r.clientCertificate!, csr: r.csr, source: r.source, now }));
  },
};
