// A robot's agent renews one of its SROS2 enclaves (POST /api/v1/ros2/enclaves/renew): the device
// proves itself with its current operational certificate over mTLS, exactly as for /api/v1/renew;
// the enclave must be linked to that device (`ros2 enclave create --device`) and not revoked
// (renewEnclave decides that, and records `ros2.enclave.renew` with the device as actor). The key is
// the robot's, from the CSR: only P-256, the one curve DDS Security's PKI-DH and fleetpki share.
import { AuthenticationFailed, AuthorityError, DeviceNotActive, KeyTypeNotAllowed, UnknownDevice } from "../errors.js";
import { renewEnclave, type RenewedEnclave } from "../../ros2/keystore/enclaves.js";
import type { FleetServices } from "../services.js";
import { keyFromCsr } from "../issue/issuance.js";
import { usablePresentedCertificate, type ClientCertificate } from "./presented-certificate.js";
import { sourceContext, type RequestSource } from "./request-source.js";

export interface EnclaveRenewalRequest {
  clientCertificate: ClientCertificate | undefined;
  keystoreId: string;
  /** "/ns/node" */
  enclave: string;
  /** DER PKCS#10. */
  csr: Buffer;
  source: RequestSource;
  now?: Date;
}

/** What the device gets: the renewed enclave's files (the domain's RenewedEnclave without its bookkeeping). */
export type EnclaveRenewalAnswer = Omit<RenewedEnclave, "serial" | "notBefore" | "notAfter"> & { deviceId: string };

/** A keystore id no keystore of this fleet has: to the device, an unknown enclave (404) like any other. */
export class UnknownEnclaveKeystore extends AuthorityError {
  readonly code = "unknown-enclave";
  constructor(id: string) {
    super(`no keystore ${id} in this fleet (the "keystore" of .fleetpki-keystore.json)`);
  }
}

/** The domain's renewal of an enclave for a CSR (injected: tests and the transport pass renewEnclaveForCsr). */
export type RenewEnclaveFn = (
  fleet: FleetServices,
  req: { keystoreId: string; path: string; csrDer: Buffer; deviceId: string; actor: string; now: Date; context: Record<string, unknown> },
) => Promise<Omit<EnclaveRenewalAnswer, "deviceId">>;

/** Authenticates the device, checks it is active and the key is P-256, then renews through `renew`. */
export async function renewDeviceEnclave(
  fleet: FleetServices,
  req: EnclaveRenewalRequest,
  renew: RenewEnclaveFn,
): Promise<EnclaveRenewalAnswer> {
  const now = req.now ?? fleet.clock.now();
  if (!req.clientCertificate)
    throw new AuthenticationFailed(
      "certificate-required",
      "enclave renewal needs the current device certificate as TLS client certificate",
    );
  const known = await usablePresentedCertificate(
    fleet,
    req.clientCertificate,
    "the client certificate",
    "device",
    "only operational device certificates renew enclaves; factory certificates enroll",
    now,
  );
  if (!(await fleet.store.ops.ros2.getKeystore(req.keystoreId))) throw new UnknownEnclaveKeystore(req.keystoreId);
  const status = (await fleet.store.ops.devices.get(known.deviceId))?.status;
  if (status === undefined) throw new UnknownDevice(known.deviceId);
  if (status !== "active") throw new DeviceNotActive(known.deviceId, status);
  const key = await keyFromCsr(req.csr);
  if (key.keyType !== "p256")
    throw new KeyTypeNotAllowed(`an enclave key must be P-256 (DDS Security PKI-DH); the CSR carries a ${key.keyType} key`);
  const context = sourceContext(req.source, { presented: known.row.serial });
  const answer = await renew(fleet, {
    keystoreId: req.keystoreId,
    path: req.enclave,
    csrDer: req.csr,
    deviceId: known.deviceId,
    actor: `device:${known.deviceId}`,
    now,
    context,
  });
  return { deviceId: known.deviceId, ...answer };
}

/** ros2-keystore's renewEnclave for the robot's CSR: it decides ownership, revocation, and audits ros2.enclave.renew. */
export const renewEnclaveForCsr: RenewEnclaveFn = async (fleet, req) => {
  const r = await renewEnclave(fleet, {
    keystoreId: req.keystoreId,
    path: req.path,
    csrDer: req.csrDer,
    deviceId: req.deviceId,
    actor: req.actor,
  });
  return {
    certificatePem: r.certificatePem,
    permissionsXml: r.permissionsXml,
    permissionsP7s: r.permissionsP7s,
    governanceP7s: r.governanceP7s,
    identityCaPem: r.identityCaPem,
    permissionsCaPem: r.permissionsCaPem,
    crlPem: r.crlPem,
  };
};
