// "Is this certificate (or this device) good?", answered from memory: every certificate's status,
// every device's and every CA's, loaded once and kept current by the change feed's events. The
// questions are synchronous, so no answer can wait on (or load) the database: a listener such as
// the gateway asks at every connection. A change made by any process (the CLI included) is
// reflected once the feed has delivered its event (a poll, ~200 ms).
//
// Memory: one small entry per certificate ever recorded (no DER), about 200-300 bytes each.
import { parseCertificate, sha256Fingerprint } from "../../x509/certificate.js";
import type { StatusSnapshot } from "../../store/operations/status.js";
import type { CertificateTable, DeviceTable } from "../../store/schema.js";
import { InvalidArgument } from "../errors.js";
import { isUnreadableDeviceChange, type FleetEvent } from "../events/events.js";
import type { FleetServices } from "../services.js";
import { normalizeSerial } from "./revocation.js";

/**
 * expired: issued by this fleet, neither revoked nor held, but past its notAfter at the fleet clock's
 * now (revocation leaves expired certificates alone, so a revoked device's expired one is not "revoked").
 */
export type CertificateVerdict = "good" | "expired" | "revoked" | "held" | "unknown";

export interface CertificateAnswer {
  status: CertificateVerdict;
  /** The serial asked about, in the stored form (lower-case hex). */
  serial: string;
  /** What is known of it (absent for `unknown`). */
  issuerCa?: string;
  kind?: CertificateTable["kind"];
  deviceId?: string | null;
  /** Whom it identifies (device id, service or operator name, ...): a listener checks the SAN's name against it. */
  subjectId?: string;
  notAfter?: Date;
  /** revoked or held: the RFC 5280 reason (cACompromise when a CA on its chain was revoked). */
  reason?: string;
  /** revoked or held: since when, where known. */
  since?: Date;
}

export interface DeviceAnswer {
  deviceId: string;
  status: DeviceTable["status"] | "unknown";
  /** The device's group and labels, as access decisions read them (null and {} when unknown). */
  group: string | null;
  labels: Readonly<Record<string, string>>;
  /** The device's unexpired certificates, newest expiry first, each with its own status. */
  certificates: CertificateAnswer[];
}

/**
 * What a batch of events changed, told to `onChange` listeners once it is applied: the devices whose
 * status, group or labels changed, the certificates whose status changed, the CAs revoked or whose
 * CRL changed. `all`: the state was read afresh (a change could not be decoded): re-check everything.
 */
export interface StatusChangeNotice {
  deviceIds: string[];
  serials: string[];
  cas: string[];
  all: boolean;
}
export type StatusChangeListener = (change: StatusChangeNotice) => void;

/** What the metrics count from memory (CertificateStatus.census). */
export interface StatusCensus {
  /** Devices by status. */
  devices: Record<string, number>;
  /** One per window asked for: certificates in force ending within it, by kind. */
  expiring: Record<string, number>[];
}

/** A certificate by issuing CA and serial (as stored or as openssl prints it), or by its DER. */
export type CertificateQuery = { issuerCa: string; serial: string } | { der: Uint8Array };

interface Entry {
  issuerCa: string;
  kind: CertificateTable["kind"];
  deviceId: string | null;
  subjectId: string;
  notAfterMs: number;
  fingerprint: string | null;
  status: CertificateTable["status"];
  reason: string | null;
  sinceMs: number | null;
}

interface DeviceEntry {
  status: DeviceTable["status"];
  group: string | null;
  labels: Readonly<Record<string, string>>;
}

/** Stored labels (JSON text) as an object of strings; anything else reads as none (it cannot widen access). */
function parseLabels(text: string): Record<string, string> {
  try {
    const v: unknown = JSON.parse(text);
    if (v && typeof v === "object" && !Array.isArray(v) && Object.values(v).every((x) => typeof x === "string"))
      return v as Record<string, string>;
  } catch {
    // fall through
  }
  return {};
}

interface CaEntry {
  serial: string;
  revoked: boolean;
}

/** A certificate just issued (CertificateIssued, CaCreated): valid, never revoked. */
function issuedEntry(
  event: { issuerCa: string; notAfter: Date; fingerprint: string | null },
  kind: CertificateTable["kind"],
  deviceId: string | null,
  subjectId: string,
): Entry {
  const notAfterMs = event.notAfter.getTime();
  return {
    issuerCa: event.issuerCa,
    kind,
    deviceId,
    subjectId,
    notAfterMs,
    fingerprint: event.fingerprint,
    status: "valid",
    reason: null,
    sinceMs: null,
  };
}

const timeMs = (iso: string | null): number | null => {
  if (iso === null) return null;
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? null : ms;
};

export class CertificateStatus {
  private readonly certificates = new Map<string, Entry>();
  private readonly byDevice = new Map<string, Set<string>>();
  private readonly devices = new Map<string, DeviceEntry>();
  private readonly listeners = new Set<{ listener: StatusChangeListener; onError: (e: unknown) => void }>();
  private readonly cas = new Map<string, CaEntry>();
  /** Events up to here are already in the loaded snapshot. */
  private loadedSeq = 0;
  private reloading: Promise<void> | undefined;
  /** Events delivered while a reload reads the snapshot: applied again on top of it. */
  private duringReload: FleetEvent[] | undefined;
  /** A reload failed: try again at the next events. */
  private stale = false;

  private constructor(private readonly fleet: FleetServices) {}

  /**
   * Loads every certificate, device and CA once. Start the change feed first and subscribe
   * `apply` to it: events the snapshot already holds are skipped, later ones applied.
   */
  static async load(fleet: FleetServices): Promise<CertificateStatus> {
    const status = new CertificateStatus(fleet);
    status.fill(await fleet.store.ops.status.statusSnapshot());
    return status;
  }

  private fill(snapshot: StatusSnapshot): void {
    this.certificates.clear();
    this.byDevice.clear();
    this.devices.clear();
    this.cas.clear();
    this.loadedSeq = snapshot.seq;
    for (const ca of snapshot.cas) this.cas.set(ca.id, { serial: ca.serial, revoked: ca.status === "revoked" });
    for (const d of snapshot.devices) this.devices.set(d.id, { status: d.status, group: d.group_name, labels: parseLabels(d.labels) });
    for (const c of snapshot.certificates)
      this.put(c.serial, {
        issuerCa: c.issuer_ca,
        kind: c.kind,
        deviceId: c.device_id,
        subjectId: c.subject_id,
        notAfterMs: Date.parse(c.not_after),
        fingerprint: c.fingerprint_sha256 || null,
        status: c.status,
        reason: c.revocation_reason,
        sinceMs: timeMs(c.revoked_at),
      });
  }

  /**
   * A status change whose audit row cannot be decoded changed something unknown: the snapshot is read
   * again (the events delivered meanwhile are applied on top), else a revoked certificate stays good.
   * Asked again while reading: once more after it. A failed read is tried again at the next events.
   */
  private reload(): void {
    this.stale = true;
    if (this.reloading) return;
    this.stale = false;
    const during: FleetEvent[] = [];
    this.duringReload = during;
    let failed = false;
    this.reloading = (async () => {
      try {
        const snapshot = await this.fleet.store.ops.status.statusSnapshot();
        this.fill(snapshot);
        this.duringReload = undefined;
        this.apply(during);
        this.notify({ deviceIds: [], serials: [], cas: [], all: true });
      } catch {
        failed = this.stale = true;
      } finally {
        this.duringReload = undefined;
        this.reloading = undefined;
      }
      if (this.stale && !failed) this.reload();
    })();
  }

  /** Resolves once the reloads under way (see reload) have finished. */
  async settled(): Promise<void> {
    while (this.reloading) await this.reloading;
  }

  /**
   * Tells `listener` what changed after each batch of events is applied (the answers already say
   * it), e.g. to close a revoked device's sessions. A listener that throws goes to `onError` and
   * keeps neither the others nor the status room from the batch. Returns the unsubscribe function.
   */
  onChange(listener: StatusChangeListener, onError: (e: unknown) => void = () => {}): () => void {
    const entry = { listener, onError };
    this.listeners.add(entry);
    return () => void this.listeners.delete(entry);
  }

  /** Follows the feed: a ChangeListener. */
  apply(events: readonly FleetEvent[]): void {
    this.duringReload?.push(...events);
    if (this.stale) this.reload();
    const deviceIds = new Set<string>();
    const serials = new Set<string>();
    const cas = new Set<string>();
    const changed = (event: { serials: readonly string[]; cas: readonly string[] }, deviceId?: string): void => {
      if (deviceId !== undefined) deviceIds.add(deviceId);
      for (const serial of event.serials) {
        serials.add(serial);
        // A certificate revoked on its own still names its device, whose sessions use it.
        const owner = this.certificates.get(serial)?.deviceId;
        if (owner) deviceIds.add(owner);
      }
      for (const ca of event.cas) cas.add(ca);
    };
    for (const event of events) {
      if (event.seq <= this.loadedSeq) continue;
      if (isUnreadableDeviceChange(event)) this.reload();
      const at = event.at.getTime();
      switch (event.type) {
        case "CertificateIssued":
          this.put(event.serial, issuedEntry(event, event.kind, event.deviceId, event.subjectId));
          break;
        case "CaCreated":
          this.cas.set(event.caId, { serial: event.serial, revoked: false });
          this.put(event.serial, issuedEntry(event, "ca", null, event.caId));
          break;
        case "DeviceAdded":
          this.devices.set(event.deviceId, { status: "active", group: event.group, labels: { ...event.labels } });
          break;
        case "DeviceUpdated": {
          const device = this.devices.get(event.deviceId);
          if (device) Object.assign(device, { group: event.group, labels: { ...event.labels } });
          deviceIds.add(event.deviceId);
          break;
        }
        case "DeviceRemoved":
          this.setDevice(event.deviceId, "removed");
          this.setStatus(event.serials, "revoked", event.reason, at);
          changed(event, event.deviceId);
          break;
        case "DeviceRevoked":
          this.setDevice(event.deviceId, "revoked");
          this.setStatus(event.serials, "revoked", event.reason, at);
          changed(event, event.deviceId);
          break;
        case "DeviceHeld":
          this.setDevice(event.deviceId, "held");
          this.setStatus(event.serials, "hold", "certificateHold", at);
          changed(event, event.deviceId);
          break;
        case "DeviceUnheld":
          this.setDevice(event.deviceId, "active");
          this.setStatus(event.serials, "valid", null, null);
          changed(event, event.deviceId);
          break;
        case "CertificateRevoked":
          this.setStatus(event.serials, "revoked", event.reason, at);
          changed(event);
          break;
        case "CaRevoked": {
          const ca = this.cas.get(event.caId);
          if (ca) ca.revoked = true;
          this.setStatus(event.serials, "revoked", event.reason, at);
          changed(event);
          cas.add(event.caId);
          break;
        }
        case "CrlImported":
          // An imported (offline root's) CRL changes no status kept here, but relying parties reload it.
          for (const ca of event.cas) cas.add(ca);
          break;
        default:
          break;
      }
    }
    if (deviceIds.size + serials.size + cas.size > 0)
      this.notify({ deviceIds: [...deviceIds].sort(), serials: [...serials].sort(), cas: [...cas].sort(), all: false });
  }

  private notify(change: StatusChangeNotice): void {
    for (const { listener, onError } of this.listeners) {
      try {
        listener(change);
      } catch (e) {
        onError(e);
      }
    }
  }

  private setDevice(deviceId: string, status: DeviceTable["status"]): void {
    const device = this.devices.get(deviceId);
    if (device) device.status = status;
    else this.devices.set(deviceId, { status, group: null, labels: {} });
  }

  /**
   * The certificate's status at the fleet clock's now: unknown for anything this fleet did not issue
   * (a DER must be byte for byte the one issued), expired past its notAfter.
   */
  certificate(query: CertificateQuery): CertificateAnswer {
    const now = this.fleet.clock.now().getTime();
    if ("der" in query) {
      let serial: string;
      try {
        serial = normalizeSerial(parseCertificate(Buffer.from(query.der)).serialHex);
      } catch (e) {
        throw new InvalidArgument(`not a DER certificate: ${(e as Error).message}`);
      }
      const entry = this.certificates.get(serial);
      // Without a recorded fingerprint nothing shows the DER is the one issued: unknown, never good.
      if (!entry || entry.fingerprint === null || entry.fingerprint !== sha256Fingerprint(query.der)) return { status: "unknown", serial };
      return this.answer(serial, entry, now);
    }
    const serial = normalizeSerial(query.serial);
    const entry = this.certificates.get(serial);
    if (!entry || entry.issuerCa !== query.issuerCa) return { status: "unknown", serial };
    return this.answer(serial, entry, now);
  }

  /** The device's status and its unexpired certificates' (at the fleet clock's now). */
  device(deviceId: string): DeviceAnswer {
    const device = this.devices.get(deviceId);
    const status = device?.status ?? "unknown";
    const now = this.fleet.clock.now().getTime();
    const certificates: CertificateAnswer[] = [];
    for (const serial of this.byDevice.get(deviceId) ?? []) {
      const entry = this.certificates.get(serial)!;
      if (entry.notAfterMs > now) certificates.push(this.answer(serial, entry, now));
    }
    certificates.sort((a, b) => b.notAfter!.getTime() - a.notAfter!.getTime());
    return { deviceId, status, group: device?.group ?? null, labels: { ...device?.labels }, certificates };
  }

  /** The kind of a certificate this fleet recorded (serial in the stored form); undefined when unknown. */
  kindOf(serial: string): CertificateTable["kind"] | undefined {
    return this.certificates.get(serial)?.kind;
  }

  /**
   * Counts for the metrics, from memory: devices by status; per window (ms from the fleet clock's
   * now), the certificates in force ending within it, by kind. As `cert expiring`: in force is not
   * revoked (held counts), not expired, no revoked CA on its chain; a certificate that an unrevoked
   * one of the same kind and subject outlasts (a renewal) is left out; the server certificate is one
   * subject. A pass over every certificate (hundreds of ms for 300,000 on a busy machine): it yields
   * to the event loop every few thousand entries so connections are not held up, and callers cache it.
   */
  async census(windowsMs: readonly number[]): Promise<StatusCensus> {
    const yieldEvery = 5_000;
    let seen = 0;
    const pause = async (): Promise<void> => {
      if (++seen % yieldEvery === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    };
    const devices: Record<string, number> = {};
    for (const d of this.devices.values()) {
      devices[d.status] = (devices[d.status] ?? 0) + 1;
      await pause();
    }
    // A subject's latest-ending unrevoked certificate, by kind then subject.
    const latest = new Map<string, Map<string, Entry>>();
    for (const entry of this.certificates.values()) {
      await pause();
      if (entry.status === "revoked") continue;
      let ofKind = latest.get(entry.kind);
      if (!ofKind) latest.set(entry.kind, (ofKind = new Map()));
      const subject = entry.kind === "server" ? "" : entry.subjectId;
      const before = ofKind.get(subject);
      if (!before || entry.notAfterMs > before.notAfterMs) ofKind.set(subject, entry);
    }
    const now = this.fleet.clock.now().getTime();
    const expiring = windowsMs.map((): Record<string, number> => ({}));
    const caRevoked = new Map<string, boolean>();
    for (const ofKind of latest.values())
      for (const entry of ofKind.values()) {
        await pause();
        const left = entry.notAfterMs - now;
        if (left <= 0) continue;
        let revoked = caRevoked.get(entry.issuerCa);
        if (revoked === undefined) caRevoked.set(entry.issuerCa, (revoked = this.revokedCaOnChain(entry.issuerCa) !== undefined));
        if (revoked) continue;
        for (let i = 0; i < windowsMs.length; i++) {
          const counts = expiring[i]!;
          if (left <= windowsMs[i]!) counts[entry.kind] = (counts[entry.kind] ?? 0) + 1;
        }
      }
    return { devices, expiring };
  }

  /** Whether the CA is known and not revoked (nor any CA above it). */
  caActive(caId: string): boolean {
    return this.cas.has(caId) && this.revokedCaOnChain(caId) === undefined;
  }

  private answer(serial: string, entry: Entry, now: number): CertificateAnswer {
    const known = {
      serial,
      issuerCa: entry.issuerCa,
      kind: entry.kind,
      deviceId: entry.deviceId,
      subjectId: entry.subjectId,
      notAfter: new Date(entry.notAfterMs),
    };
    const since = entry.sinceMs === null ? {} : { since: new Date(entry.sinceMs) };
    if (entry.status === "revoked") return { status: "revoked", ...known, reason: entry.reason ?? "unspecified", ...since };
    if (entry.status === "hold") return { status: "held", ...known, reason: entry.reason ?? "certificateHold", ...since };
    // Everything a revoked CA issued is revoked with it (cACompromise).
    const revokedCa = this.revokedCaOnChain(entry.issuerCa);
    if (revokedCa !== undefined) {
      const caEntry = this.certificates.get(revokedCa.serial);
      const caSince = caEntry?.sinceMs == null ? {} : { since: new Date(caEntry.sinceMs) };
      return { status: "revoked", ...known, reason: "cACompromise", ...caSince };
    }
    // Not valid after notAfter (RFC 5280 4.1.2.5): never good, whatever the status.
    if (entry.notAfterMs <= now) return { status: "expired", ...known };
    return { status: "good", ...known };
  }

  /** The first revoked CA from `caId` up to the root, if any. */
  private revokedCaOnChain(caId: string): CaEntry | undefined {
    let id: string | undefined = caId;
    for (let depth = 0; id !== undefined && depth < 8; depth++) {
      const ca = this.cas.get(id);
      if (!ca) return undefined;
      if (ca.revoked) return ca;
      const issuer: string | undefined = this.certificates.get(ca.serial)?.issuerCa;
      id = issuer === id ? undefined : issuer;
    }
    return undefined;
  }

  private put(serial: string, entry: Entry): void {
    this.certificates.set(serial, entry);
    if (entry.deviceId !== null) {
      let serials = this.byDevice.get(entry.deviceId);
      if (!serials) this.byDevice.set(entry.deviceId, (serials = new Set()));
      serials.add(serial);
    }
  }

  private setStatus(serials: readonly string[], status: CertificateTable["status"], reason: string | null, at: number | null): void {
    for (const serial of serials) {
      const entry = this.certificates.get(serial);
      if (entry) Object.assign(entry, { status, reason, sinceMs: at });
    }
  }
}
