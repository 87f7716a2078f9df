// "Last seen" of devices, from the gateway: each admission is noted in memory and written in
// batches (one transaction per batch), at most once a minute per device, so a fleet reconnecting
// at once costs the database a few transactions rather than one per CONNECT. Not audited: it is an
// observation, not a change of state. Enrollments and renewals need no recording here: the
// certificate rows carry their time.
import type { Logger } from "../log.js";
import type { FleetServices } from "./services.js";

/** A device is written again only this long after its last write. */
export const LAST_SEEN_RESOLUTION_MS = 60_000;

export interface LastSeenSink {
  /** The gateway admitted `deviceId` now. Cheap and synchronous; never throws. */
  seen(deviceId: string): void;
}

export class LastSeenRecorder implements LastSeenSink {
  /** Device id -> when it was last written (ms), pruned once older than the resolution. */
  private readonly written = new Map<string, number>();
  /** Device id -> when it was seen (ms), waiting for the next flush. */
  private readonly pending = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly fleet: Pick<FleetServices, "store" | "clock">,
    private readonly logger: Logger,
    /** How often pending sightings are written (ms). */
    private readonly intervalMs = 5_000,
  ) {}

  seen(deviceId: string): void {
    if (this.closed) return;
    const now = this.fleet.clock.now().getTime();
    const last = this.written.get(deviceId);
    if (last !== undefined && now - last < LAST_SEEN_RESOLUTION_MS) return;
    this.pending.set(deviceId, now);
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.intervalMs).unref();
  }

  /** Writes what is pending now (one transaction); resolves when written. Failures are logged, not thrown. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(() => this.write());
    return this.flushing;
  }

  private async write(): Promise<void> {
    if (this.pending.size === 0) return;
    const batch = [...this.pending];
    this.pending.clear();
    const now = this.fleet.clock.now().getTime();
    for (const [id, at] of this.written) if (now - at >= LAST_SEEN_RESOLUTION_MS) this.written.delete(id);
    for (const [id, at] of batch) this.written.set(id, at);
    try {
      await this.fleet.store.transaction((tx) =>
        tx.devices.recordLastSeen(batch.map(([id, at]) => ({ id, at: new Date(at).toISOString() }))),
      );
    } catch (e) {
      // Seen again later, written then: forget the write that did not happen.
      for (const [id] of batch) this.written.delete(id);
      this.logger.warn({ err: (e as Error).message, devices: batch.length }, "recording last-seen times failed");
    }
  }

  /** Writes what is pending and stops. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}
