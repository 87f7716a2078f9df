// The documents of a keystore: permissions.xml from an SROS2 policy model, S/MIME signatures by
// the permissions CA, and sros2's default ("allow-all") policy.
//
// TEMPORARY (until ros2-xml's src/ros2/permissions.ts and ros2-smime's src/x509/smime.ts are merged):
// rendering runs sros2's permissions.xsl with xsltproc and signing runs `openssl smime -sign`. Both are
// replaced by the TypeScript implementations at merge; nothing else in src/ros2/keystore/ changes.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InvalidArgument } from "../../authority/errors.js";
import { toPem } from "../../x509/pem.js";
import type { Signer } from "../../x509/certificate.js";
import type { Enclave, PermissionsParameters, Sros2Policy } from "../policy-model.js";

/** sros2's defaults/policy.xml with the enclave path set: every topic, service and action allowed. */
export function allowAllPolicy(path: string): Sros2Policy {
  return {
    enclaves: [
      {
        path,
        profileSets: [
          [
            {
              ns: "/",
              node: "default",
              rules: [
                { kind: "topics", publish: "ALLOW", subscribe: "ALLOW", names: ["/*"] },
                { kind: "services", reply: "ALLOW", request: "ALLOW", names: ["/*"] },
                { kind: "actions", call: "ALLOW", execute: "ALLOW", names: ["/*"] },
              ],
            },
          ],
        ],
      },
    ],
  };
}

/** The one enclave of `policy` at `path`, as a policy of its own (what ros2_enclaves keeps), or undefined. */
export function enclaveOf(policy: Sros2Policy, path: string): Sros2Policy | undefined {
  const enclave: Enclave | undefined = policy.enclaves.find((e) => e.path === path);
  return enclave ? { enclaves: [enclave] } : undefined;
}

/** Reads an SROS2 policy file (XInclude, schema). */
export function readPolicyFile(file: string): Sros2Policy {
  throw new InvalidArgument(`--policy ${file}: reading SROS2 policy files arrives with the ros2-xml branch; use --allow-all for now`);
}

const XSL = "../shared/testdata/sros2/sros2/sros2/policy/templates/dds/permissions.xsl";

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/"/g, "&quot;");
function policyXml(policy: Sros2Policy): string {
  const rule = (r: Sros2Policy["enclaves"][number]["profileSets"][number][number]["rules"][number]) => {
    const q = Object.entries(r)
      .filter(([k]) => k !== "kind" && k !== "names")
      .map(([k, v]) => ` ${k}="${v}"`)
      .join("");
    const item = r.kind.slice(0, -1);
    return `<${r.kind}${q}>${r.names.map((n) => `<${item}>${esc(n)}</${item}>`).join("")}</${r.kind}>`;
  };
  const sets = (e: Enclave) =>
    e.profileSets
      .map(
        (ps) =>
          `<profiles>${ps.map((p) => `<profile ns="${esc(p.ns)}" node="${esc(p.node)}">${p.rules.map(rule).join("")}</profile>`).join("")}</profiles>`,
      )
      .join("");
  return `<?xml version="1.0"?><policy version="0.2.0"><enclaves>${policy.enclaves
    .map((e) => `<enclave path="${esc(e.path)}">${sets(e)}</enclave>`)
    .join("")}</enclaves></policy>`;
}

/** permissions.xml for the enclaves of `policy` (sros2's permissions.xsl output). */
export function renderEnclavePermissions(policy: Sros2Policy, params: PermissionsParameters): string {
  const tmp = mkdtempSync(join(tmpdir(), "fleetpki-ros2-"));
  try {
    writeFileSync(join(tmp, "policy.xml"), policyXml(policy));
    const r = spawnSync(
      "xsltproc",
      [
        ...["--stringparam", "not_valid_before", params.notBefore, "--stringparam", "not_valid_after", params.notAfter],
        ...["--param", "allow_ros_discovery_topic", params.allowRosDiscoveryTopic ? "1" : "0", XSL, join(tmp, "policy.xml")],
      ],
      { encoding: "utf8" },
    );
    if (r.status !== 0) throw new Error(`xsltproc failed: ${r.stderr}`);
    return r.stdout.replace(/<id>0<\/id>/g, `<id>${params.domainId}</id>`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** S/MIME (PKCS#7 detached, text) signature of `content` by the CA, as sros2 writes its .p7s files. */
export function signDocument(content: Buffer, signerCertDer: Buffer, signer: Signer): string {
  const tmp = mkdtempSync(join(tmpdir(), "fleetpki-ros2-"));
  try {
    writeFileSync(join(tmp, "content"), content);
    writeFileSync(join(tmp, "cert.pem"), toPem("CERTIFICATE", signerCertDer));
    // The key file in the 0700 temporary directory is encrypted under a one-off passphrase (environment).
    const pass = randomBytes(24).toString("hex");
    writeFileSync(join(tmp, "key.pem"), signer.key.export({ type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase: pass }), {
      mode: 0o600,
    });
    const r = spawnSync(
      "openssl",
      [
        ...["smime", "-sign", "-text", "-md", "sha256", "-signer", join(tmp, "cert.pem"), "-inkey", join(tmp, "key.pem")],
        ...["-passin", "env:FLEETPKI_SIGN_PASS", "-in", join(tmp, "content")],
      ],
      { encoding: "utf8", env: { ...process.env, FLEETPKI_SIGN_PASS: pass } },
    );
    if (r.status !== 0) throw new Error(`openssl smime -sign failed`);
    return r.stdout;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
