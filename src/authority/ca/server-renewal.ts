// The server certificate (server/cert.pem + key.pem: registration listener, gateway, admin listener)
// renews itself: `serve` reissues it from the services CA once 2/3 of its lifetime has passed (at
// start too, when already past), audited like every reissue, and tells each listener serving it to
// load the new one (setSecureContext: new handshakes get it, open connections keep theirs).
//
// The check runs every minute on the fleet's clock, so a test that moves the clock calls renewNow()
// instead of waiting. A certificate changed on disk by someone else (`fleetpki server reissue`,
// another `serve` on the same directory) is passed on to the listeners the same way.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseDuration } from "../../config/duration.js";
import { parseCertificate } from "../../x509/certificate.js";
import { fromPem } from "../../x509/pem.js";
import { layout } from "../layout.js";
import type { FleetServices } from "../services.js";
import { reissueServerCertificate, type ServerReissue } from "./server-certificate.js";

/** Renewal at this fraction of the lifetime (notBefore..notAfter), as the device agent does. */
export const SERVER_RENEW_FRACTION = 2 / 3;
export const SERVER_RENEWAL_CHECK_MS = 60_000;

/** What a listener serving the server certificate registers: read server/ again and setSecureContext. */
export type TlsRefresh = () => Promise<unknown>;

export interface ServerRenewalEvents {
  renewed?(reissue: ServerReissue): void;
  /** The certificate on disk changed under us (another process reissued it); listeners were told. */
  changed?(serial: string): void;
  /** Renewal is due but a new certificate would not end later: the services CA ends first. */
  blocked?(info: { serial: string; notAfter: Date; servicesCaNotAfter: Date }): void;
  failed?(error: unknown): void;
}

export interface ServerRenewalOptions extends ServerRenewalEvents {
  /** Audit actor of the reissue (default "serve"). */
  actor?: string;
  checkIntervalMs?: number;
}

export interface ServerCertificateState {
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** When it is due for renewal: notBefore + 2/3 of its lifetime. */
  renewAt: Date;
}

export function renewalDue(notBefore: Date, notAfter: Date): Date {
  const lifetime = Math.max(0, notAfter.getTime() - notBefore.getTime());
  return new Date(notBefore.getTime() + lifetime * SERVER_RENEW_FRACTION);
}

/** server/cert.pem as it is now. */
export function readServerCertificate(fleet: FleetServices): ServerCertificateState {
  const cert = parseCertificate(fromPem(readFileSync(fleet.path(join(layout.serverDir, "cert.pem")), "utf8"), ["CERTIFICATE"]));
  return { serial: cert.serialHex, notBefore: cert.notBefore, notAfter: cert.notAfter, renewAt: renewalDue(cert.notBefore, cert.notAfter) };
}

export class ServerCertificateRenewer {
  private readonly listeners = new Set<TlsRefresh>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<ServerReissue | undefined> | undefined;
  /** The serial the listeners were last given (or started with). */
  private served: string | undefined;
  private blockedFor: string | undefined;

  constructor(
    private readonly fleet: FleetServices,
    private readonly options: ServerRenewalOptions = {},
  ) {}

  /**
   * A listener serving server/cert.pem: `refresh` is called after every renewal (and after a
   * change on disk). Returns the function that removes it.
   */
  addListener(refresh: TlsRefresh): () => void {
    this.listeners.add(refresh);
    return () => this.listeners.delete(refresh);
  }

  /** Checks (and renews if due) now, then every checkIntervalMs. Resolves after the first check. */
  async start(): Promise<ServerReissue | undefined> {
    const first = await this.renewNow();
    this.timer ??= setInterval(() => void this.renewNow().catch(() => {}), this.options.checkIntervalMs ?? SERVER_RENEWAL_CHECK_MS);
    this.timer.unref();
    return first;
  }

  /** Renews now if 2/3 of the lifetime has passed on the fleet's clock; one check at a time. */
  renewNow(): Promise<ServerReissue | undefined> {
    return (this.running ??= this.check()
      .catch((e) => {
        this.options.failed?.(e);
        return undefined;
      })
      .finally(() => (this.running = undefined)));
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  private async check(): Promise<ServerReissue | undefined> {
    const current = readServerCertificate(this.fleet);
    if (this.served === undefined) this.served = current.serial;
    else if (this.served !== current.serial) {
      this.served = current.serial;
      await this.notify();
      this.options.changed?.(current.serial);
    }
    const now = this.fleet.clock.now();
    if (now.getTime() < current.renewAt.getTime()) return undefined;
    // Near the services CA's end a new certificate would end no later (issuance clamps to the CA):
    // reissuing every minute would change nothing. `cert expiring` lists the CA meanwhile.
    const caEnd = (await this.fleet.caCertificate("services")).notAfter;
    const wouldEnd = Math.min(now.getTime() + parseDuration(this.fleet.config.validity.server), caEnd.getTime());
    if (wouldEnd <= current.notAfter.getTime()) {
      if (this.blockedFor !== current.serial)
        this.options.blocked?.({ serial: current.serial, notAfter: current.notAfter, servicesCaNotAfter: caEnd });
      this.blockedFor = current.serial;
      return undefined;
    }
    const reissue = await reissueServerCertificate(this.fleet, {
      actor: this.options.actor ?? "serve",
      reasons: [`renewal: 2/3 of its lifetime had passed (due ${current.renewAt.toISOString()}, ends ${current.notAfter.toISOString()})`],
      previousSerial: current.serial,
    });
    this.served = reissue.serial;
    await this.notify();
    this.options.renewed?.(reissue);
    return reissue;
  }

  private async notify(): Promise<void> {
    // Each listener logs its own failure and keeps its previous context; one failing does not stop the others.
    await Promise.allSettled([...this.listeners].map((refresh) => refresh()));
  }
}
