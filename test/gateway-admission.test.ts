// admit() on its own: certificates made by openssl (SAN URIs as an attacker would write them),
// the fleet's in-memory status replaced by a table, every refusal and its CONNACK class.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { admit, PeerCertificates, type AdmissionCertificate, type AdmissionFacts } from "../src/access/admission.js";
import { fromPem } from "../src/x509/pem.js";
import { openssl, tempDir } from "./helpers.js";

const DOMAIN = "fleet.example";

describe("admission", () => {
  const tmp = tempDir("fleetpki-admission-");
  const certs: Record<string, Buffer> = {};

  /** A self-signed certificate with these SAN URIs (the facts table decides what the fleet knows of it). */
  function cert(name: string, uris: string[]): Buffer {
    const out = join(tmp.path, `${name}.pem`);
    const san = uris.length ? ["-addext", `subjectAltName=${uris.map((u) => `URI:${u}`).join(",")}`] : [];
    const r = openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
      join(tmp.path, `${name}.key`), "-out", out, "-subj", `/CN=${name}`, "-days", "1", ...san]); // prettier-ignore
    assert.equal(r.status, 0, r.stderr);
    return fromPem(readFileSync(out, "utf8"), ["CERTIFICATE"]);
  }

  before(() => {
    certs.device = cert("robot-1", [`spiffe://${DOMAIN}/device/robot-1`]);
    certs.two = cert("two", [`spiffe://${DOMAIN}/device/robot-1`, `spiffe://${DOMAIN}/device/robot-2`]);
    certs.foreign = cert("foreign", ["spiffe://other.example/device/robot-1"]);
    certs.none = cert("none", []);
    certs.badName = cert("bad", [`spiffe://${DOMAIN}/device/Robot_1!`]);
    certs.service = cert("telemetry", [`spiffe://${DOMAIN}/service/telemetry`]);
    certs.operator = cert("alice", [`spiffe://${DOMAIN}/operator/alice`]);
  });
  after(() => tmp.cleanup());

  /** Facts: what the fleet knows of each certificate (by DER) and device. */
  function facts(
    known: Map<Buffer, Partial<AdmissionCertificate>>,
    devices: Record<string, string> = { "robot-1": "active" },
  ): AdmissionFacts {
    return {
      certificate: (query) => {
        if (!("der" in query)) {
          const byId = [...known.values()].find((e) => (e.serial ?? "01") === query.serial && e.issuerCa === query.issuerCa);
          return byId ? { status: "good", serial: "01", ...byId } : { status: "unknown", serial: query.serial };
        }
        const entry = [...known].find(([k]) => k.equals(Buffer.from(query.der)))?.[1];
        return entry ? { status: "good", serial: "01", ...entry } : { status: "unknown", serial: "01" };
      },
      device: (id) => ({ status: devices[id] ?? "unknown", group: "lab", labels: { site: "berlin" } }),
    };
  }
  const good = (c: Buffer, e: Partial<AdmissionCertificate>) => new Map([[c, e]]);
  const deviceEntry = { issuerCa: "devices", kind: "device", deviceId: "robot-1" };
  const ask = (der: Buffer | undefined, clientId: string, f: AdmissionFacts, allowLocalCas = false) =>
    admit({ certificateDer: der, clientId, domain: DOMAIN, allowLocalCas }, f);
  const refusal = (r: ReturnType<typeof admit>) => (r.admitted ? "admitted" : `${r.refusal.kind}/${r.refusal.code}`);

  it("admits an active device with its registry attributes, only under its own client id", () => {
    const f = facts(good(certs.device!, deviceEntry));
    const r = ask(certs.device, "robot-1", f);
    assert.ok(r.admitted);
    assert.deepEqual(r.identity, { kind: "device", id: "robot-1", group: "lab", labels: { site: "berlin" } });
    assert.equal(r.subject, "device:robot-1");
    assert.equal(refusal(ask(certs.device, "robot-1-x", f)), "identifier-rejected/client-id");
    assert.equal(refusal(ask(certs.device, "", f)), "identifier-rejected/client-id");
  });

  it("refuses certificates without exactly one SAN URI of the fleet's form", () => {
    const f = facts(new Map());
    assert.equal(refusal(ask(undefined, "robot-1", f)), "bad-credentials/no-certificate");
    assert.equal(refusal(ask(certs.none, "robot-1", f)), "bad-credentials/no-identity");
    assert.equal(refusal(ask(certs.two, "robot-1", f)), "bad-credentials/no-identity");
    assert.equal(refusal(ask(certs.foreign, "robot-1", f)), "bad-credentials/no-identity");
    assert.equal(refusal(ask(certs.badName, "robot-1", f)), "bad-credentials/no-identity");
    assert.equal(refusal(ask(Buffer.from("not a certificate"), "robot-1", f)), "bad-credentials/bad-certificate");
  });

  it("refuses a certificate the fleet did not issue, or issued by the wrong CA or to someone else", () => {
    assert.equal(refusal(ask(certs.device, "robot-1", facts(new Map()))), "bad-credentials/unknown-certificate");
    // A device SAN on a certificate of the services CA (say a server certificate): no device identity.
    const asDevice = (e: Partial<AdmissionCertificate>) =>
      refusal(ask(certs.device, "robot-1", facts(good(certs.device!, { ...deviceEntry, ...e }))));
    assert.equal(asDevice({ issuerCa: "services" }), "bad-credentials/wrong-ca");
    assert.equal(asDevice({ kind: "server" }), "bad-credentials/wrong-ca");
    assert.equal(asDevice({ deviceId: "robot-2" }), "bad-credentials/subject-mismatch");
    // Local CAs only when allowed.
    const local = facts(good(certs.device!, { ...deviceEntry, issuerCa: "local-line1", kind: "factory" }));
    assert.equal(refusal(ask(certs.device, "robot-1", local)), "bad-credentials/wrong-ca");
    assert.equal(refusal(ask(certs.device, "robot-1", local, true)), "admitted");
  });

  it("refuses revoked, held and expired certificates and devices that are not active (not authorized)", () => {
    for (const status of ["revoked", "held", "expired"] as const)
      assert.equal(
        refusal(ask(certs.device, "robot-1", facts(good(certs.device!, { ...deviceEntry, status })))),
        `not-authorized/${status}`,
      );
    for (const status of ["held", "revoked", "removed", "disabled", "unknown"])
      assert.equal(
        refusal(ask(certs.device, "robot-1", facts(good(certs.device!, deviceEntry), { "robot-1": status }))),
        "not-authorized/device-inactive",
      );
  });

  it("a certificate read once (PeerCertificates) still gets its status from the facts at every decision", () => {
    const peers = new PeerCertificates(DOMAIN);
    const entry: Partial<AdmissionCertificate> = { ...deviceEntry, serial: "0a" };
    const known = good(certs.device!, entry);
    const devices: Record<string, string> = { "robot-1": "active" };
    const f = facts(known, devices);
    const askCached = (der: Buffer) => admit({ certificate: peers.get(der), clientId: "robot-1", domain: DOMAIN, allowLocalCas: false }, f);
    assert.equal(refusal(askCached(certs.device!)), "admitted");
    // The same bytes again: the same reading, now asked by serial.
    assert.equal(peers.get(Buffer.from(certs.device!)), peers.get(certs.device!));
    assert.deepEqual(peers.get(certs.device!).issued, { serial: "0a", issuerCa: "devices" });
    for (const status of ["revoked", "held", "expired"] as const) {
      entry.status = status;
      assert.equal(refusal(askCached(certs.device!)), `not-authorized/${status}`);
    }
    entry.status = "good";
    devices["robot-1"] = "removed";
    assert.equal(refusal(askCached(certs.device!)), "not-authorized/device-inactive");
    devices["robot-1"] = "active";
    // Forgotten by the fleet (entry gone): unknown, whatever was read before.
    known.clear();
    assert.equal(refusal(askCached(certs.device!)), "bad-credentials/unknown-certificate");
    // Other bytes never share a reading: a different certificate claiming the same SAN is asked by its DER.
    assert.notEqual(peers.get(certs.two!), peers.get(certs.device!));
    assert.equal(refusal(askCached(certs.two!)), "bad-credentials/no-identity");
  });

  it("services and operators: their CA and recorded name, client id NAME or NAME-...", () => {
    const service = facts(good(certs.service!, { issuerCa: "services", kind: "service", subjectId: "telemetry" }));
    assert.equal(refusal(ask(certs.service, "telemetry", service)), "admitted");
    assert.equal(refusal(ask(certs.service, "telemetry-7", service)), "admitted");
    assert.equal(refusal(ask(certs.service, "telemetry2", service)), "identifier-rejected/client-id");
    // The services CA also signs servers, OCSP responders and audit keys: none of them is a service identity.
    for (const kind of ["server", "ocsp-responder", "audit"])
      assert.equal(
        refusal(ask(certs.service, "telemetry", facts(good(certs.service!, { issuerCa: "services", kind, subjectId: "telemetry" })))),
        "bad-credentials/wrong-ca",
      );
    assert.equal(
      refusal(ask(certs.service, "telemetry", facts(good(certs.service!, { issuerCa: "services", kind: "service", subjectId: "other" })))),
      "bad-credentials/subject-mismatch",
    );
    const operator = facts(good(certs.operator!, { issuerCa: "operators", kind: "operator", subjectId: "alice" }));
    const r = ask(certs.operator, "alice-console", operator);
    assert.ok(r.admitted);
    // No stored roles yet: an operator has none (a role taken from its name would go to any certificate of that name).
    assert.deepEqual(r.identity, { kind: "operator", name: "alice", role: null });
    const wrongCa = facts(good(certs.operator!, { issuerCa: "devices", kind: "operator", subjectId: "alice" }));
    assert.equal(refusal(ask(certs.operator, "alice", wrongCa)), "bad-credentials/wrong-ca");
  });
});
