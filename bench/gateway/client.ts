// The gateway benchmark's load generator: MQTT 3.1.1 over raw TLS sockets with packets built once
// by mqtt-packet's generate, and inbound bytes only framed and counted, never parsed into objects.
// 200 MQTT.js clients would spend more CPU per message than the brokers they measure.
import { connect as tlsConnect, type SecureContext, type TLSSocket } from "node:tls";
import { generate } from "mqtt-packet";

/** MQTT control packet types (high nibble of the first byte). */
const CONNACK = 2;
const PUBLISH = 3;
const PUBACK = 4;
const SUBACK = 9;

export interface MqttCounts {
  /** PUBLISH packets received (a subscriber's deliveries). */
  published: number;
  /** PUBACKs received (a QoS 1 publisher's acknowledgements). */
  acked: number;
}

/**
 * One MQTT connection. Frames inbound packets with a 1-4 byte remaining length and counts them;
 * CONNACK and SUBACK settle the pending handshake promise. Everything else is ignored.
 */
export class LeanMqtt {
  readonly counts: MqttCounts = { published: 0, acked: 0 };
  closed = false;
  closeReason: string | undefined;
  /** Called for every PUBACK (a QoS 1 publisher's window opens). */
  onAck: (() => void) | undefined;
  /** Acknowledge QoS 1 deliveries (PUBACK), as a real consumer must: one write per read. */
  autoAck = false;
  /** The last message id used by publishWithIds. */
  nextId = 0;
  private pending: { type: number; resolve: (body: Buffer) => void; reject: (e: Error) => void } | undefined;
  private rest: Buffer = Buffer.alloc(0);

  constructor(readonly socket: TLSSocket) {
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (e) => this.fail(e.message));
    socket.on("close", () => this.fail("closed"));
  }

  private fail(reason: string): void {
    if (!this.closed) {
      this.closed = true;
      this.closeReason = reason;
    }
    const p = this.pending;
    this.pending = undefined;
    p?.reject(new Error(`connection ${reason}`));
  }

  /** Resolves with the body of the next packet of `type` (CONNACK, SUBACK). */
  private expect(type: number, timeoutMs: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no packet type ${type} within ${timeoutMs} ms`)), timeoutMs);
      this.pending = {
        type,
        resolve: (b) => (clearTimeout(timer), resolve(b)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
    });
  }

  private onData(chunk: Buffer): void {
    const buf = this.rest.length > 0 ? Buffer.concat([this.rest, chunk]) : chunk;
    let pos = 0;
    let acks: number[] | undefined;
    for (;;) {
      if (buf.length - pos < 2) break;
      let length = 0;
      let multiplier = 1;
      let i = pos + 1;
      let complete = false;
      for (; i < buf.length && i < pos + 5; i++) {
        const b = buf[i]!;
        length += (b & 0x7f) * multiplier;
        multiplier *= 128;
        if (!(b & 0x80)) {
          complete = true;
          i++;
          break;
        }
      }
      if (!complete || buf.length < i + length) break;
      const type = buf[pos]! >> 4;
      if (type === PUBLISH) {
        this.counts.published++;
        // QoS > 0: the packet id follows the topic (2-byte length + topic).
        if (this.autoAck && (buf[pos]! >> 1) & 3) (acks ??= []).push(buf.readUInt16BE(i + 2 + buf.readUInt16BE(i)));
      } else if (type === PUBACK) {
        this.counts.acked++;
        this.onAck?.();
      } else if (this.pending && type === this.pending.type) {
        const p = this.pending;
        this.pending = undefined;
        p.resolve(buf.subarray(i, i + length));
      }
      pos = i + length;
    }
    this.rest = pos < buf.length ? Buffer.from(buf.subarray(pos)) : Buffer.alloc(0);
    if (acks) {
      const out = Buffer.allocUnsafe(acks.length * 4);
      acks.forEach((id, k) => out.writeUInt32BE((0x40 << 24) | (0x02 << 16) | id, k * 4));
      this.socket.write(out);
    }
  }

  /**
   * Writes `n` copies of the QoS 1 PUBLISH `template` with consecutive message ids, in one write;
   * returns what write() returned (false: the broker is not reading fast enough).
   */
  publishWithIds(template: Buffer, n: number): boolean {
    const offset = publishIdOffset(template);
    const out = Buffer.allocUnsafe(template.length * n);
    for (let k = 0; k < n; k++) {
      template.copy(out, k * template.length);
      this.nextId = (this.nextId % 65535) + 1;
      out.writeUInt16BE(this.nextId, k * template.length + offset);
    }
    return this.socket.write(out);
  }

  /** CONNECT; resolves once CONNACK accepted it. */
  async connect(clientId: string, timeoutMs = 30_000): Promise<void> {
    const ack = this.expect(CONNACK, timeoutMs);
    this.socket.write(generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId, clean: true, keepalive: 0 }));
    const body = await ack;
    if (body[1] !== 0) throw new Error(`CONNACK return code ${body[1]} for ${clientId}`);
  }

  async subscribe(filter: string, qos: 0 | 1, timeoutMs = 30_000): Promise<void> {
    const ack = this.expect(SUBACK, timeoutMs);
    this.socket.write(generate({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: filter, qos }] }));
    const body = await ack;
    if (body[2] === 0x80) throw new Error(`SUBACK refused ${filter}`);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A TLS connection to 127.0.0.1:port, resolved after the handshake. */
export function connectTls(port: number, secureContext: SecureContext, timeoutMs = 30_000): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port, secureContext, servername: "localhost" }, () => {
      clearTimeout(timer);
      socket.off("error", reject);
      socket.setNoDelay(true);
      resolve(socket);
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`TLS handshake with 127.0.0.1:${port} did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** Where a QoS > 0 PUBLISH packet's message id sits: after the fixed header and the topic. */
export function publishIdOffset(packet: Buffer): number {
  let i = 1;
  while (packet[i]! & 0x80) i++;
  i++;
  return i + 2 + packet.readUInt16BE(i);
}
