// Flood protection for the MQTT gateway (issue 10 §4): per-identity token buckets for messages/s
// and bytes/s, a per-connection gate that PAUSES a publisher whose bucket is empty and
// DISCONNECTS one that stays over its rate, the max payload (checked on the socket's bytes before
// the broker buffers a packet), max subscriptions and held QoS 1 messages per connection, and
// connections / connection attempts per source address.
//
// Pure: no I/O, no real clock, no real timers. Time comes from `now()` (ms) and delays go through
// an injected `setTimer`, so tests drive it without sleeping; src/gateway wires in the real ones.
//
// Why holding a publish gives TCP backpressure (aedes 1.2, lib/client.js): the client reads its
// socket only in `nextBatch`, which calls `conn.read(null)` once `_parsingBatch` (packets of the
// last read still being handled) is back to 0; each packet's handling ends with the
// authorizePublish callback. While the gate holds that callback nothing more is read, the
// socket's readable buffer reaches its high-water mark, Node stops reading the TCP socket, the
// kernel's receive window fills and the flooder's own writes block. (Every packet of one read
// is handled at once, so the gate queues them all, in order, behind one timer.)
import type { AccessIdentity } from "../access/identity.js";
import { ConfigError } from "../config/config.js";

// ---- configuration (gateway.limits in fleetpki.yaml) ----------------------------------------

export interface RateLimit {
  messages_per_second: number;
  bytes_per_second: number;
  /** Bucket capacity, in seconds of rate: how long a client may send above its rate at once. */
  burst_seconds: number;
}

export interface GatewayLimits {
  /** Every identity's rate, unless its device group has its own. */
  default: RateLimit;
  /** Per device group; a missing field takes the default's. */
  groups: Readonly<Record<string, RateLimit>>;
  max_payload_bytes: number;
  /** Subscriptions one connection may hold; more are refused (SUBACK 0x80). */
  max_subscriptions: number;
  /** QoS 1 PUBLISHes of one connection held unacknowledged by the throttle; one more disconnects. */
  max_inflight: number;
  /** Open connections (TCP, before TLS) from one source address. */
  max_connections_per_address: number;
  /** New connections from one source address per minute (a bucket: that many at once, then that rate). */
  connection_attempts_per_minute: number;
  /** A client throttled without a break for this long is disconnected. */
  throttle_grace_seconds: number;
  /** ... and at once when what it sent beyond its bucket would take longer than this to pay off. */
  max_debt_seconds: number;
  /** A subscriber whose socket stays full (it stopped reading) this long is disconnected (aedes' drainTimeout). */
  drain_timeout_seconds: number;
}

export const DEFAULT_MAX_PAYLOAD = 256 * 1024;

export const DEFAULT_GATEWAY_LIMITS: GatewayLimits = {
  default: { messages_per_second: 100, bytes_per_second: 256 * 1024, burst_seconds: 5 },
  groups: {},
  max_payload_bytes: DEFAULT_MAX_PAYLOAD,
  max_subscriptions: 64,
  max_inflight: 1000,
  max_connections_per_address: 100,
  connection_attempts_per_minute: 600,
  throttle_grace_seconds: 5,
  max_debt_seconds: 30,
  drain_timeout_seconds: 5,
};

const RATE_KEYS = ["messages_per_second", "bytes_per_second", "burst_seconds"] as const;
const SCALAR_KEYS = [
  "max_payload_bytes",
  "max_subscriptions",
  "max_inflight",
  "max_connections_per_address",
  "connection_attempts_per_minute",
  "throttle_grace_seconds",
  "max_debt_seconds",
  "drain_timeout_seconds",
] as const;
/** Integer settings; the others may be fractional (a rate of 0.5 messages/s is meaningful). */
const INTEGER_KEYS: ReadonlySet<string> = new Set([
  "max_payload_bytes",
  "max_subscriptions",
  "max_inflight",
  "max_connections_per_address",
  "connection_attempts_per_minute",
]);
/** Settings that become a timer's delay: Node fires a setTimeout longer than 2^31-1 ms after 1 ms. */
const TIMER_SECONDS_KEYS: ReadonlySet<string> = new Set(["max_debt_seconds", "drain_timeout_seconds"]);
const MAX_TIMER_SECONDS = Math.floor(0x7fffffff / 1000);
/** MQTT's remaining length cannot exceed 268,435,455 bytes; a payload limit near it means none. */
const MAX_PAYLOAD_CEILING = 256 * 1024 * 1024 - 1024;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function positive(value: unknown, path: string): number {
  const integer = INTEGER_KEYS.has(path.slice(path.lastIndexOf(".") + 1));
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value)))
    throw new ConfigError(`${path} must be a positive ${integer ? "integer" : "number"} (got ${JSON.stringify(value)})`);
  return value;
}

function unknownKeys(obj: Record<string, unknown>, known: readonly string[], path: string): void {
  for (const key of Object.keys(obj))
    if (!known.includes(key)) throw new ConfigError(`${path}: unknown key "${key}" (known: ${known.join(", ")})`);
}

function parseRate(value: unknown, path: string, base: RateLimit | undefined): RateLimit {
  if (!isRecord(value)) throw new ConfigError(`${path} must be a mapping of ${RATE_KEYS.join(", ")}`);
  unknownKeys(value, RATE_KEYS, path);
  const out = { ...(base ?? DEFAULT_GATEWAY_LIMITS.default) };
  for (const key of RATE_KEYS) if (value[key] !== undefined) out[key] = positive(value[key], `${path}.${key}`);
  return out;
}

/**
 * Validates `gateway.limits` (absent: the defaults). Every field is optional; unknown keys are
 * refused like everywhere else in fleetpki.yaml, since a misspelt limit would silently not apply.
 * `where` names the setting in errors.
 */
export function parseGatewayLimits(value: unknown, where = "fleetpki.yaml: gateway.limits"): GatewayLimits {
  if (value === undefined || value === null) return { ...DEFAULT_GATEWAY_LIMITS };
  if (!isRecord(value)) throw new ConfigError(`${where} must be a mapping`);
  unknownKeys(value, ["default", "groups", ...SCALAR_KEYS], where);
  const base =
    value.default === undefined ? { ...DEFAULT_GATEWAY_LIMITS.default } : parseRate(value.default, `${where}.default`, undefined);
  const groups: Record<string, RateLimit> = Object.create(null) as Record<string, RateLimit>;
  if (value.groups !== undefined && value.groups !== null) {
    if (!isRecord(value.groups)) throw new ConfigError(`${where}.groups must be a mapping of group name to limits`);
    for (const [group, rate] of Object.entries(value.groups)) groups[group] = parseRate(rate, `${where}.groups.${group}`, base);
  }
  const out: GatewayLimits = { ...DEFAULT_GATEWAY_LIMITS, default: base, groups };
  for (const key of SCALAR_KEYS) if (value[key] !== undefined) out[key] = positive(value[key], `${where}.${key}`);
  for (const key of TIMER_SECONDS_KEYS)
    if (out[key as "max_debt_seconds"] > MAX_TIMER_SECONDS)
      throw new ConfigError(`${where}.${key} must be at most ${MAX_TIMER_SECONDS} (about 24 days: a timer's longest delay)`);
  if (out.max_payload_bytes > MAX_PAYLOAD_CEILING)
    throw new ConfigError(`${where}.max_payload_bytes must be at most ${MAX_PAYLOAD_CEILING} (MQTT's packet size limit)`);
  // A bucket must hold at least one message of the largest size allowed, or an honest client sending
  // such messages below its rate waits on every one and is disconnected as a flooder.
  const rates: [string, RateLimit][] = [[`${where}.default`, base]];
  for (const [group, rate] of Object.entries(groups)) rates.push([`${where}.groups.${group}`, rate]);
  for (const [path, rate] of rates) {
    if (rate.messages_per_second * rate.burst_seconds < 1)
      throw new ConfigError(`${path}: messages_per_second x burst_seconds must be at least 1 (one message)`);
    if (rate.bytes_per_second * rate.burst_seconds < out.max_payload_bytes)
      throw new ConfigError(
        `${path}: bytes_per_second x burst_seconds must be at least max_payload_bytes (${out.max_payload_bytes}), ` +
          "or a message of the largest allowed size disconnects its sender",
      );
  }
  return out;
}

// ---- token bucket ---------------------------------------------------------------------------

/**
 * Tokens refill at `rate` per second up to `capacity`. `take` always takes (the balance may go
 * negative: a debt) and says how long until the balance is back at zero, i.e. when the caller may
 * go on. Taking first and waiting after keeps arrival order and needs no retry loop.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    readonly rate: number,
    readonly capacity: number,
    now: number,
    /** The lowest the balance may fall: a bounded debt (default none). */
    private readonly floor = -Infinity,
  ) {
    this.tokens = capacity;
    this.last = now;
  }

  level(now: number): number {
    if (now > this.last) {
      this.tokens = Math.min(this.capacity, this.tokens + ((now - this.last) / 1000) * this.rate);
      this.last = now;
    }
    return this.tokens;
  }

  /** Takes `cost` tokens; returns the ms until the balance is >= 0 again (0: it still is). */
  take(cost: number, now: number): number {
    this.tokens = Math.max(this.floor, this.level(now) - cost);
    return this.tokens >= 0 ? 0 : (-this.tokens / this.rate) * 1000;
  }

  full(now: number): boolean {
    return this.level(now) >= this.capacity;
  }
}

// ---- per identity ---------------------------------------------------------------------------

/** A wait this long after the previous one went through starts a new throttling episode. */
export const THROTTLE_GAP_MS = 1000;

export type DisconnectReason = "throttled" | "debt" | "payload" | "inflight";

export type Admission = { kind: "admit" } | { kind: "wait"; ms: number } | { kind: "disconnect"; reason: DisconnectReason };

/**
 * One identity's buckets, shared by all its connections (a service may run several consumers),
 * and how long it has been throttled without a break.
 */
export class IdentityLimiter {
  /** Connections using this limiter (FloodLimiter keeps it while > 0 or while it is in debt). */
  connections = 0;
  private readonly messages: TokenBucket;
  private readonly bytes: TokenBucket;
  private throttledSince: number | undefined;
  /** When the latest message made to wait was let through. */
  private waitedUntil = -Infinity;

  constructor(
    readonly key: string,
    readonly rate: RateLimit,
    private readonly graceMs: number,
    private readonly maxDebtMs: number,
    now: number,
  ) {
    this.messages = new TokenBucket(rate.messages_per_second, rate.messages_per_second * rate.burst_seconds, now);
    this.bytes = new TokenBucket(rate.bytes_per_second, rate.bytes_per_second * rate.burst_seconds, now);
  }

  /**
   * One message of `size` bytes arrives. Admitted at once while both buckets hold tokens;
   * otherwise it waits until they have refilled (the connection is paused meanwhile). A client
   * that has been made to wait continuously for the grace period, or whose wait grows beyond
   * max_debt_seconds, is to be disconnected.
   *
   * "Continuously": each wait continues the episode when it comes less than THROTTLE_GAP_MS after
   * the previous waiting message went through. A paused flooder's next read arrives right after
   * its held messages are released, perhaps with a token or two refilled meanwhile (timers fire
   * late on a busy machine), so one message admitted without waiting does not end the episode;
   * a client that sent a burst and then kept below its rate for a second does.
   */
  admit(size: number, now: number): Admission {
    const wait = Math.max(this.messages.take(1, now), this.bytes.take(size, now));
    if (wait === 0) return { kind: "admit" };
    if (this.throttledSince === undefined || now > this.waitedUntil + THROTTLE_GAP_MS) this.throttledSince = now;
    this.waitedUntil = Math.max(this.waitedUntil, now + wait);
    if (wait > this.maxDebtMs) return { kind: "disconnect", reason: "debt" };
    if (now - this.throttledSince >= this.graceMs) return { kind: "disconnect", reason: "throttled" };
    return { kind: "wait", ms: wait };
  }

  /** Throttled without a break for the grace period, and still paused at `now`. */
  overGrace(now: number): boolean {
    return this.throttledSince !== undefined && now - this.throttledSince >= this.graceMs && now < this.waitedUntil;
  }

  /** In a throttling episode at `now`. */
  throttled(now: number): boolean {
    return this.throttledSince !== undefined && now <= this.waitedUntil + THROTTLE_GAP_MS;
  }

  /** Nothing to remember: no connection and both buckets full again. */
  idle(now: number): boolean {
    return this.connections === 0 && this.messages.full(now) && this.bytes.full(now);
  }
}

// ---- per connection -------------------------------------------------------------------------

/** Starts a timer; returns the function that cancels it. Injected (tests use a fake). */
export type SetTimer = (fn: () => void, ms: number) => () => void;

export interface GateEvents {
  /** The connection went from flowing to paused (counted once per episode). */
  onThrottle?: () => void;
  /** The connection must be closed; the gate has already dropped what it held. */
  onDisconnect: (reason: DisconnectReason) => void;
}

interface Held {
  at: number;
  qos1: boolean;
  go: () => void;
}

/**
 * The per-connection seam in front of the broker: every PUBLISH passes `submit` before the broker
 * sees it. Admitted messages go on at once; the others wait, in arrival order, behind one timer;
 * the broker reads nothing more from this connection meanwhile (see the top of this file).
 */
export class PublishGate {
  private readonly queue: Held[] = [];
  private head = 0;
  private cancel: (() => void) | undefined;
  private inflight = 0;
  private closed = false;

  constructor(
    private readonly identity: IdentityLimiter,
    private readonly options: { now: () => number; setTimer: SetTimer; maxPayload: number; maxInflight: number },
    private readonly events: GateEvents,
  ) {}

  /** Messages held now. */
  get held(): number {
    return this.queue.length - this.head;
  }

  get paused(): boolean {
    return this.held > 0;
  }

  /**
   * A PUBLISH of `payloadBytes` (+ `topicBytes`, counted against bytes/s too) arrived; `go` is
   * called when it may be handed on (synchronously when admitted at once), never when the
   * connection is to be closed instead (events.onDisconnect says so).
   */
  submit(topicBytes: number, payloadBytes: number, qos: number, go: () => void): void {
    if (this.closed) return;
    if (payloadBytes > this.options.maxPayload) return this.disconnect("payload");
    const now = this.options.now();
    const admission = this.identity.admit(topicBytes + payloadBytes, now);
    if (admission.kind === "disconnect") return this.disconnect(admission.reason);
    if (admission.kind === "admit" && this.held === 0) return go();
    // Behind a held message even when the bucket would admit it: order within a connection is kept.
    const wait = admission.kind === "wait" ? admission.ms : 0;
    const qos1 = qos > 0;
    if (qos1 && ++this.inflight > this.options.maxInflight) return this.disconnect("inflight");
    if (this.held === 0) this.events.onThrottle?.();
    this.queue.push({ at: now + wait, qos1, go });
    if (this.held === 1) this.arm();
  }

  /** The connection closed: what is held is dropped (the broker has forgotten this client). */
  close(): void {
    this.closed = true;
    this.cancel?.();
    this.cancel = undefined;
    this.queue.length = 0;
    this.head = 0;
  }

  private disconnect(reason: DisconnectReason): void {
    this.close();
    this.events.onDisconnect(reason);
  }

  private arm(): void {
    const first = this.queue[this.head]!;
    this.cancel = this.options.setTimer(() => this.release(), Math.max(0, Math.ceil(first.at - this.options.now())));
  }

  private release(): void {
    this.cancel = undefined;
    const now = this.options.now();
    while (!this.closed && this.head < this.queue.length && this.queue[this.head]!.at <= now) {
      const h = this.queue[this.head]!;
      this.queue[this.head++] = undefined as unknown as Held; // let it be collected
      if (h.qos1) this.inflight--;
      h.go();
    }
    if (this.closed) return;
    // Still paused after the grace: a whole read of a flooder can take longer to let through than
    // the grace, and it sends nothing new meanwhile (it cannot: we are not reading it).
    if (this.head < this.queue.length && this.identity.overGrace(now)) return this.disconnect("throttled");
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    } else this.arm();
  }
}

// ---- per source address ---------------------------------------------------------------------

export type AddressRefusal = "connections" | "attempts";

interface AddressState {
  open: number;
  attempts: TokenBucket;
}

/**
 * Open connections and connection attempts per source address, checked when the TCP connection
 * arrives, before its TLS handshake costs anything. Entries are forgotten once nothing is open
 * and the attempts bucket is full again.
 */
export class AddressLimiter {
  private readonly addresses = new Map<string, AddressState>();
  private lastSweep: number;

  constructor(
    private readonly maxConnections: number,
    private readonly attemptsPerMinute: number,
    private readonly now: () => number,
  ) {
    this.lastSweep = now();
  }

  /** A connection from `address` arrived: undefined if it may proceed (then call `closed` once it ends). */
  opened(address: string): AddressRefusal | undefined {
    const now = this.now();
    if (now - this.lastSweep > 60_000) this.sweep(now);
    let state = this.addresses.get(address);
    if (!state) {
      // Debt bounded at one minute's worth: a burst of attempts (one host behind a shared NAT) keeps
      // the address out while it lasts and for at most a minute after, not for hours.
      const attempts = new TokenBucket(this.attemptsPerMinute / 60, this.attemptsPerMinute, now, -this.attemptsPerMinute);
      state = { open: 0, attempts };
      this.addresses.set(address, state);
    }
    // A refused attempt costs a token too: hammering keeps the address out.
    if (state.attempts.take(1, now) > 0) return "attempts";
    if (state.open >= this.maxConnections) return "connections";
    state.open++;
    return undefined;
  }

  closed(address: string): void {
    const state = this.addresses.get(address);
    if (state && state.open > 0) state.open--;
  }

  /** Addresses remembered (for tests and metrics). */
  get size(): number {
    return this.addresses.size;
  }

  sweep(now = this.now()): void {
    this.lastSweep = now;
    for (const [address, state] of this.addresses) if (state.open === 0 && state.attempts.full(now)) this.addresses.delete(address);
  }
}

// ---- max packet size, on the socket's bytes -------------------------------------------------

/** MQTT fixed header overhead beyond the payload: topic (2 + up to 65,535), packet id, slack. */
const PUBLISH_OVERHEAD = 2 + 65_535 + 2 + 64;

/** The largest remaining length a packet may declare when payloads are limited to `maxPayload`. */
export function maxRemainingLength(maxPayload: number): number {
  return maxPayload + PUBLISH_OVERHEAD;
}

/**
 * Follows MQTT packet boundaries in the bytes read from a socket (fixed header: type byte and a
 * 1-4 byte remaining length) without parsing the packets, so a packet that declares more than
 * `max` bytes is refused as soon as its header arrives, before anyone buffers its body (the
 * broker's parser would keep appending until the declared length, up to 256 MiB, is there).
 */
export class MqttFrameScanner {
  private skip = 0;
  /** -1: expecting a packet's first byte; 0..3: that many remaining-length bytes read. */
  private lengthBytes = -1;
  private length = 0;
  private multiplier = 1;

  constructor(private readonly max: number) {}

  /** The next bytes of the stream. Returns undefined, or why the connection must be closed. */
  feed(chunk: Uint8Array): { reason: "too-large"; declared: number } | { reason: "malformed" } | undefined {
    let pos = 0;
    const end = chunk.length;
    while (pos < end) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, end - pos);
        this.skip -= n;
        pos += n;
        continue;
      }
      if (this.lengthBytes < 0) {
        pos++; // packet type and flags: the broker's parser checks them
        this.lengthBytes = 0;
        this.length = 0;
        this.multiplier = 1;
        continue;
      }
      const b = chunk[pos++]!;
      this.length += (b & 0x7f) * this.multiplier;
      this.multiplier *= 128;
      this.lengthBytes++;
      if (b & 0x80) {
        if (this.lengthBytes === 4) return { reason: "malformed" };
        continue;
      }
      if (this.length > this.max) return { reason: "too-large", declared: this.length };
      this.skip = this.length;
      this.lengthBytes = -1;
    }
    return undefined;
  }
}

// ---- all of it, for one gateway ---------------------------------------------------------------

export interface FloodCounters {
  /** Connections paused at least once (episodes). */
  throttled: number;
  /** Connections closed by the flood protection, by reason. */
  disconnected: Record<DisconnectReason, number>;
  /** Connections refused per source address, by reason. */
  refused: Record<AddressRefusal, number>;
  /** Packets refused before buffering because their declared size exceeded the limit. */
  oversized: number;
  /** Subscriptions refused by max_subscriptions. */
  subscriptionsRefused: number;
}

export function emptyFloodCounters(): FloodCounters {
  return {
    throttled: 0,
    disconnected: { throttled: 0, debt: 0, payload: 0, inflight: 0 },
    refused: { connections: 0, attempts: 0 },
    oversized: 0,
    subscriptionsRefused: 0,
  };
}

/**
 * The gateway's flood protection: identity limiters by key (shared by that identity's
 * connections), the per-address limiter, and the counters. One per gateway.
 */
export class FloodLimiter {
  readonly addresses: AddressLimiter;
  readonly counters: FloodCounters = emptyFloodCounters();
  private readonly identities = new Map<string, IdentityLimiter>();
  private readonly releasers = new WeakMap<PublishGate, () => void>();

  constructor(
    readonly limits: GatewayLimits,
    private readonly now: () => number,
    private readonly setTimer: SetTimer,
  ) {
    this.addresses = new AddressLimiter(limits.max_connections_per_address, limits.connection_attempts_per_minute, now);
  }

  rateFor(group: string | null | undefined): RateLimit {
    // hasOwn: a group named "constructor" must not find Object.prototype's.
    return group != null && Object.hasOwn(this.limits.groups, group) ? this.limits.groups[group]! : this.limits.default;
  }

  /**
   * A gate for a new connection of identity `key` (e.g. "device:robot-1"), in `group` if it is
   * a device. A reconnecting identity keeps its bucket (and its debt) until that has refilled.
   * `onDisconnect` must close the connection; call `release` when it has closed.
   */
  gate(key: string, group: string | null | undefined, onDisconnect: (reason: DisconnectReason) => void): PublishGate {
    const now = this.now();
    let identity = this.identities.get(key);
    const rate = this.rateFor(group);
    // A group change (or a config reload) gives the identity its new rate once it is idle.
    if (identity && identity.rate !== rate && identity.idle(now)) identity = undefined;
    if (!identity) {
      if (this.identities.size > 1024) this.sweep(now);
      identity = new IdentityLimiter(key, rate, this.limits.throttle_grace_seconds * 1000, this.limits.max_debt_seconds * 1000, now);
      this.identities.set(key, identity);
    }
    identity.connections++;
    const counters = this.counters;
    const gate = new PublishGate(
      identity,
      { now: this.now, setTimer: this.setTimer, maxPayload: this.limits.max_payload_bytes, maxInflight: this.limits.max_inflight },
      {
        onThrottle: () => counters.throttled++,
        onDisconnect: (reason) => {
          counters.disconnected[reason]++;
          onDisconnect(reason);
        },
      },
    );
    const owner = identity;
    let released = false;
    this.releasers.set(gate, () => {
      if (released) return;
      released = true;
      gate.close();
      owner.connections--;
    });
    return gate;
  }

  /** The gate's connection has closed. */
  release(gate: PublishGate): void {
    this.releasers.get(gate)?.();
  }

  /** May a connection holding `current` subscriptions (`alreadyHas`: this filter among them) add `filter`? */
  subscriptionAllowed(current: number, alreadyHas: boolean): boolean {
    if (alreadyHas || current < this.limits.max_subscriptions) return true;
    this.counters.subscriptionsRefused++;
    return false;
  }

  /** A scanner for one connection's inbound bytes. */
  scanner(): MqttFrameScanner {
    return new MqttFrameScanner(maxRemainingLength(this.limits.max_payload_bytes));
  }

  /** Identities remembered (for tests). */
  get size(): number {
    return this.identities.size;
  }

  sweep(now = this.now()): void {
    for (const [key, identity] of this.identities) if (identity.idle(now)) this.identities.delete(key);
  }
}

// ---- the gateway's seam ---------------------------------------------------------------------

/** What the seam needs of a gateway session (src/gateway/server.ts's GatewaySession has it). */
export interface FloodSession {
  readonly identity: AccessIdentity;
}

/** The socket the broker reads from; only `read` and `destroy` are used. */
export interface ReadableSocket {
  read(size?: number): unknown;
  destroy(error?: Error): unknown;
}

export type FloodVerdict = "allow" | "close";

export interface FloodSeamOptions {
  /** The gateway's counters (src/gateway/counters.ts): throttled, disconnected and refused by reason. */
  counters?: { throttled: number; disconnected: Record<string, number>; refused: Record<string, number> };
  /** One line per event worth an operator's attention (a flooder paused, disconnected, an oversized packet). */
  log?: (level: "info" | "warn", message: string, fields: Record<string, unknown>) => void;
}

function identityKey(identity: AccessIdentity): { key: string; group: string | null } {
  if (identity.kind === "device") return { key: `device:${identity.id}`, group: identity.group };
  return { key: `${identity.kind}:${identity.name}`, group: null };
}

const bumpCounter = (counter: Record<string, number>, reason: string): void => {
  counter[reason] = (counter[reason] ?? 0) + 1;
};

/**
 * Flood protection as the gateway calls it (GatewayLimitsSeam in src/gateway/server.ts):
 * per-address checks on every TCP connection, the frame-size check on every TLS socket's inbound
 * bytes, the gate on every PUBLISH of a session (a promise while it is held), and the
 * subscription count.
 */
export function floodSeam<S extends FloodSession>(flood: FloodLimiter, options: FloodSeamOptions = {}) {
  // Read at each event: the gateway's counters exist only once it has started, after this seam.
  const counters = () => options.counters;
  const log = (level: "info" | "warn", message: string, fields: Record<string, unknown>) => options.log?.(level, message, fields);
  interface State {
    gate: PublishGate;
    disconnected: DisconnectReason | undefined;
    /** Held PUBLISHes' promises: "close" settles them all when the gate disconnects. */
    held: Set<(v: FloodVerdict) => void>;
  }
  const gates = new WeakMap<S, State>();
  // Sessions already closed: a PUBLISH aedes still hands over from the batch it was parsing must not
  // open a gate that no sessionClosed would ever release (the identity would never be forgotten).
  const ended = new WeakSet<S>();
  const stateFor = (session: S) => {
    let state = gates.get(session);
    if (!state) {
      const { key, group } = identityKey(session.identity);
      const s: State = { gate: undefined as never, disconnected: undefined, held: new Set() };
      s.gate = flood.gate(key, group, (reason) => {
        s.disconnected = reason;
        // The broker closes the connection when a held PUBLISH is refused (no new one may ever come).
        for (const settle of s.held) settle("close");
        s.held.clear();
        bumpCounter(counters()?.disconnected ?? {}, `flood-${reason}`);
        log("warn", "client disconnected by flood protection", { identity: key, reason });
      });
      gates.set(session, s);
      state = s;
    }
    return state;
  };
  return {
    /** How long the broker waits for a full subscriber socket to drain before it disconnects it. */
    drainTimeoutMs: flood.limits.drain_timeout_seconds * 1000,
    connection(address: string): boolean {
      const refusal = flood.addresses.opened(address);
      if (refusal === undefined) return true;
      flood.counters.refused[refusal]++;
      bumpCounter(counters()?.refused ?? {}, `address-${refusal}`);
      return false;
    },
    connectionClosed(address: string): void {
      flood.addresses.closed(address);
    },
    /** Before the broker reads `socket`: a packet declaring more than the payload limit allows closes it at its header. */
    socket(socket: ReadableSocket): void {
      const scanner = flood.scanner();
      const read = socket.read.bind(socket);
      socket.read = (size?: number) => {
        const chunk = read(size);
        if (chunk instanceof Uint8Array) {
          const bad = scanner.feed(chunk);
          if (bad) {
            flood.counters.oversized++;
            bumpCounter(counters()?.disconnected ?? {}, bad.reason === "too-large" ? "flood-payload" : "malformed");
            log("warn", "connection closed: packet over the size limit", {
              ...bad,
              max: maxRemainingLength(flood.limits.max_payload_bytes),
            });
            socket.destroy();
            return null;
          }
        }
        return chunk;
      };
    },
    publish(session: S, p: { topic: string; payloadBytes: number; qos: number }): FloodVerdict | Promise<FloodVerdict> {
      if (ended.has(session)) return "close";
      const state = stateFor(session);
      const wasPaused = state.gate.paused;
      let passedNow = false;
      let resolveLater: ((v: FloodVerdict) => void) | undefined;
      state.gate.submit(Buffer.byteLength(p.topic), p.payloadBytes, p.qos, () => {
        if (!resolveLater) passedNow = true;
        else {
          state.held.delete(resolveLater);
          resolveLater("allow");
        }
      });
      if (state.disconnected) return "close";
      if (passedNow) return "allow";
      if (!wasPaused) {
        const c = counters();
        if (c) c.throttled++;
        log("info", "client paused by flood protection", { identity: identityKey(session.identity).key });
      }
      return new Promise<FloodVerdict>((resolve) => {
        resolveLater = resolve;
        state.held.add(resolve);
      });
    },
    /** May the session (holding `current` subscriptions; `has`: this filter among them) subscribe once more? */
    subscribe(current: number, has: () => boolean): boolean {
      if (current < flood.limits.max_subscriptions) return true;
      return flood.subscriptionAllowed(current, has());
    },
    sessionClosed(session: S): void {
      ended.add(session);
      const state = gates.get(session);
      if (state) flood.release(state.gate);
    },
  };
}

// ---- the broker's own inbound window ----------------------------------------------------------

/**
 * How many PUBLISHes the broker may hold between reading them and having delivered them, over all
 * clients. aedes 1.2 routes messages through mqemitter, which runs at most `concurrency` (100) at
 * once and queues the rest; when a queued message's delivery finishes synchronously (no matching
 * subscriber, e.g. after the subscriber left) the next one starts inside it, so a queue of a few
 * thousand messages overflows the stack ("Maximum call stack size exceeded": the process dies;
 * the gateway benchmark hit it at 2x overload). Waiting here keeps that queue short, and since
 * aedes reads a client's socket only once its last PUBLISH is done, the publishers are paused by
 * TCP backpressure instead. A PUBLISH that waits is started later through `defer` (setImmediate),
 * never from inside the completion of another, so the chain cannot grow the stack either.
 */
export class BrokerWindow {
  private inflight = 0;
  private readonly waiting: (() => void)[] = [];
  private head = 0;

  constructor(
    readonly max: number,
    private readonly defer: (fn: () => void) => void,
  ) {}

  /** Messages held by the broker now, and waiting to enter. */
  get load(): { inflight: number; waiting: number } {
    return { inflight: this.inflight, waiting: this.waiting.length - this.head };
  }

  /** Runs `start` now if there is room, else once there is; `start` must lead to exactly one `release`. */
  acquire(start: () => void): void {
    if (this.inflight < this.max && this.head === this.waiting.length) {
      this.inflight++;
      start();
    } else this.waiting.push(start);
  }

  release(): void {
    this.inflight--;
    if (this.head === this.waiting.length) return;
    const next = this.waiting[this.head]!;
    this.waiting[this.head++] = undefined as unknown as () => void;
    if (this.head === this.waiting.length) {
      this.waiting.length = 0;
      this.head = 0;
    }
    this.inflight++;
    this.defer(next);
  }
}
