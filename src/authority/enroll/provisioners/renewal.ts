// Renewal over mTLS: the current, unexpired device certificate presented as TLS client certificate.
import { NotPermitted } from "../../errors.js";
import type { FleetServices } from "../../services.js";
import { certificateKey, keyFromCsr, type DeviceCertificate } from "../../issue/issuance.js";
import { issued, type Provisioner } from "../provisioner.js";
import {
  assertIssuerActive,
  assertNotRevoked,
  assertVerified,
  lookupCertificate,
  type ClientCertificate,
} from "../presented-certificate.js";
import { renewOnce } from "../renew-once.js";
import { sourceContext, type RequestSource } from "../request-source.js";

export interface MtlsRenewal {
  clientCertificate: ClientCertificate;
  csr: Buffer | string;
  source: RequestSource;
  now?: Date;
}

/** Not exported: reached through renewalProvisioner (enrollment.ts). */
async function mtlsRenewal(fleet: FleetServices, req: MtlsRenewal): Promise<DeviceCertificate> {
  assertVerified(req.clientCertificate, "the client certificate");
  const known = await lookupCertificate(fleet, req.clientCertificate.der);
  if (known.row.kind !== "device")
    throw new NotPermitted("wrong-issuer", "only operational device certificates renew; factory certificates enroll");
  assertNotRevoked(known);
  // A key issued before the key policy existed may be one whose TLS signature anyone can forge.
  certificateKey(known.parsed.spki, known.row.serial);
  await assertIssuerActive(fleet, known.row.issuer_ca);
  const key = await keyFromCsr(req.csr);
  const now = req.now ?? fleet.clock.now();
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
