// How the registration server answers an agent's enclave renewal that the domain refuses because the
// enclave's subject is live elsewhere: 409, without the other keystore's directory or device.
import assert from "node:assert/strict";
import { test } from "node:test";
import { toProblem } from "../src/enroll/errors.js";
import { EnclaveSubjectTaken } from "../src/ros2/keystore/errors.js";

test("a taken enclave subject is a 409 that names neither the other keystore's directory nor its device", () => {
  const e = new EnclaveSubjectTaken(
    "/robot_1/base",
    { keystoreId: "k-1", dir: "/srv/secret-keystores/a", deviceId: "robot-9" },
    "/robot_1/x",
  );
  assert.match(e.message, /secret-keystores/); // the CA-side message does name them
  const p = toProblem(e);
  assert.equal(p.status, 409);
  assert.equal(p.type, "enclave-subject-taken");
  assert.doesNotMatch(p.message, /secret-keystores|robot-9|k-1/);
});
