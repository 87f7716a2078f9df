// Composition root: configuration -> services -> listeners.
import { X509Certificate, createPublicKey, type KeyObject } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { LISTENERS, type Listener } from "./listeners.js";
import type { AddressInfo } from "node:net";
import { CheckpointSchedule } from "./authority/audit-checkpoints.js";
import { deviceClientCas } from "./authority/ca/cas.js";
import { ChangeFeed } from "./authority/events/change-feed.js";
import { CrlPublisher, ros2CrlValidityWarning } from "./authority/status/crls.js";
import { FleetServices } from "./authority/services.js";
import { OcspService } from "./authority/status/ocsp-responder.js";
import { CertificateStatus } from "./authority/status/certificate-status.js";
import { OperatorDirectory } from "./authority/identities/operators.js";
import { operatorSession } from "./authority/identities/operator-sessions.js";
import { followStatusChanges, type StatusFollowers } from "./authority/status/follow.js";
import { layout, ROS2_CAS } from "./authority/layout.js";
import { ensureServerCertificate } from "./authority/ca/server-certificate.js";
import { ServerCertificateRenewer } from "./authority/ca/server-renewal.js";
import type { Clock } from "./authority/clock.js";
import { ConfigError } from "./config/config.js";
import { parseDuration } from "./config/duration.js";
import { startRegistrationServer, type RegistrationTls } from "./enroll/server.js";
import { readPrivateKey } from "./keys/keys.js";
import { createLogger, type Logger } from "./log.js";
import { startStatusServer } from "./status/server.js";
import { FloodLimiter, floodSeam, parseGatewayLimits, type FloodSeamOptions } from "./gateway/limits.js";
import { LastSeenRecorder } from "./authority/last-seen.js";
import { startGateway, type GatewaySession, type PolicySource, type RunningGateway } from "./gateway/server.js";
import { openPolicySource, POLICY_FILE } from "./gateway/policy-source.js";
import type { OperatorRoles } from "./admin/context.js";
import { startAdminServer, type AdminTls, type RunningAdmin } from "./admin/server.js";
import { FleetMetrics } from "./metrics/metrics.js";

export { LISTENERS, type Listener };

export interface ServeOptions {
  dir: string;
  /** Overrides listen.registration, e.g. "127.0.0.1:0" in tests. */
  registrationListen?: string;
  /** Overrides listen.status. */
  statusListen?: string;
  /** Overrides listen.gateway. */
  gatewayListen?: string;
  /** Overrides listen.admin. */
  adminListen?: string;
  /** Operators' roles (tests); default: the fleet's operators table (OperatorDirectory). */
  operators?: OperatorRoles;
  /** The access policy (tests); default: <dir>/policy.yaml, reloaded when it changes. */
  policy?: PolicySource;
  /** Run only these listeners (`serve --only status` for scale-out); default all. */
  only?: readonly Listener[];
  logger?: Logger;
  /** Where "now" comes from (tests move time instead of waiting); the system clock by default. */
  clock?: Clock;
  /** How long /metrics reuses its count of devices and expiring certificates (tests: 0); default 5 s. */
  metricsCacheMs?: number;
}

export interface FleetServer {
  fleet: FleetServices;
  registration?: AddressInfo;
  status?: AddressInfo;
  /** The MQTT gateway: its address, counters and sessions. */
  gateway?: RunningGateway;
  /** The admin API and dashboard. */
  admin?: RunningAdmin;
  /** What /metrics serves (with the admin listener). */
  metrics?: FleetMetrics;
  /** Reads the audit log now instead of waiting for the next poll (tests). */
  changes: ChangeFeed;
  /** "Is this certificate / device good?", from memory kept current by `changes`. */
  certificateStatus: CertificateStatus;
  /** Operators' roles, from memory kept current by `changes`. */
  operators: OperatorDirectory;
  /**
   * Renews server/cert.pem at 2/3 of its lifetime (checked every minute; renewNow() after moving a
   * test clock). Every listener serving it registers its refresh with addListener. Absent when no
   * listener serves it (`serve --only status`).
   */
  serverCertificate?: ServerCertificateRenewer;
  close(): Promise<void>;
}

export function parseListen(value: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ConfigError(`${what} "${value}" must be HOST:PORT (e.g. 0.0.0.0:8443 or [::]:8443)`);
  return { host: (m[1] ?? m[2])!, port };
}

const serverFile = (fleet: FleetServices, name: string): string => fleet.path(`${layout.serverDir}/${name}`);

/** The server's key and certificate + chain as files hold them now (PEM). */
function serverIdentity(fleet: FleetServices): { key: string; cert: string } {
  const key = readPrivateKey(serverFile(fleet, "key.pem"), fleet.passphrase());
  const cert = readFileSync(serverFile(fleet, "cert.pem"), "utf8") + readFileSync(serverFile(fleet, "chain.pem"), "utf8");
  return { key: key.export({ type: "pkcs8", format: "pem" }).toString(), cert };
}

async function registrationTls(fleet: FleetServices): Promise<RegistrationTls> {
  return { ...serverIdentity(fleet), ca: await deviceClientCas(fleet) };
}

/** The server identity, and whose certificates may authenticate: operators (their CA and the root). */
async function adminTls(fleet: FleetServices): Promise<AdminTls> {
  const { chain, root } = await fleet.chainPem("operators");
  return { ...serverIdentity(fleet), ca: [root, chain] };
}

function certificateMatchesKey(certPem: string, keyPem: string): boolean {
  const spki = (k: KeyObject) => k.export({ type: "spki", format: "der" });
  try {
    return spki(new X509Certificate(certPem).publicKey).equals(spki(createPublicKey(keyPem)));
  } catch {
    return false;
  }
}

export async function startFleetServer(options: ServeOptions): Promise<FleetServer> {
  const fleet = await FleetServices.open(options.dir, { clock: options.clock });
  // Commits stop waiting for the disk on the event loop; answers still wait for it (Store.durable).
  fleet.store.useGroupSync();
  const logger = options.logger ?? createLogger("fleetpki");
  const only = new Set<Listener>(options.only ?? LISTENERS);
  const closers: (() => Promise<void>)[] = [];
  const closeAll = async () => {
    for (const close of closers.reverse()) await close().catch((e) => logger.warn({ err: (e as Error).message }, "closing failed"));
    await fleet.close();
  };
  let registration: AddressInfo | undefined;
  let status: AddressInfo | undefined;
  let gateway: RunningGateway | undefined;
  let admin: RunningAdmin | undefined;
  let metrics: FleetMetrics | undefined;
  let certificateStatus: CertificateStatus;
  let operators: OperatorDirectory;
  let serverCertificate: ServerCertificateRenewer | undefined;
  const changes = new ChangeFeed(fleet.store, undefined, (e) =>
    logger.warn({ err: (e as Error).message }, "following the audit log failed"),
  );
  try {
    await changes.start();
    closers.push(() => changes.stop());
    // Loaded after the feed started, so no event falls between the two; the status listener's parts join below.
    certificateStatus = await CertificateStatus.load(fleet);
    const followers: StatusFollowers = {
      status: certificateStatus,
      onUnreadableChange: ({ seq, action, problem }) =>
        logger.warn({ seq, action, problem }, "an audit row of a status change cannot be read; re-signing every CRL, OCSP cache dropped"),
    };
    followStatusChanges(fleet, changes, followers);
    // Also after the feed started; subscribed before the gateway, so a role is current when its sessions are re-admitted.
    operators = await OperatorDirectory.load(fleet);
    operators.follow(changes);
    const roles: OperatorRoles = options.operators ?? operators;
    // Signed checkpoints of the audit log: one now (an older fleet gets its audit key), then every interval, and at stop.
    const checkpoints = new CheckpointSchedule(fleet, parseDuration(fleet.config.audit.checkpoint_interval), (e) =>
      logger.warn({ err: (e as Error).message }, "writing an audit checkpoint failed"),
    );
    await checkpoints.start();
    closers.push(() => checkpoints.stop());
    // Served by the admin listener; the other listeners of this process report to it.
    if (only.has("admin")) {
      const m = (metrics = new FleetMetrics({ fleet, changes, certificateStatus, censusTtlMs: options.metricsCacheMs }));
      await m.start();
      closers.push(async () => m.stop());
    }

    // Without --only, a fleet without a policy file (made before the gateway) serves as before.
    const wantGateway = options.only ? only.has("gateway") : options.policy !== undefined || existsSync(join(fleet.dir, POLICY_FILE));
    if (only.has("registration")) {
      // server.names or server.public_url edited since the certificate was made: a new one, audited.
      const reissued = await ensureServerCertificate(fleet, { actor: "serve" });
      if (reissued)
        logger.warn(
          {
            serial: reissued.serial,
            replaces: reissued.previousSerial,
            names: reissued.names,
            ocsp: reissued.ocspUrl,
            reasons: reissued.reasons,
          },
          "server certificate reissued from the services CA",
        );
    }
    if (only.has("registration") || wantGateway || only.has("admin")) {
      // Before the listeners read it: a certificate already past 2/3 of its lifetime is renewed now.
      const renewer = new ServerCertificateRenewer(fleet, {
        renewed: (r) =>
          logger.info(
            { serial: r.serial, replaces: r.previousSerial, not_after: r.notAfter.toISOString() },
            "server certificate renewed from the services CA; listeners serve the new one",
          ),
        changed: (serial) => logger.info({ serial }, "server certificate changed on disk; listeners serve the new one"),
        blocked: (b) =>
          logger.warn(
            { serial: b.serial, not_after: b.notAfter.toISOString(), services_ca_not_after: b.servicesCaNotAfter.toISOString() },
            "the server certificate is due for renewal but the services CA ends first: renew the services CA",
          ),
        failed: (e) => logger.warn({ err: (e as Error).message }, "renewing the server certificate failed; retrying in a minute"),
      });
      closers.push(() => renewer.stop());
      await renewer.start();
      serverCertificate = renewer;
    }

    if (only.has("registration")) {
      const listen = parseListen(options.registrationListen ?? fleet.config.listen.registration, "listen.registration");
      let tls = await registrationTls(fleet);
      let current = tls.ca.join("");
      let currentCert = readFileSync(serverFile(fleet, "cert.pem"), "utf8");
      // CAs created or revoked by the CLI while we run change whom we accept; `fleetpki server
      // reissue` changes our own certificate.
      const refreshTls = async (): Promise<RegistrationTls | undefined> => {
        const ca = await deviceClientCas(fleet);
        const certPem = readFileSync(serverFile(fleet, "cert.pem"), "utf8");
        if (ca.join("") === current && certPem === currentCert) return undefined;
        if (certPem !== currentCert) {
          const identity = serverIdentity(fleet);
          // Mid-reissue the key may be new and the certificate old (or the reverse): wait for both.
          if (!identity.cert.startsWith(certPem) || !certificateMatchesKey(certPem, identity.key)) return undefined;
          currentCert = certPem;
          tls = { ...tls, ...identity };
          logger.info({ listener: "registration" }, "server certificate changed on disk; serving the new one");
        }
        current = ca.join("");
        tls = { ...tls, ca };
        return tls;
      };
      const running = await startRegistrationServer({
        fleet,
        logger: logger.child({ listener: "registration" }),
        tls,
        refreshTls,
        onFailure: metrics?.enrollmentFailed,
        ...listen,
      });
      closers.push(() => running.close());
      serverCertificate?.addListener(() => running.refreshTls());
      registration = running.address;
      logger.info({ address: registration }, "registration server listening");
    }

    if (only.has("status")) {
      const statusLogger = logger.child({ listener: "status" });
      const listen = parseListen(options.statusListen ?? fleet.config.listen.status, "listen.status");
      const crls = new CrlPublisher(fleet, (caId, e) => statusLogger.warn({ ca: caId, err: (e as Error).message }, "signing a CRL failed"));
      const ros2CrlWarning = ros2CrlValidityWarning(fleet.config);
      if (ros2CrlWarning) statusLogger.warn({ ca: ROS2_CAS.identity }, ros2CrlWarning);
      const ocsp = new OcspService(fleet, (e) => statusLogger.error({ err: (e as Error).message }, "answering an OCSP request failed"));
      // A revocation made anywhere (this process, the CLI, another server) reaches us through the audit log.
      Object.assign(followers, {
        crls,
        ocsp,
        onCrlsChanged: (cas: readonly string[]) =>
          statusLogger.info({ cas }, "certificate status changed; CRLs re-signed, OCSP cache dropped"),
      });
      await crls.start();
      closers.push(() => crls.stop());
      metrics?.attachCrls(crls);
      const running = await startStatusServer({ crls, ocsp, logger: statusLogger, onOcsp: metrics?.ocspAnswered, ...listen });
      closers.push(() => running.close());
      status = running.address;
      logger.info({ address: status }, "status server listening");
    }

    if (!wantGateway && !options.only)
      logger.warn(
        { policy: join(fleet.dir, POLICY_FILE) },
        "the MQTT gateway is not started: this fleet has no access policy (`fleetpki policy init` writes the default one)",
      );
    if (wantGateway) {
      const gatewayLogger = logger.child({ listener: "gateway" });
      const listen = parseListen(options.gatewayListen ?? fleet.config.listen.gateway, "listen.gateway");
      let policy = options.policy;
      let onPolicyReload: () => void = () => {};
      if (!policy) {
        const opened = await openPolicySource(fleet.dir, gatewayLogger, () => onPolicyReload());
        closers.push(async () => opened.close());
        policy = opened;
      }
      // Flood protection (src/gateway/limits.ts): its counters are the gateway's, known once it runs.
      const floodOptions: FloodSeamOptions = { log: (level, message, fields) => gatewayLogger[level](fields, message) };
      const flood = new FloodLimiter(parseGatewayLimits(fleet.config.gateway.limits), Date.now, (fn, ms) => {
        const timer = setTimeout(fn, ms);
        return () => clearTimeout(timer);
      });
      // Admissions become devices' "last seen" (batched writes; flushed after the gateway closed).
      const lastSeen = new LastSeenRecorder(fleet, gatewayLogger);
      closers.push(() => lastSeen.close());
      const running = await startGateway({
        lastSeen,
        limits: floodSeam<GatewaySession>(flood, floodOptions),
        fleet,
        logger: gatewayLogger,
        facts: certificateStatus,
        operatorRole: (name) => roles.role(name),
        changes,
        policy,
        identity: () => serverIdentity(fleet),
        allowLocalCas: fleet.config.gateway.allow_local_cas,
        denialsPerMinute: fleet.config.gateway.denials_per_minute,
        ...listen,
      });
      floodOptions.counters = running.counters;
      // A role changed or an operator removed: its sessions are admitted again (grants follow the role).
      const stopOperators = operators.onChange(
        () => void running.recheck().catch((e) => gatewayLogger.warn({ err: (e as Error).message }, "re-admitting sessions failed")),
      );
      closers.push(async () => stopOperators());
      metrics?.attachGateway(running.counters);
      onPolicyReload = () => void running.policyChanged();
      closers.push(() => running.close());
      serverCertificate?.addListener(() => running.refreshTls());
      gateway = running;
      logger.info({ address: running.address }, "gateway listening");
    }

    if (only.has("admin")) {
      const listen = parseListen(options.adminListen ?? fleet.config.listen.admin, "listen.admin");
      const running = await startAdminServer({
        fleet,
        logger: logger.child({ listener: "admin" }),
        certificateStatus,
        changes,
        operators: roles,
        sessions: { lookup: (secret) => operatorSession(fleet, secret) },
        gateway,
        metrics,
        tls: await adminTls(fleet),
        ...listen,
      });
      closers.push(() => running.close());
      serverCertificate?.addListener(async () => {
        try {
          running.setTls(await adminTls(fleet));
        } catch (e) {
          logger.warn(
            { listener: "admin", err: (e as Error).message },
            "serving the new server certificate failed; the previous one stays",
          );
        }
      });
      admin = running;
      logger.info({ address: running.address }, "admin listening");
    }
  } catch (e) {
    await closeAll();
    throw e;
  }
  return {
    fleet,
    registration,
    status,
    gateway,
    admin,
    metrics,
    changes,
    certificateStatus,
    operators,
    serverCertificate,
    close: closeAll,
  };
}
