// Enrollment with a one-time token (`fleetpki device add`, `token create`), named with its device id.
import { AuthenticationFailed } from "../../errors.js";
import type { FleetServices } from "../../services.js";
import { assertDeviceId, issueForKey, keyFromCsr, type DeviceCertificate, type SubjectKey } from "../../issue/issuance.js";
import { issued, type EnrollmentRequest, type Provisioner } from "../provisioner.js";
import { redeliver } from "../redelivery.js";
import { sourceContext, type RequestSource } from "../request-source.js";
import { certificateOfSpentToken, checkToken } from "../tokens.js";

export interface TokenEnrollment {
  deviceId: string;
  token: string;
  csr: Buffer | string;
  source: RequestSource;
  /** Check the token before the CSR (a source over its failure limit): a wrong token then costs no CSR check. */
  credentialFirst?: boolean;
  now?: Date;
}

/** Not exported: Enrollment and enrollWithToken (enrollment.ts) reach it through tokenProvisioner, after the switch. */
async function tokenEnrollment(fleet: FleetServices, req: TokenEnrollment): Promise<DeviceCertificate> {
  assertDeviceId(req.deviceId);
  const now = req.now ?? fleet.clock.now();
  // The token is read while the CSR signature is checked on the thread pool; a wrong token still
  // costs no CA signature, and the CSR's own error wins only when the token is good. With
  // credentialFirst (a source over its failure limit) a wrong token costs no CSR check either.
  const tokenCheck = checkToken(fleet, req.deviceId, req.token, now);
  if (req.credentialFirst)
    await tokenCheck.catch((e: unknown) => {
      if (!isSpentToken(e)) throw e;
    });
  const [tokenChecked, csrChecked] = await Promise.allSettled([tokenCheck, keyFromCsr(req.csr)]);
  if (tokenChecked.status === "rejected") {
    if (isSpentToken(tokenChecked.reason) && csrChecked.status === "fulfilled")
      return retryWithSpentToken(fleet, req, csrChecked.value, tokenChecked.reason, now);
    throw tokenChecked.reason;
  }
  if (csrChecked.status === "rejected") throw csrChecked.reason;
  try {
    // The token id lets `audit verify` replay which token each enrollment spent.
    const ctx = sourceContext(req.source, { provisioner: "token", token_id: tokenChecked.value.tokenId });
    const issue = { deviceId: req.deviceId, actor: `token:${req.deviceId}`, now, context: ctx, condition: tokenChecked.value };
    return await issueForKey(fleet, issue, csrChecked.value);
  } catch (e) {
    // A concurrent request with this token won: the same key gets the certificate it got.
    if (isSpentToken(e)) return retryWithSpentToken(fleet, req, csrChecked.value, e, now);
    throw e;
  }
}

function isSpentToken(e: unknown): e is AuthenticationFailed {
  return e instanceof AuthenticationFailed && e.reason === "token-used";
}

/** A spent token asks again: the same key gets the certificate the token paid for; any other key gets `refusal` ("token used"). */
async function retryWithSpentToken(
  fleet: FleetServices,
  req: TokenEnrollment,
  key: SubjectKey,
  refusal: AuthenticationFailed,
  now: Date,
): Promise<DeviceCertificate> {
  const serial = await certificateOfSpentToken(fleet, req.deviceId, req.token);
  if (serial === undefined) throw refusal;
  const context = sourceContext(req.source, { provisioner: "token" });
  return redeliver(fleet, { serial, deviceId: req.deviceId, key, actor: `token:${req.deviceId}`, context, refusal: () => refusal, now });
}

export const tokenProvisioner: Provisioner = {
  name: "token",
  operation: "enroll",
  switch: "token",
  failures: "count",
  credential: true,
  asks: "the device id with its one-time token (HTTP Basic over EST)",
  presents: (r: EnrollmentRequest) => r.token !== undefined,
  failureVia: (transport) => (transport === "est" ? "est-basic" : `${transport}-token`),
  async run(fleet, r, { now, credentialFirst }) {
    // A transport that cannot carry a device id with the token asks for it before this point.
    const deviceId = r.deviceId ?? "";
    return issued(await tokenEnrollment(fleet, { deviceId, token: r.token!, csr: r.csr, source: r.source, credentialFirst, now }));
  },
};
