// The MQTT gateway: MQTT 3.1.1 over mutual TLS. The transport only: admission (src/access/
// admission.ts) decides who may open a session, the access policy (AccessGrants) what a session
// may publish, subscribe to and receive; this file asks them and enforces the answers. It follows
// the change feed so a revoked, held or removed identity loses its sessions within the feed's poll.
import type { AddressInfo } from "node:net";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import {
  admit,
  PeerCertificates,
  type AdmissionFacts,
  type AdmissionRefusal,
  type Admitted,
  type PeerCertificate,
} from "../access/admission.js";
import { DenialLog, type DenialRow } from "../access/denials.js";
import { recordAccessDenials } from "../authority/access-denials.js";
import type { AccessDecision, AccessGrants, AccessIdentity, OperatorRole } from "../access/identity.js";
import type { ChangeFeed } from "../authority/events/change-feed.js";
import { isUnreadableStatusChange, type FleetEvent } from "../authority/events/events.js";
import type { LastSeenSink } from "../authority/last-seen.js";
import type { FleetServices } from "../authority/services.js";
import { parseDuration } from "../config/duration.js";
import type { Logger } from "../log.js";
import { createBroker, type Broker, type BrokerConnect, type ConnackCode, type PublishVerdict } from "./broker.js";
import { bump, newCounters, type GatewayCounters } from "./counters.js";
import { SessionsFileWriter, type SessionInfo } from "./sessions.js";
import { gatewayTlsMaterial } from "./tls.js";

/** The policy in force (src/access/policy-file.ts keeps it current). */
export interface PolicySource {
  grantsFor(identity: AccessIdentity): AccessGrants;
}

/**
 * Where flood protection plugs in (src/gateway/limits.ts). `connection` is asked for every TCP
 * connection before TLS; `publish` for every PUBLISH of an admitted session, before the policy;
 * a promise holds the PUBLISH (and so the reading of that socket) until it settles.
 */
export interface GatewayLimitsSeam {
  connection?(address: string): boolean;
  connectionClosed?(address: string): void;
  /** Every TLS connection before the broker reads from it (the packet-size check wraps its reads). */
  socket?(socket: TLSSocket): void;
  publish?(session: GatewaySession, p: { topic: string; payloadBytes: number; qos: number }): PublishVerdict | Promise<PublishVerdict>;
  /** A SUBSCRIBE the policy allows, by a session holding `current` subscriptions (`has`: this filter among them). */
  subscribe?(current: number, has: () => boolean): boolean;
  sessionClosed?(session: GatewaySession): void;
  /** How long a subscriber's full socket may stay full before it is disconnected (ms). */
  drainTimeoutMs?: number;
}

export interface GatewayOptions {
  fleet: FleetServices;
  host: string;
  port: number;
  logger: Logger;
  /** In-memory status kept current by `changes` (CertificateStatus); onChange tells what changed. */
  facts: AdmissionFacts & { onChange(listener: () => void, onError?: (e: unknown) => void): () => void };
  changes: ChangeFeed;
  /** An operator's stored role (OperatorDirectory), for policy rules by role; null: unknown or removed. */
  operatorRole?: (name: string) => OperatorRole | null;
  policy: PolicySource;
  /** The gateway's own key and certificate + chain (PEM), read again at every TLS refresh. */
  identity: () => { key: string; cert: string };
  allowLocalCas: boolean;
  /** Denied requests per session and minute before the connection is closed. */
  denialsPerMinute: number;
  limits?: GatewayLimitsSeam;
  /** Write <dir>/run/gateway-<pid>.json (default true). */
  sessionsFile?: boolean;
  /** How often every session is admitted again (ms; certificates expire while connected). */
  refreshMs?: number;
  /** Told of every device admitted (its "last seen"). */
  lastSeen?: LastSeenSink;
}

export interface GatewaySession {
  readonly key: number;
  readonly clientId: string;
  identity: AccessIdentity;
  readonly subject: string;
  readonly serial: string;
  readonly address: string;
  readonly since: Date;
  /** Its client certificate as admission read it (shared by the sessions of the same certificate). */
  readonly certificate: PeerCertificate;
  grants: AccessGrants;
  messagesIn: number;
  messagesOut: number;
  closing: boolean;
  denials: { minute: number; count: number };
}

export interface RunningGateway {
  address: AddressInfo;
  counters: GatewayCounters;
  sessions(): SessionInfo[];
  /** The policy changed: grants recomputed, subscriptions it no longer allows removed. */
  policyChanged(): Promise<void>;
  /** Re-admits every session now (also done after every relevant change-feed event). */
  recheck(): Promise<void>;
  /** Reads trusted CAs, their CRLs and the gateway's certificate again now (also done on a timer and after changes). */
  refreshTls(): Promise<void>;
  close(): Promise<void>;
}

const CONNACK: Record<AdmissionRefusal["kind"], ConnackCode> = { "identifier-rejected": 2, "bad-credentials": 4, "not-authorized": 5 };

/** Change-feed events after which the TLS trust and CRLs are rebuilt. */
const RETRUST = new Set(["CaCreated", "CaRevoked", "DeviceRevoked", "DeviceHeld", "DeviceUnheld", "DeviceRemoved", "CertificateRevoked"]);

function sameIdentity(a: AccessIdentity, b: AccessIdentity): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** How long a connection may take for its TLS handshake, and then for its CONNECT. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

export async function startGateway(options: GatewayOptions): Promise<RunningGateway> {
  const { fleet, logger, facts, policy } = options;
  const counters = newCounters();
  const live = new Set<GatewaySession>();
  let nextKey = 1;
  // Who holds each client id: MQTT gives a client id's live connection and stored session (clean=false:
  // subscriptions, queued QoS 1 messages) to the next CONNECT with it, so another identity never gets it.
  // Kept while a session with it is live or stored (the broker keeps stored sessions in memory too).
  const holders = new Map<string, { subject: string; stored: boolean }>();
  const denialLog = new DenialLog(
    (rows: readonly DenialRow[]) => recordAccessDenials(fleet, rows),
    () => fleet.clock.now(),
    (e) => logger.warn({ err: (e as Error).message }, "writing denials to the audit log failed"),
  );
  denialLog.start();
  const sessionsFile =
    options.sessionsFile === false
      ? undefined
      : new SessionsFileWriter(
          fleet.dir,
          () => sessionList(),
          (e) => logger.warn({ err: (e as Error).message }, "writing the sessions file failed"),
        );

  const sessionList = (): SessionInfo[] =>
    [...live]
      .filter((s) => !s.closing)
      .map((s) => ({
        id: s.clientId,
        kind: s.identity.kind,
        name: s.identity.kind === "device" ? s.identity.id : s.identity.name,
        address: s.address,
        since: s.since.toISOString(),
        messagesIn: s.messagesIn,
        messagesOut: s.messagesOut,
        subscriptions: broker.subscriptions(s).length,
      }));

  // Devices reconnect with the same certificate: it is parsed once; its status is asked every time.
  const peers = new PeerCertificates(fleet.domain);
  const admission = (certificate: PeerCertificate | undefined, clientId: string) =>
    admit({ certificate, clientId, domain: fleet.domain, allowLocalCas: options.allowLocalCas, operatorRole: options.operatorRole }, facts);

  const end = (session: GatewaySession, reason: string, detail: Record<string, unknown> = {}) => {
    if (session.closing) return;
    session.closing = true;
    bump(counters.disconnected, reason);
    logger.info(
      { client: session.clientId, subject: session.subject, serial: session.serial, reason, ...detail },
      "session closed by the gateway",
    );
    broker.closeSession(session);
  };

  /** One denial (or audit-mode would-deny): counted, logged, aggregated into the audit log. */
  const denied = (session: GatewaySession, action: "publish" | "subscribe", topic: string, d: AccessDecision) => {
    const audit = d.outcome === "audit-deny";
    bump(counters.denials, audit ? `audit-${action}` : action);
    denialLog.record({ subject: session.subject, action, topic, outcome: audit ? "audit-deny" : "deny", rule: d.rule });
    logger.debug({ client: session.clientId, action, topic, outcome: d.outcome, rule: d.rule, reason: d.reason }, "access denied");
    if (audit) return;
    const minute = Math.floor(fleet.clock.now().getTime() / 60_000);
    if (session.denials.minute !== minute) session.denials = { minute, count: 0 };
    if (++session.denials.count > options.denialsPerMinute) end(session, "denials", { budget: options.denialsPerMinute });
  };

  // Retained messages and wills are publishes like any other: the same grant decides.
  const decidePublish = (session: GatewaySession, topic: string): PublishVerdict => {
    const d = session.grants.publish(topic);
    if (d.outcome !== "allow") denied(session, "publish", topic, d);
    if (session.closing) return "close";
    return d.allowed ? "allow" : "drop";
  };

  const broker: Broker<GatewaySession> = await createBroker<GatewaySession>(
    {
      unsupportedProtocol(c: BrokerConnect) {
        bump(counters.refused, `protocol-${c.protocolVersion}`);
        logger.warn(
          { client: c.clientId, address: addressOf(c.conn as TLSSocket), protocolVersion: c.protocolVersion },
          "CONNECT refused: only MQTT 3.1.1 (and 3.1) is spoken here (CONNACK 1 unacceptable protocol version)",
        );
      },
      async connect(c) {
        const conn = c.conn as TLSSocket;
        const address = addressOf(conn);
        // Only the DER: getPeerCertificate() would build a JS object of the whole certificate.
        const der = conn.getPeerX509Certificate?.()?.raw;
        const certificate = der && der.length > 0 ? peers.get(der) : undefined;
        let result = admission(certificate, c.clientId);
        // A certificate issued a moment ago (an agent connecting right after enrolling) may not have
        // reached us through the feed yet: read the audit log now, then decide.
        if (!result.admitted && result.refusal.code === "unknown-certificate") {
          await options.changes.poll();
          result = admission(certificate, c.clientId);
        }
        if (!result.admitted) {
          bump(counters.refused, result.refusal.code);
          logger.info({ client: c.clientId, address, code: result.refusal.code, reason: result.refusal.reason }, "CONNECT refused");
          return { refuse: CONNACK[result.refusal.kind], reason: result.refusal.reason };
        }
        const grants = policy.grantsFor(result.identity);
        if (c.will) {
          const d = grants.publish(c.will.topic);
          if (!d.allowed) {
            bump(counters.refused, "will");
            logger.info(
              { client: c.clientId, address, subject: result.subject, topic: c.will.topic, rule: d.rule },
              "CONNECT refused: will topic denied",
            );
            return { refuse: 5, reason: `will topic ${c.will.topic} not allowed` };
          }
          if (d.outcome === "audit-deny") {
            bump(counters.denials, "audit-will");
            logger.warn({ client: c.clientId, topic: c.will.topic, rule: d.rule }, "audit mode: a will topic that would be denied");
          }
        }
        const holder = holders.get(c.clientId);
        // A device always gets its own id (admission refuses it to everyone else now), but never the
        // state another identity stored under it before the device was registered: it starts clean.
        const reclaim =
          holder !== undefined &&
          holder.subject !== result.subject &&
          result.identity.kind === "device" &&
          ![...live].some((s) => s.clientId === c.clientId && !s.closing);
        if (holder && holder.subject !== result.subject && !reclaim) {
          bump(counters.refused, "client-id-held");
          logger.info({ client: c.clientId, address, subject: result.subject, holder: holder.subject }, "CONNECT refused: client id held");
          return { refuse: 2, reason: `client id ${c.clientId} is held by ${holder.subject}` };
        }
        holders.set(c.clientId, { subject: result.subject, stored: !c.clean && !reclaim });
        const session: GatewaySession = {
          key: nextKey++,
          clientId: c.clientId,
          identity: result.identity,
          subject: result.subject,
          serial: result.serial,
          address,
          since: fleet.clock.now(),
          certificate: certificate!,
          grants,
          messagesIn: 0,
          messagesOut: 0,
          closing: false,
          denials: { minute: 0, count: 0 },
        };
        live.add(session);
        counters.connections.current++;
        counters.connections.total++;
        sessionsFile?.markChanged();
        logger.info({ client: c.clientId, address, subject: result.subject, serial: result.serial }, "session opened");
        if (result.identity.kind === "device") options.lastSeen?.seen(result.identity.id);
        return { session, fresh: reclaim };
      },
      publish(session, p) {
        if (p.will) {
          // Published when the session ends; the policy may have changed since CONNECT.
          return session.closing ? "drop" : decidePublish(session, p.topic);
        }
        if (session.closing) return "close";
        session.messagesIn++;
        counters.messages.in++;
        counters.bytes.in += p.payloadBytes;
        sessionsFile?.markChanged();
        const limited = options.limits?.publish?.(session, p);
        if (limited === undefined || limited === "allow") return decidePublish(session, p.topic);
        if (typeof limited === "string") return limited;
        return limited.then((v) => (v === "allow" ? decidePublish(session, p.topic) : v));
      },
      subscribe(session, filter, current) {
        if (session.closing) return false;
        const d = session.grants.subscribe(filter);
        if (d.outcome !== "allow") denied(session, "subscribe", filter, d);
        const has = () => broker.subscriptions(session).includes(filter);
        if (d.allowed && options.limits?.subscribe && !options.limits.subscribe(current, has)) return false;
        sessionsFile?.markChanged();
        return d.allowed && !session.closing;
      },
      forward(session, topic, payloadBytes) {
        if (session.closing) return false;
        const d = session.grants.receive(topic);
        if (!d.allowed) {
          bump(counters.denials, "receive");
          return false;
        }
        if (d.outcome === "audit-deny") bump(counters.denials, "audit-receive");
        session.messagesOut++;
        counters.messages.out++;
        counters.bytes.out += payloadBytes;
        sessionsFile?.markChanged();
        return true;
      },
      slowSubscriber(session) {
        // Counted, not end(): the client did not misbehave by protocol, so its will is still published.
        bump(counters.disconnected, "slow-subscriber");
        logger.warn({ client: session.clientId, subject: session.subject }, "subscriber disconnected: it stopped reading");
      },
      disconnected(session) {
        if (!live.delete(session)) return;
        const holder = holders.get(session.clientId);
        if (holder && !holder.stored && ![...live].some((s) => s.clientId === session.clientId)) holders.delete(session.clientId);
        counters.connections.current--;
        sessionsFile?.markChanged();
        options.limits?.sessionClosed?.(session);
        logger.info({ client: session.clientId, subject: session.subject }, "session ended");
      },
    },
    { connectTimeout: HANDSHAKE_TIMEOUT_MS, maxInflightInbound: 1000, drainTimeout: options.limits?.drainTimeoutMs },
  );

  /** Grants again for a session whose identity or policy changed; subscriptions no longer allowed go. */
  const regrant = async (session: GatewaySession, identity: AccessIdentity): Promise<void> => {
    session.identity = identity;
    session.grants = policy.grantsFor(identity);
    const gone = broker.subscriptions(session).filter((f) => !session.grants.subscribe(f).allowed);
    if (gone.length > 0) {
      logger.info({ client: session.clientId, filters: gone }, "subscriptions no longer allowed removed");
      await broker.unsubscribe(session, gone);
    }
  };

  /** Admission again for every live session: whoever would be refused now is disconnected. */
  const recheck = async (): Promise<void> => {
    const pending: Promise<void>[] = [];
    for (const session of live) {
      if (session.closing) continue;
      const result = admission(session.certificate, session.clientId);
      if (!result.admitted) end(session, result.refusal.code, { why: result.refusal.reason });
      else if (!sameIdentity(session.identity, (result as Admitted).identity)) pending.push(regrant(session, result.identity));
    }
    await Promise.all(pending);
  };

  let material = await gatewayTlsMaterial(fleet, options.identity(), options.allowLocalCas);
  if (material.withoutCrls)
    logger.warn({ why: material.withoutCrls }, "gateway TLS handshakes check no CRLs (admission still checks every certificate)");
  // A client that never finishes its handshake is dropped after 10 s, not Node's default 120 s (aedes
  // gives CONNECT the same 10 s once the handshake is done).
  const server = createTlsServer({
    ...material.options,
    requestCert: true,
    rejectUnauthorized: true,
    handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
  });
  let refreshing: Promise<void> | undefined;
  const refreshTls = (): Promise<void> =>
    (refreshing ??= (async () => {
      try {
        const next = await gatewayTlsMaterial(fleet, options.identity(), options.allowLocalCas);
        if (next.withoutCrls && !material.withoutCrls)
          logger.warn({ why: next.withoutCrls }, "gateway TLS handshakes check no CRLs (admission still checks every certificate)");
        material = next;
        server.setSecureContext({ ...next.options });
      } catch (e) {
        logger.warn({ err: (e as Error).message }, "refreshing the gateway's TLS material failed; the previous one stays");
      }
    })().finally(() => (refreshing = undefined)));

  // Every connection, so close() ends those still in their handshake or before CONNECT too.
  const sockets = new Set<import("node:net").Socket>();
  // One "close" listener per connection (not two once() wrappers): idle connections are many.
  server.on("connection", (socket) => {
    sockets.add(socket);
    const address = socket.remoteAddress ?? "?";
    if (options.limits?.connection && !options.limits.connection(address)) {
      socket.on("close", () => sockets.delete(socket));
      // Counted by the seam, by reason (refused["address-connections" | "address-attempts"]).
      socket.destroy();
      return;
    }
    const closed = options.limits?.connectionClosed;
    socket.on("close", () => {
      sockets.delete(socket);
      closed?.(address);
    });
  });
  server.on("secureConnection", (socket: TLSSocket) => {
    options.limits?.socket?.(socket);
    broker.handle(socket);
  });
  server.on("tlsClientError", (err: Error & { code?: string; reason?: string }, socket) => {
    const reason = err.reason ?? err.code ?? err.message;
    bump(counters.handshakeFailures, reason);
    logger.info({ address: socket.remoteAddress, reason }, "TLS handshake failed");
  });

  // A device revoked, held, removed or regrouped, a certificate or CA revoked (by any process): every
  // session is admitted again as soon as the in-memory status has applied it (after a reload too).
  const recheckFailed = (e: unknown) => logger.warn({ err: (e as Error).message }, "re-admitting sessions failed");
  const stopFollowing = facts.onChange(() => void recheck().catch(recheckFailed), recheckFailed);
  const unsubscribe = options.changes.subscribe((events: readonly FleetEvent[]) => {
    let retrust = false;
    for (const e of events) {
      if (RETRUST.has(e.type) || isUnreadableStatusChange(e)) retrust = true;
      // An operator's kick (admin API, any process): sessions of that client id opened before it.
      if (e.type === "GatewaySessionKicked")
        for (const s of live) if (s.clientId === e.clientId && s.since <= e.at) end(s, "kicked", { by: e.actor });
    }
    // The CLI re-signs the CRLs right after its change: read them now and once more shortly after.
    if (retrust) {
      void refreshTls();
      setTimeout(() => void refreshTls(), 2000).unref();
    }
  });
  // Certificates expire while connected: admission again every refreshMs.
  const timer = setInterval(() => void recheck().catch(recheckFailed), options.refreshMs ?? 30_000);
  timer.unref();
  // CRLs are re-signed at half of their validity (currentCrl); reading them 8 times per validity
  // keeps the handshake's copy well before its nextUpdate.
  const crlValidity = parseDuration(fleet.config.revocation.crl_validity);
  const tlsTimer = setInterval(() => void refreshTls(), Math.max(1000, Math.min(5 * 60_000, crlValidity / 8)));
  tlsTimer.unref();

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  sessionsFile?.start();
  logger.info({ address: server.address(), cas: material.cas }, "gateway listening");

  let closed: Promise<void> | undefined;
  return {
    address: server.address() as AddressInfo,
    counters,
    sessions: sessionList,
    async policyChanged() {
      await Promise.all([...live].filter((s) => !s.closing).map((s) => regrant(s, s.identity)));
    },
    recheck,
    refreshTls,
    close: () =>
      (closed ??= (async () => {
        unsubscribe();
        stopFollowing();
        clearInterval(timer);
        clearInterval(tlsTimer);
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          for (const s of live) broker.closeSession(s);
          for (const socket of sockets) socket.destroy();
        });
        await broker.close();
        await refreshing;
        await denialLog.close();
        sessionsFile?.close();
      })()),
  };
}

function addressOf(conn: TLSSocket): string {
  const host = conn.remoteAddress ?? "?";
  return `${host.includes(":") ? `[${host}]` : host}:${conn.remotePort ?? 0}`;
}
