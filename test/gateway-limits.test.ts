// Flood protection's pure core (src/gateway/limits.ts) on an injected clock and fake timers: token
// buckets, the per-connection gate that pauses then disconnects a flooder, the payload and
// packet-size checks, held QoS 1, subscriptions, per-address limits and the gateway.limits schema.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { generate } from "mqtt-packet";
import { ConfigError } from "../src/config/config.js";
import {
  AddressLimiter,
  BrokerWindow,
  DEFAULT_GATEWAY_LIMITS,
  FloodLimiter,
  IdentityLimiter,
  MqttFrameScanner,
  TokenBucket,
  floodSeam,
  maxRemainingLength,
  parseGatewayLimits,
  type Admission,
  type DisconnectReason,
  type GatewayLimits,
  type SetTimer,
} from "../src/gateway/limits.js";

/** A clock and timers that move only when told to. */
class FakeTime {
  t = 1_000_000;
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private nextId = 0;
  readonly now = (): number => this.t;
  readonly setTimer: SetTimer = (fn, ms) => {
    const id = this.nextId++;
    this.timers.push({ at: this.t + ms, fn, id });
    return () => {
      this.timers = this.timers.filter((x) => x.id !== id);
    };
  };
  get pending(): number {
    return this.timers.length;
  }
  /** Moves the clock forward by `ms`, firing due timers in order (each at its own time). */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at || a.id - b.id);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = Math.max(this.t, next.at);
      next.fn();
    }
    this.t = end;
  }
}

function limits(over: Partial<GatewayLimits> = {}): GatewayLimits {
  return {
    ...DEFAULT_GATEWAY_LIMITS,
    default: { messages_per_second: 10, bytes_per_second: 10_000, burst_seconds: 1 },
    throttle_grace_seconds: 5,
    max_debt_seconds: 30,
    ...over,
  };
}

describe("TokenBucket", () => {
  it("admits the burst, then owes: the wait is the time to pay the debt back at the rate", () => {
    const b = new TokenBucket(10, 10, 0);
    for (let i = 0; i < 10; i++) assert.equal(b.take(1, 0), 0);
    assert.equal(b.take(1, 0), 100); // one token short at 10/s
    assert.equal(b.take(1, 0), 200);
    assert.equal(b.take(1, 300), 0); // 300 ms refilled 3 tokens: balance back to +1, minus 1
    assert.equal(b.level(300), 0);
  });

  it("never refills beyond capacity, and a clock that steps back changes nothing", () => {
    const b = new TokenBucket(10, 5, 0);
    assert.equal(b.level(60_000), 5);
    b.take(5, 60_000);
    assert.equal(b.level(59_000), 0);
    assert.ok(b.full(60_500));
  });
});

describe("IdentityLimiter", () => {
  it("a client at its rate is never throttled; one above it waits, then is disconnected after the grace", () => {
    const time = new FakeTime();
    const id = new IdentityLimiter("device:a", { messages_per_second: 10, bytes_per_second: 1e6, burst_seconds: 1 }, 5000, 60_000, time.t);
    for (let i = 0; i < 100; i++) {
      assert.deepEqual(id.admit(10, time.t), { kind: "admit" });
      time.t += 100;
    }
    assert.equal(id.throttled(time.t), false);
    // Now 20/s: the 10-token burst lasts about a second, then every message waits.
    const kinds: string[] = [];
    let disconnectedAt: number | undefined;
    for (let i = 0; i < 400 && disconnectedAt === undefined; i++) {
      const a = id.admit(10, time.t);
      kinds.push(a.kind);
      if (a.kind === "disconnect") {
        assert.equal(a.reason, "throttled");
        disconnectedAt = time.t;
      }
      time.t += 50;
    }
    assert.ok(kinds.includes("wait"), "throttled before being disconnected");
    const firstWait = kinds.indexOf("wait");
    assert.ok(firstWait >= 15 && firstWait <= 25, `first wait after the burst (${firstWait})`);
    assert.ok(disconnectedAt !== undefined, "disconnected");
    const throttledFor = disconnectedAt - (1_000_000 + 100 * 100 + firstWait * 50);
    assert.ok(throttledFor >= 5000 && throttledFor < 5100, `disconnected once the grace had passed (${throttledFor} ms)`);
  });

  it("a burst that is paid back ends the throttling episode: the grace starts again", () => {
    const time = new FakeTime();
    const id = new IdentityLimiter("device:a", { messages_per_second: 10, bytes_per_second: 1e6, burst_seconds: 1 }, 5000, 60_000, time.t);
    for (let round = 0; round < 10; round++) {
      // 15 at once every 4 s: throttled for ~0.5 s each time, 40 s in all, never disconnected.
      for (let i = 0; i < 15; i++) assert.notEqual(id.admit(1, time.t).kind, "disconnect");
      time.t += 4000;
      assert.equal(id.admit(1, time.t).kind, "admit");
    }
  });

  it("a flooder paused behind backpressure stays in one episode even when its next read finds a token refilled", () => {
    const time = new FakeTime();
    const id = new IdentityLimiter("device:f", { messages_per_second: 10, bytes_per_second: 1e6, burst_seconds: 1 }, 2000, 60_000, time.t);
    // Reads of 15 messages; the next read arrives 150 ms after the last held one was let through
    // (a late timer): one or two tokens are back, so its first messages pass without waiting.
    let disconnected: Admission | undefined;
    for (let read = 0; read < 20 && !disconnected; read++) {
      let lastRelease = time.t;
      for (let i = 0; i < 15; i++) {
        const a = id.admit(1, time.t);
        if (a.kind === "disconnect") disconnected = a;
        if (a.kind === "wait") lastRelease = Math.max(lastRelease, time.t + a.ms);
      }
      time.t = lastRelease + 150;
    }
    assert.deepEqual(disconnected, { kind: "disconnect", reason: "throttled" });
    assert.ok(time.t - 1_000_000 < 6000, `disconnected after ${time.t - 1_000_000} ms of flooding`);
  });

  it("a debt beyond max_debt_seconds disconnects at once, and bytes/s counts as much as messages/s", () => {
    const time = new FakeTime();
    const id = new IdentityLimiter("device:a", { messages_per_second: 1000, bytes_per_second: 1000, burst_seconds: 1 }, 5000, 2000, time.t);
    assert.equal(id.admit(1000, time.t).kind, "admit");
    const wait = id.admit(1500, time.t);
    assert.deepEqual(wait, { kind: "wait", ms: 1500 }); // bytes, not messages, set the wait
    assert.deepEqual(id.admit(1000, time.t), { kind: "disconnect", reason: "debt" });
  });
});

describe("PublishGate", () => {
  function setup(over: Partial<GatewayLimits> = {}) {
    const time = new FakeTime();
    const flood = new FloodLimiter(limits(over), time.now, time.setTimer);
    const disconnects: DisconnectReason[] = [];
    const gate = flood.gate("device:robot-1", null, (r) => disconnects.push(r));
    const passed: number[] = [];
    return { time, flood, gate, disconnects, passed };
  }

  it("pauses a flooder: held messages go on in order, at the rate, behind one timer", () => {
    const { time, flood, gate, passed } = setup();
    for (let i = 0; i < 30; i++) gate.submit(5, 10, 0, () => passed.push(i));
    assert.equal(passed.length, 10, "the burst passes at once");
    assert.equal(gate.held, 20);
    assert.ok(gate.paused);
    assert.equal(time.pending, 1, "one timer, not one per message");
    assert.equal(flood.counters.throttled, 1);
    time.advance(1000);
    assert.equal(passed.length, 20, "10 more after 1 s at 10/s");
    time.advance(1000);
    assert.deepEqual(
      passed,
      Array.from({ length: 30 }, (_, i) => i),
      "all, in arrival order",
    );
    assert.equal(gate.paused, false);
    assert.equal(time.pending, 0);
  });

  it("a message arriving while others are held waits behind them even if the bucket has refilled", () => {
    const { time, gate, passed } = setup();
    for (let i = 0; i < 11; i++) gate.submit(0, 1, 0, () => passed.push(i));
    assert.equal(gate.held, 1);
    time.t += 5000; // the clock moved but the timer has not fired yet
    gate.submit(0, 1, 0, () => passed.push(11));
    assert.equal(passed.length, 10, "not overtaking message 10");
    time.advance(0);
    assert.deepEqual(passed.slice(10), [10, 11]);
  });

  it("disconnects a flooder that stays throttled past the grace, and drops what it held", () => {
    const { time, flood, gate, disconnects, passed } = setup({ throttle_grace_seconds: 2 });
    // A flooder behind backpressure: whenever its held messages are released, it sends 20 more.
    for (let round = 0; round < 20 && disconnects.length === 0; round++) {
      for (let i = 0; i < 20; i++) gate.submit(5, 10, 0, () => passed.push(1));
      time.advance(gate.held * 100);
    }
    assert.deepEqual(disconnects, ["throttled"]);
    assert.equal(flood.counters.disconnected.throttled, 1);
    assert.equal(flood.counters.throttled >= 1, true);
    assert.equal(gate.held, 0);
    assert.equal(time.pending, 0, "no timer left");
    const before = passed.length;
    gate.submit(5, 10, 0, () => passed.push(1));
    assert.equal(passed.length, before, "nothing passes a closed gate");
  });

  it("disconnects a flooder whose single read takes longer than the grace to let through", () => {
    const { time, gate, disconnects, passed } = setup({ throttle_grace_seconds: 2 });
    for (let i = 0; i < 100; i++) gate.submit(5, 10, 0, () => passed.push(i)); // 9 s of rate beyond the burst
    time.advance(1900);
    assert.deepEqual(disconnects, []);
    time.advance(200);
    assert.deepEqual(disconnects, ["throttled"]);
    assert.ok(passed.length >= 29 && passed.length <= 31, `let through until then: ${passed.length}`);
    assert.equal(time.pending, 0);
  });

  it("refuses a payload over max_payload_bytes with a disconnect", () => {
    const { gate, disconnects, passed } = setup({ max_payload_bytes: 1024 });
    gate.submit(10, 1024, 0, () => passed.push(1));
    gate.submit(10, 1025, 0, () => passed.push(2));
    assert.deepEqual(passed, [1]);
    assert.deepEqual(disconnects, ["payload"]);
  });

  it("disconnects when more QoS 1 messages are held unacknowledged than max_inflight (QoS 0 does not count)", () => {
    const { gate, disconnects } = setup({ max_inflight: 5 });
    for (let i = 0; i < 10; i++) gate.submit(1, 1, 1, () => {}); // the burst: admitted, acknowledged at once
    for (let i = 0; i < 20; i++) gate.submit(1, 1, 0, () => {});
    assert.deepEqual(disconnects, []);
    for (let i = 0; i < 5; i++) gate.submit(1, 1, 1, () => {});
    assert.deepEqual(disconnects, []);
    gate.submit(1, 1, 1, () => {});
    assert.deepEqual(disconnects, ["inflight"]);
  });

  it("one identity's connections share its bucket; another identity is unaffected", () => {
    const time = new FakeTime();
    const flood = new FloodLimiter(limits(), time.now, time.setTimer);
    const a1 = flood.gate("service:telemetry", null, () => {});
    const a2 = flood.gate("service:telemetry", null, () => {});
    const b = flood.gate("device:b", null, () => {});
    let passed = 0;
    for (let i = 0; i < 6; i++) a1.submit(0, 1, 0, () => passed++);
    for (let i = 0; i < 6; i++) a2.submit(0, 1, 0, () => passed++);
    assert.equal(passed, 10);
    for (let i = 0; i < 10; i++) b.submit(0, 1, 0, () => passed++);
    assert.equal(passed, 20);
    assert.equal(b.paused, false);
  });

  it("a reconnecting flooder keeps its debt; an identity is forgotten once idle and released", () => {
    const time = new FakeTime();
    const flood = new FloodLimiter(limits(), time.now, time.setTimer);
    const g1 = flood.gate("device:f", null, () => {});
    for (let i = 0; i < 30; i++) g1.submit(0, 1, 0, () => {});
    flood.release(g1);
    const g2 = flood.gate("device:f", null, () => {});
    let passed = 0;
    g2.submit(0, 1, 0, () => passed++);
    assert.equal(passed, 0, "no fresh burst for reconnecting");
    flood.release(g2);
    flood.release(g2); // twice is harmless
    time.advance(10_000);
    flood.sweep();
    assert.equal(flood.size, 0);
  });

  it("uses the device group's rate; a group named like an Object.prototype member gets the default", () => {
    const time = new FakeTime();
    const flood = new FloodLimiter(
      limits({ groups: { cameras: { messages_per_second: 100, bytes_per_second: 1e6, burst_seconds: 1 } } }),
      time.now,
      time.setTimer,
    );
    assert.equal(flood.rateFor("cameras").messages_per_second, 100);
    assert.equal(flood.rateFor("constructor").messages_per_second, 10);
    assert.equal(flood.rateFor(null).messages_per_second, 10);
    let passed = 0;
    const g = flood.gate("device:cam", "cameras", () => {});
    for (let i = 0; i < 100; i++) g.submit(0, 1, 0, () => passed++);
    assert.equal(passed, 100);
  });
});

describe("subscriptions", () => {
  it("refuses a new filter beyond max_subscriptions, but not a re-subscription", () => {
    const time = new FakeTime();
    const flood = new FloodLimiter(limits({ max_subscriptions: 2 }), time.now, time.setTimer);
    assert.equal(flood.subscriptionAllowed(1, false), true);
    assert.equal(flood.subscriptionAllowed(2, false), false);
    assert.equal(flood.subscriptionAllowed(2, true), true);
    assert.equal(flood.counters.subscriptionsRefused, 1);
  });
});

describe("AddressLimiter", () => {
  it("limits open connections per address and frees a slot when one closes", () => {
    const time = new FakeTime();
    const a = new AddressLimiter(2, 1000, time.now);
    assert.equal(a.opened("10.0.0.1"), undefined);
    assert.equal(a.opened("10.0.0.1"), undefined);
    assert.equal(a.opened("10.0.0.1"), "connections");
    assert.equal(a.opened("10.0.0.2"), undefined, "another address is not affected");
    a.closed("10.0.0.1");
    assert.equal(a.opened("10.0.0.1"), undefined);
  });

  it("limits attempts per minute (refused attempts count), refilling over the minute; forgets idle addresses", () => {
    const time = new FakeTime();
    const a = new AddressLimiter(1000, 6, time.now);
    for (let i = 0; i < 6; i++) {
      assert.equal(a.opened("10.0.0.1"), undefined);
      a.closed("10.0.0.1");
    }
    assert.equal(a.opened("10.0.0.1"), "attempts");
    time.t += 10_000; // one attempt's worth at 6/min, but the refused one is owed first
    assert.equal(a.opened("10.0.0.1"), "attempts");
    time.t += 20_000;
    assert.equal(a.opened("10.0.0.1"), undefined);
    a.closed("10.0.0.1");
    time.t += 120_000;
    a.sweep();
    assert.equal(a.size, 0);
  });
});

describe("MqttFrameScanner", () => {
  const publish = (payloadBytes: number) =>
    generate({ cmd: "publish", topic: "fleet/robot-1/t", payload: Buffer.alloc(payloadBytes), qos: 0, retain: false, dup: false });

  it("follows packet boundaries across any split and refuses a declared length over the limit at its header", () => {
    const max = maxRemainingLength(1024);
    const stream = Buffer.concat([
      generate({ cmd: "connect", clientId: "robot-1", protocolId: "MQTT", protocolVersion: 4, clean: true, keepalive: 30 }),
      publish(10),
      publish(1024),
      generate({ cmd: "pingreq" }),
      publish(200),
    ]);
    for (const step of [1, 2, 3, 7, 64, stream.length]) {
      const s = new MqttFrameScanner(max);
      for (let i = 0; i < stream.length; i += step) assert.equal(s.feed(stream.subarray(i, i + step)), undefined, `step ${step}`);
    }
    // A header that declares 10 MiB: refused after its 5 header bytes, before any body byte.
    const huge = publish(10 * 1024 * 1024).subarray(0, 5);
    const s = new MqttFrameScanner(max);
    assert.equal(s.feed(publish(10)), undefined);
    const verdict = s.feed(huge);
    assert.equal(verdict?.reason, "too-large");
    assert.ok(verdict?.reason === "too-large" && verdict.declared > 10 * 1024 * 1024);
  });

  it("refuses a remaining length longer than 4 bytes", () => {
    const s = new MqttFrameScanner(1e9);
    assert.deepEqual(s.feed(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])), { reason: "malformed" });
  });
});

describe("gateway.limits configuration", () => {
  it("absent: the defaults (256 KiB payload)", () => {
    assert.deepEqual(parseGatewayLimits(undefined), DEFAULT_GATEWAY_LIMITS);
    assert.equal(DEFAULT_GATEWAY_LIMITS.max_payload_bytes, 256 * 1024);
  });

  it("groups inherit missing fields from default", () => {
    const l = parseGatewayLimits({
      default: { messages_per_second: 50, bytes_per_second: 5000, burst_seconds: 2 },
      groups: { cameras: { bytes_per_second: 2_000_000 } },
      max_payload_bytes: 1024,
    });
    assert.deepEqual(l.groups.cameras, { messages_per_second: 50, bytes_per_second: 2_000_000, burst_seconds: 2 });
    assert.equal(l.max_payload_bytes, 1024);
    assert.equal(l.max_subscriptions, DEFAULT_GATEWAY_LIMITS.max_subscriptions);
  });

  it("drain_timeout_seconds: 5 by default, may be fractional, reaches the gateway in ms", () => {
    assert.equal(DEFAULT_GATEWAY_LIMITS.drain_timeout_seconds, 5);
    const l = parseGatewayLimits({ drain_timeout_seconds: 0.5 });
    assert.equal(l.drain_timeout_seconds, 0.5);
    const time = new FakeTime();
    assert.equal(floodSeam(new FloodLimiter(l, time.now, time.setTimer)).drainTimeoutMs, 500);
  });

  it("refuses unknown keys, non-positive and non-integer values, with the setting's name", () => {
    const bad: [unknown, RegExp][] = [
      [{ max_payload: 1 }, /gateway\.limits: unknown key "max_payload"/],
      [{ default: { messages_per_second: 0 } }, /gateway\.limits\.default\.messages_per_second must be a positive number/],
      [{ groups: { lab: { burst_seconds: -1 } } }, /gateway\.limits\.groups\.lab\.burst_seconds must be a positive number/],
      [{ groups: { lab: { burst: 1 } } }, /gateway\.limits\.groups\.lab: unknown key "burst"/],
      [{ max_subscriptions: 1.5 }, /max_subscriptions must be a positive integer/],
      [{ max_inflight: "10" }, /max_inflight must be a positive integer/],
      // 0 would switch aedes' drain timeout off: one subscriber that stops reading stalls every delivery.
      [{ drain_timeout_seconds: 0 }, /gateway\.limits\.drain_timeout_seconds must be a positive number/],
      [{ drain_timeout_seconds: "5" }, /gateway\.limits\.drain_timeout_seconds must be a positive number/],
      [{ max_payload_bytes: 300 * 1024 * 1024 }, /max_payload_bytes must be at most/],
      [{ groups: [] }, /groups must be a mapping/],
      ["fast", /gateway\.limits must be a mapping/],
    ];
    for (const [value, message] of bad)
      assert.throws(
        () => parseGatewayLimits(value),
        (e: unknown) => e instanceof ConfigError && message.test(e.message),
      );
  });
});

describe("floodSeam (the gateway's side)", () => {
  const device = { identity: { kind: "device" as const, id: "robot-1", group: null, labels: {} } };

  it("answers allow at once, a promise while paused (settled when released), close when disconnected", async () => {
    const time = new FakeTime();
    const counters = { throttled: 0, disconnected: {} as Record<string, number>, refused: {} as Record<string, number> };
    const seam = floodSeam(new FloodLimiter(limits({ throttle_grace_seconds: 1 }), time.now, time.setTimer), { counters });
    const p = { topic: "fleet/robot-1/t", payloadBytes: 10, qos: 0 };
    for (let i = 0; i < 10; i++) assert.equal(seam.publish(device, p), "allow");
    const held = seam.publish(device, p);
    assert.ok(held instanceof Promise);
    assert.equal(counters.throttled, 1);
    time.advance(100);
    assert.equal(await held, "allow");
    // Still over the rate a second later: disconnected.
    for (let i = 0; i < 20; i++) void seam.publish(device, p);
    time.advance(1000);
    assert.equal(seam.publish(device, p), "close");
    assert.deepEqual(counters.disconnected, { "flood-throttled": 1 });
  });

  it("wraps a socket's read: an oversized packet header destroys the socket and nothing is handed on", () => {
    const time = new FakeTime();
    const counters = { throttled: 0, disconnected: {} as Record<string, number>, refused: {} as Record<string, number> };
    const seam = floodSeam(new FloodLimiter(limits({ max_payload_bytes: 1024 }), time.now, time.setTimer), { counters });
    const chunks = [
      generate({ cmd: "pingreq" }),
      generate({ cmd: "publish", topic: "t", payload: Buffer.alloc(100 * 1024), qos: 0, retain: false, dup: false }).subarray(0, 8),
    ];
    let destroyed = 0;
    const socket = { read: (): Buffer | null => chunks.shift() ?? null, destroy: () => void destroyed++ };
    seam.socket(socket);
    assert.ok(socket.read() instanceof Buffer, "a small packet passes");
    assert.equal(socket.read(), null, "the oversized header does not");
    assert.equal(destroyed, 1);
    assert.deepEqual(counters.disconnected, { "flood-payload": 1 });
  });

  it("refuses an address over its limits and counts why", () => {
    const time = new FakeTime();
    const counters = { throttled: 0, disconnected: {} as Record<string, number>, refused: {} as Record<string, number> };
    const seam = floodSeam(new FloodLimiter(limits({ max_connections_per_address: 1 }), time.now, time.setTimer), { counters });
    assert.equal(seam.connection("10.0.0.1"), true);
    assert.equal(seam.connection("10.0.0.1"), false);
    seam.connectionClosed("10.0.0.1");
    assert.equal(seam.connection("10.0.0.1"), true);
    assert.deepEqual(counters.refused, { "address-connections": 1 });
  });
});

describe("BrokerWindow", () => {
  it("runs at most max at once, the rest in arrival order, each started from the deferred queue, never inside a release", () => {
    const deferred: (() => void)[] = [];
    const w = new BrokerWindow(2, (fn) => deferred.push(fn));
    const started: number[] = [];
    for (let i = 0; i < 5; i++) w.acquire(() => started.push(i));
    assert.deepEqual(started, [0, 1]);
    assert.deepEqual(w.load, { inflight: 2, waiting: 3 });
    w.release();
    assert.deepEqual(started, [0, 1], "not started inside release()");
    deferred.shift()!();
    assert.deepEqual(started, [0, 1, 2]);
    // 100,000 messages that complete synchronously: no recursion through the window.
    const big = new BrokerWindow(1, (fn) => deferred.push(fn));
    let done = 0;
    for (let i = 0; i < 100_000; i++) big.acquire(() => (done++, big.release()));
    while (deferred.length > 0) deferred.shift()!();
    assert.equal(done, 100_000);
    assert.deepEqual(big.load, { inflight: 0, waiting: 0 });
  });
});
