// Enrollment by operator approval: a request without credentials waits (approval-requests.ts) until an
// operator approves or denies it, for its key; the robot polls with the same CSR.
import { DerError } from "../../../der/reader.js";
import { CsrError, csrDer, decodeCsr } from "../../../x509/csr.js";
import { commonNameOf } from "../../../x509/name.js";
import { ApprovalAlreadyIssued, CsrInvalid, InvalidArgument, NotPermitted } from "../../errors.js";
import type { FleetServices } from "../../services.js";
import { assertDeviceId, issueForKey, keyFromCsr } from "../../issue/issuance.js";
import type { IssueCondition } from "../../issue/conditions.js";
import { POLL_SECONDS, expiryCutoff, fileApprovalRequest, keyFingerprint } from "../approval-requests.js";
import type { EnrollmentOutcome, Provisioner } from "../provisioner.js";
import { redeliver } from "../redelivery.js";
import { sourceContext, type RequestSource } from "../request-source.js";

export interface ApprovalEnrollment {
  deviceId: string;
  csr: Buffer | string;
  source: RequestSource;
  now?: Date;
}

/**
 * Not exported: reached through approvalProvisioner, after the switch (enrollment.ts). `retried`:
 * this is the one retry after a concurrent poll collected the approval first.
 */
async function approvalEnrollment(fleet: FleetServices, req: ApprovalEnrollment, retried = false): Promise<EnrollmentOutcome> {
  assertDeviceId(req.deviceId);
  const now = req.now ?? fleet.clock.now();
  // The CSR's signature proves the requester holds the key the operator will approve.
  const key = await keyFromCsr(req.csr);
  const fingerprint = keyFingerprint(key.spki);
  const latest = await fleet.store.ops.enrollment.latestRequest(req.deviceId, fingerprint);
  const pending = (requestId: string): EnrollmentOutcome => ({
    status: "pending",
    deviceId: req.deviceId,
    requestId,
    retryAfterSeconds: POLL_SECONDS,
  });

  // A denial is for this key: the device may still ask with another one.
  if (latest?.status === "denied")
    throw new NotPermitted(
      "enrollment-denied",
      `the enrollment request of "${req.deviceId}" for key ${fingerprint} was denied by an operator`,
    );
  if (latest?.status === "approved") {
    const condition: IssueCondition = { kind: "approval", requestId: latest.id };
    try {
      const context = sourceContext(req.source, { provisioner: "approval", request: latest.id });
      const certificate = await issueForKey(
        fleet,
        { deviceId: req.deviceId, actor: `approval:${latest.decided_by}`, now, context, condition },
        key,
      );
      return { status: "issued", certificate };
    } catch (e) {
      // A concurrent poll collected the approval first: answer with the certificate it got.
      if (e instanceof ApprovalAlreadyIssued && !retried) return approvalEnrollment(fleet, { ...req, now }, true);
      throw e;
    }
  }
  // An expired request is gone (purged when this one is filed): the robot asks anew.
  if (latest?.status === "pending" && latest.created_at >= expiryCutoff(fleet, now)) return pending(latest.id);
  if (latest?.status === "issued" && latest.certificate_serial) {
    // A poll repeated after the answer was lost gets the same certificate again, unless it was
    // revoked or held since, its CA retired or the device held: checked as for any redelivery.
    const certificate = await redeliver(fleet, {
      serial: latest.certificate_serial,
      deviceId: req.deviceId,
      key,
      actor: `approval:${req.deviceId}`,
      context: sourceContext(req.source, { provisioner: "approval", request: latest.id }),
      refusal: () => new NotPermitted("key-mismatch", `the certificate of request ${latest.id} is not for key ${fingerprint}`),
      now,
    });
    return { status: "issued", certificate };
  }
  const { requestId } = await fileApprovalRequest(fleet, { ...req, csr: csrDer(req.csr) }, key, fingerprint, now);
  return pending(requestId);
}

/** EST approval requests carry no credentials: the device id is the CSR's commonName. */
export function requestedDeviceId(csr: Buffer | string): string {
  let cn: string | undefined;
  try {
    cn = commonNameOf(decodeCsr(csr).subject);
  } catch (e) {
    if (e instanceof CsrError) throw new CsrInvalid(e.reason, e.message);
    // A subject string that is not text (an odd-length BMPString, say) is the requester's error.
    if (e instanceof DerError) throw new CsrInvalid("malformed", `CSR: malformed subject: ${e.message}`);
    throw e;
  }
  if (!cn) throw new InvalidArgument("the CSR has no commonName to take the device id from");
  assertDeviceId(cn);
  return cn;
}

export const approvalProvisioner: Provisioner = {
  name: "approval",
  operation: "enroll",
  switch: "approval",
  failures: "none",
  credential: false,
  asks: "an operator's approval (name the device)",
  presents: (r) => r.token === undefined && r.clientCertificate === undefined && (r.deviceId !== undefined || !!r.deviceIdInCsr),
  failureVia: (transport) => `${transport}-approval`,
  async run(fleet, r, { now }) {
    const deviceId = r.deviceId ?? requestedDeviceId(r.csr);
    return approvalEnrollment(fleet, { deviceId, csr: r.csr, source: r.source, now });
  },
};
