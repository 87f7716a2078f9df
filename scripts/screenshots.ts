// `npm run screenshots`: starts a throwaway demo fleet (a dozen robots in three groups, some
// enrolled and connected to the gateway, one revoked, one held, a denied publish), logs in to the
// dashboard in headless Chromium through a one-time login link, and saves a PNG of each main page
// to docs/screenshots/. Needs Debian's chromium (/usr/bin/chromium) or CHROMIUM=path.
import { createHash, X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mqtt from "mqtt";
import { chromium } from "playwright-core";
import { enroll } from "../src/agent/enroll.js";
import { initFleet } from "../src/authority/ca/init.js";
import { addDevice } from "../src/authority/devices.js";
import { createLoginLink } from "../src/authority/identities/operator-sessions.js";
import { holdDevice, revokeDevice } from "../src/authority/status/revocation.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer } from "../src/server.js";
import { sha256Fingerprint } from "../src/x509/certificate.js";
import { fromPem } from "../src/x509/pem.js";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const OUT = join(import.meta.dirname, "..", "docs", "screenshots");
const GROUPS = ["warehouse-a", "warehouse-b", "lab"];

async function main(): Promise<void> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium, or set CHROMIUM`);
  const tmp = mkdtempSync(join(tmpdir(), "fleetpki-screenshots-"));
  const dir = join(tmp, "fleet");
  const clients: mqtt.MqttClient[] = [];
  await initFleet({ dir, name: "Demo Robots", domain: "demo.fleet.invalid", serverNames: ["localhost", "127.0.0.1"] });
  const server = await startFleetServer({
    dir,
    registrationListen: "127.0.0.1:0",
    statusListen: "127.0.0.1:0",
    gatewayListen: "127.0.0.1:0",
    adminListen: "127.0.0.1:0",
    logger: silentLogger,
  });
  try {
    const fleet = server.fleet;
    const rootPem = readFileSync(join(dir, "ca", "root", "cert.pem"), "utf8");
    const rootFingerprint = `sha256:${sha256Fingerprint(fromPem(rootPem, ["CERTIFICATE"]))}`;
    for (let i = 1; i <= 12; i++) {
      const id = `robot-${String(i).padStart(2, "0")}`;
      const enrolled = i <= 8;
      const added = await addDevice(fleet, {
        id,
        group: GROUPS[i % GROUPS.length],
        labels: { zone: i % 2 ? "a" : "b" },
        actor: "demo",
        ...(enrolled ? { token: {} } : {}),
      });
      if (!enrolled) continue;
      const agentDir = join(tmp, `agent-${id}`);
      await enroll({
        server: `https://127.0.0.1:${server.registration!.port}`,
        rootFingerprint,
        deviceId: id,
        mode: { kind: "token", token: added.token!.token },
        dir: agentDir,
      });
      if (i > 5) continue;
      const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${server.gateway!.address.port}`, {
        clientId: id,
        key: readFileSync(join(agentDir, "key.pem")),
        cert: readFileSync(join(agentDir, "cert.pem")),
        ca: readFileSync(join(agentDir, "ca.pem")),
        servername: "localhost",
        reconnectPeriod: 0,
      });
      clients.push(client);
      await client.publishAsync(`fleet/${id}/telemetry`, "{}", { qos: 1 });
    }
    // A robot publishing on another's command topic: denied by the default policy, audited.
    await clients[0]!.publishAsync("fleet/robot-02/cmd/stop", "x", { qos: 1 }).catch(() => undefined);
    await revokeDevice(fleet, { deviceId: "robot-07", reason: "keyCompromise", actor: "operator:admin" });
    await holdDevice(fleet, { deviceId: "robot-08", actor: "operator:admin" });
    await server.changes.poll();

    const serverCert = readFileSync(join(dir, "server", "cert.pem"), "utf8");
    const spki = new X509Certificate(serverCert).publicKey.export({ type: "spki", format: "der" });
    const pin = createHash("sha256").update(spki).digest("base64");
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", `--ignore-certificate-errors-spki-list=${pin}`],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
      const base = `https://localhost:${server.admin!.address.port}`;
      const { token } = await createLoginLink(fleet, { name: "admin", actor: "demo" });
      await page.goto(`${base}/login#${token}`);
      await page.locator("#operator").waitFor();
      mkdirSync(OUT, { recursive: true });
      const shots: [string, string][] = [
        ["overview", "/"],
        ["devices", "/devices"],
        ["device", "/devices/robot-03"],
        ["approvals", "/approvals"],
        ["cas", "/cas"],
        ["audit", "/audit"],
        ["policy", "/policy"],
        ["gateway", "/gateway"],
      ];
      for (const [name, path] of shots) {
        await page.goto(`${base}${path}`);
        await page.locator("main h1").first().waitFor();
        await page.waitForLoadState("networkidle");
        if (name === "policy") {
          // Show a decision: robot-01 may not command robot-02.
          await page.fill('#policy-test input[name="name"]', "robot-01");
          await page.fill('#policy-test input[name="topic"]', "fleet/robot-02/cmd/stop");
          await page.click('#policy-test button[type="submit"]');
          await page.locator("#policy-decision").waitFor();
        }
        const file = join(OUT, `${name}.png`);
        await page.screenshot({ path: file });
        console.log(`wrote ${file}`);
      }
    } finally {
      await browser.close();
    }
  } finally {
    for (const c of clients) c.end(true);
    await server.close();
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`screenshots: ${(e as Error).message}`);
  process.exit(1);
});
