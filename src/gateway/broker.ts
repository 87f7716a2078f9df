// Our small interface over the MQTT broker library (aedes 1.2, MQTT 3.1.1). The gateway decides;
// this file only translates aedes' hooks into calls on a session object of the gateway's and back.
// Swapping the library means rewriting this file only.
import type { Duplex } from "node:stream";
import { Aedes, type Client } from "aedes";
import { BrokerWindow } from "./limits.js";

export interface BrokerConnect {
  clientId: string;
  protocolVersion: number;
  /** Clean session (false: the client asks for the stored session of its client id). */
  clean: boolean;
  /** The CONNECT's will message, if any. */
  will: { topic: string; retain: boolean; payloadBytes: number } | undefined;
  conn: Duplex;
}

/** CONNACK return codes of MQTT 3.1.1 (1 unacceptable protocol version ... 5 not authorized). */
export type ConnackCode = 1 | 2 | 3 | 4 | 5;

/** fresh: start the session clean whatever the CONNECT asked (no stored state of the client id is handed over). */
export type ConnectVerdict<S> = { session: S; fresh?: boolean } | { refuse: ConnackCode; reason: string };

export interface BrokerPublish {
  topic: string;
  payloadBytes: number;
  retain: boolean;
  qos: number;
  /** A will message published when its session ended without DISCONNECT. */
  will: boolean;
}

/** allow: route it; drop: acknowledge and discard (the connection stays); close: end the connection. */
export type PublishVerdict = "allow" | "drop" | "close";

export interface BrokerHooks<S> {
  /** A CONNECT with a protocol level the library cannot speak (it answers CONNACK 1 itself). */
  unsupportedProtocol(c: BrokerConnect): void;
  connect(c: BrokerConnect): ConnectVerdict<S> | Promise<ConnectVerdict<S>>;
  /** A promise holds the PUBLISH, and with it the reading of that client's socket, until it settles. */
  publish(session: S, p: BrokerPublish): PublishVerdict | Promise<PublishVerdict>;
  /** SUBSCRIBE of one filter; false: SUBACK 0x80 for it. `current`: the session's subscriptions now. */
  subscribe(session: S, filter: string, current: number): boolean;
  /** Delivery of a message (retained ones included) to the session; false: not sent to it. */
  forward(session: S, topic: string, payloadBytes: number): boolean;
  /** The session's connection was closed because its socket stayed full for drainTimeout (before disconnected). */
  slowSubscriber?(session: S): void;
  disconnected(session: S): void;
}

export interface BrokerOptions {
  /** How long a connection may wait before its CONNECT (ms). */
  connectTimeout: number;
  /** Inbound QoS 2 messages awaiting PUBREL per client. */
  maxInflightInbound: number;
  /** Messages between reading and delivery over all clients (BrokerWindow); default 200. */
  maxInflightMessages?: number;
  /**
   * How long a delivery may wait for a subscriber's full socket to drain before that connection is
   * closed (ms); default 5000. aedes holds the delivery (and its mqemitter slot) meanwhile, so one
   * subscriber that stops reading stalls delivery to every client (aedes' own default is 60 s).
   */
  drainTimeout?: number;
}

export interface Broker<S> {
  /** Serves one (already authenticated TLS) connection. */
  handle(conn: Duplex): void;
  /** Ends the session's connection (no will message is published for a session the gateway ends). */
  closeSession(session: S): void;
  /** Ends the connection of a client id; false if there is none. */
  closeClient(clientId: string): boolean;
  /** The topic filters the session is subscribed to now. */
  subscriptions(session: S): string[];
  /** Removes subscriptions of a live session (no UNSUBACK: the client did not ask). */
  unsubscribe(session: S, filters: readonly string[]): Promise<void>;
  close(): Promise<void>;
}

const PROTOCOLS = new Set([3, 4]);
const DEFAULT_DRAIN_TIMEOUT_MS = 5000;

export async function createBroker<S extends object>(hooks: BrokerHooks<S>, options: BrokerOptions): Promise<Broker<S>> {
  const sessions = new WeakMap<Client, S>();
  const clients = new Map<S, Client>();
  const connects = new WeakMap<Client, BrokerConnect & { packet: { clean?: boolean } }>();
  // PUBLISH packets the gateway denied: acknowledged as the protocol requires, never routed.
  const dropped = new WeakSet<object>();
  // Sessions the gateway ended: their will is not published.
  const ended = new WeakSet<object>();
  // Filters granted to a client whose SUBSCRIBE is still being stored (see authorizeSubscribe).
  const granting = new WeakMap<Client, Set<string>>();

  const aedes = new Aedes({
    connectTimeout: options.connectTimeout,
    maxInflightInbound: options.maxInflightInbound,
    drainTimeout: options.drainTimeout ?? DEFAULT_DRAIN_TIMEOUT_MS,
    preConnect(client, packet, callback) {
      const c = {
        clientId: packet.clientId,
        protocolVersion: packet.protocolVersion ?? 4,
        clean: packet.clean !== false,
        packet,
        will: packet.will
          ? { topic: packet.will.topic, retain: packet.will.retain === true, payloadBytes: packet.will.payload?.length ?? 0 }
          : undefined,
        conn: client.conn,
      };
      if (!PROTOCOLS.has(c.protocolVersion)) hooks.unsupportedProtocol(c);
      connects.set(client, c);
      callback(null, true);
    },
    authenticate(client, _username, _password, done) {
      const c = connects.get(client);
      connects.delete(client);
      const apply = (verdict: ConnectVerdict<S>) => {
        if ("session" in verdict) {
          // aedes reads the flag after authenticate (fetchSubs, emptyQueue, cleanIncoming).
          if (verdict.fresh && c) c.packet.clean = (client as unknown as { clean: boolean }).clean = true;
          sessions.set(client, verdict.session);
          clients.set(verdict.session, client);
          return done(null, true);
        }
        done(Object.assign(new Error(verdict.reason), { returnCode: verdict.refuse as number }), false);
      };
      const verdict = c ? hooks.connect(c) : ({ refuse: 5, reason: "no CONNECT" } as const);
      if ("then" in verdict) verdict.then(apply, (e: Error) => apply({ refuse: 3, reason: e.message }));
      else apply(verdict);
    },
    authorizePublish(client, packet, callback) {
      const session = client ? sessions.get(client) : undefined;
      const will = client !== null && (client as unknown as { will?: object }).will === packet;
      // A will of a session that is gone (or that the gateway ended) is not published.
      if (!session || (will && ended.has(session))) return callback(new Error("no session"));
      // MQTT-4.7.3-2: no U+0000 in a topic name (consumers in C would read a shorter one); the connection closes.
      if (packet.topic.includes("\u0000")) return callback(new Error("topic name contains U+0000"));
      const verdict = hooks.publish(session, {
        topic: packet.topic,
        payloadBytes: packet.payload?.length ?? 0,
        retain: packet.retain === true,
        qos: packet.qos,
        will,
      });
      const apply = (v: PublishVerdict) => {
        if (v === "close") return callback(new Error(`publish to ${packet.topic} refused`));
        if (v === "drop") dropped.add(packet);
        callback(null);
      };
      if (typeof verdict === "string") apply(verdict);
      else verdict.then(apply, (e: Error) => callback(e));
    },
    authorizeSubscribe(client, sub, callback) {
      const session = sessions.get(client);
      if (sub.topic.includes("\u0000")) return callback(null, null);
      // A persistent session's filters are added only after the store resolves, and aedes authorizes
      // every filter of a SUBSCRIBE before that: count the ones granted but not added yet, or one
      // packet of thousands of filters would pass max_subscriptions.
      const held = (client as unknown as { subscriptions: Record<string, unknown> }).subscriptions;
      let pending = granting.get(client);
      if (pending) for (const f of pending) if (f in held) pending.delete(f);
      const current = Object.keys(held).length + (pending && !pending.has(sub.topic) ? pending.size : 0);
      const ok = session !== undefined && hooks.subscribe(session, sub.topic, current);
      if (ok && !(sub.topic in held)) {
        if (!pending) granting.set(client, (pending = new Set()));
        pending.add(sub.topic);
      }
      callback(null, ok ? sub : null);
    },
    authorizeForward(client, packet) {
      const session = sessions.get(client);
      return session && hooks.forward(session, packet.topic, packet.payload?.length ?? 0) ? packet : null;
    },
  });
  await aedes.listen();
  // A denied PUBLISH reaches publish() after its acknowledgement: routing stops here.
  const publish = aedes.publish.bind(aedes) as (packet: object, client: unknown, done?: (e?: Error | null) => void) => void;
  // Inbound flow control (src/gateway/limits.ts, BrokerWindow): at most this many messages between
  // reading and delivery; the others wait, and so does the reading of their senders' sockets.
  const window = new BrokerWindow(options.maxInflightMessages ?? 200, setImmediate);
  (aedes as unknown as { publish: typeof publish }).publish = (packet, client, done) => {
    const cb = typeof client === "function" ? (client as (e?: Error | null) => void) : done;
    if (dropped.has(packet)) return cb?.(null);
    window.acquire(() => {
      let released = false;
      publish(packet, typeof client === "function" ? null : client, (e?: Error | null) => {
        if (!released) {
          released = true;
          window.release();
        }
        cb?.(e);
      });
    });
  };
  // A SUBSCRIBE is complete (SUBACK sent): its granted filters are in client.subscriptions now.
  aedes.on("subscribe", (_subs, client) => granting.delete(client));
  // aedes destroys the connection with this error when a subscriber's socket did not drain in time.
  aedes.on("clientError", (client, err) => {
    const session = sessions.get(client);
    if (session && clients.get(session) === client && err.message === "drain timeout") hooks.slowSubscriber?.(session);
  });
  aedes.on("clientDisconnect", (client) => {
    const session = sessions.get(client);
    if (session && clients.get(session) === client) {
      clients.delete(session);
      hooks.disconnected(session);
    }
  });
  // A client closed before or during CONNECT never became a session: nothing to report.

  const broker: Broker<S> = {
    handle(conn) {
      aedes.handle(conn);
    },
    closeSession(session) {
      ended.add(session);
      const client = clients.get(session);
      if (!client) return;
      client.close();
      client.conn.destroy();
    },
    closeClient(clientId) {
      for (const [session, client] of clients)
        if (client.id === clientId) {
          broker.closeSession(session);
          return true;
        }
      return false;
    },
    subscriptions(session) {
      const client = clients.get(session);
      return client ? Object.keys((client as unknown as { subscriptions: object }).subscriptions) : [];
    },
    unsubscribe(session, filters) {
      const client = clients.get(session);
      if (!client || filters.length === 0) return Promise.resolve();
      return new Promise((resolve) => client.unsubscribe({ unsubscriptions: [...filters] } as never, () => resolve()));
    },
    close: () => new Promise((resolve) => aedes.close(() => resolve())),
  };
  return broker;
}
