// The gateway's TLS material: whom it trusts (root, devices, services, operators and, when
// allowed, local CAs: the active ones) and the current CRL of each, so OpenSSL itself refuses a
// revoked certificate at the handshake. Admission checks every certificate again from memory at
// CONNECT, so the CRLs are a second line: when one cannot be had or is not valid right now (an
// offline root without an imported CRL, a clock moved in a test), the handshake goes without CRLs
// rather than refusing every client once a nextUpdate passes (mosquitto#1826).
import { constants } from "node:crypto";
import type { SecureContextOptions } from "node:tls";
import { gatewayClientCas } from "../authority/ca/cas.js";
import type { FleetServices } from "../authority/services.js";
import { crlPem, currentCrl, type PublishedCrl } from "../authority/status/crls.js";

export interface GatewayTlsMaterial {
  options: SecureContextOptions & { minVersion: "TLSv1.2"; secureOptions: number };
  /** The CAs trusted, by id. */
  cas: string[];
  /** Why the handshake checks no CRLs, when it does not. */
  withoutCrls?: string;
}

/**
 * TLS 1.2+, client certificate required, no session tickets (a resumed session skips the
 * certificate check; every CONNECT is admitted again anyway).
 */
export async function gatewayTlsMaterial(
  fleet: FleetServices,
  identity: { key: string; cert: string },
  allowLocalCas: boolean,
  realNow: Date = new Date(),
): Promise<GatewayTlsMaterial> {
  const cas = await gatewayClientCas(fleet, allowLocalCas);
  const crls: PublishedCrl[] = [];
  let withoutCrls: string | undefined;
  for (const ca of cas) {
    try {
      const crl = await currentCrl(fleet, ca.id);
      // OpenSSL judges CRLs by the real time: one not valid now would refuse everyone.
      if (crl.thisUpdate.getTime() > realNow.getTime() + 60_000 || crl.nextUpdate.getTime() <= realNow.getTime()) {
        withoutCrls = `the CRL of ${ca.id} is not valid now (${crl.thisUpdate.toISOString()} to ${crl.nextUpdate.toISOString()})`;
        break;
      }
      crls.push(crl);
    } catch (e) {
      withoutCrls = `no CRL for ${ca.id}: ${(e as Error).message}`;
      break;
    }
  }
  return {
    options: {
      key: identity.key,
      cert: identity.cert,
      ca: cas.map((c) => c.pem),
      ...(withoutCrls ? {} : { crl: crls.map(crlPem) }),
      minVersion: "TLSv1.2",
      secureOptions: constants.SSL_OP_NO_TICKET,
    },
    cas: cas.map((c) => c.id),
    ...(withoutCrls ? { withoutCrls } : {}),
  };
}
