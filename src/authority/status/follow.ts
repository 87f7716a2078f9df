// What a running process does when the change feed reports events, decided here rather than in
// the transports: which CRLs to re-sign, when cached OCSP answers are void, which CAs this
// process must forget, and keeping the CertificateStatus service current.
import type { ChangeFeed } from "../events/change-feed.js";
import { isStatusChange, type FleetEvent } from "../events/events.js";
import type { FleetServices } from "../services.js";
import type { CertificateStatus } from "./certificate-status.js";
import type { CrlPublisher } from "./crls.js";
import type { OcspService } from "./ocsp-responder.js";

export interface StatusReaction {
  /** CAs whose CRL must be re-signed (sorted); empty when no certificate's status changed. */
  crls: string[];
  /** CAs revoked: this process must stop signing with them. */
  revokedCas: string[];
}

/** The re-signing and forgetting that `events` call for. */
export function statusReaction(events: readonly FleetEvent[]): StatusReaction {
  const crls = new Set<string>();
  const revokedCas: string[] = [];
  for (const event of events) {
    if (!isStatusChange(event)) continue;
    for (const ca of event.cas) crls.add(ca);
    if (event.type === "CaRevoked") revokedCas.push(event.caId);
  }
  return { crls: [...crls].sort(), revokedCas };
}

export interface StatusFollowers {
  status?: CertificateStatus;
  crls?: CrlPublisher;
  ocsp?: OcspService;
  /** Told after the CRLs were marked for re-signing (e.g. to log it). */
  onCrlsChanged?: (cas: readonly string[]) => void;
}

/** Subscribes the status room to the feed; returns the unsubscribe function. */
export function followStatusChanges(fleet: FleetServices, feed: ChangeFeed, followers: StatusFollowers): () => void {
  return feed.subscribe((events) => {
    // Memory first, so that whoever asks after this batch sees it.
    followers.status?.apply(events);
    const reaction = statusReaction(events);
    // A CA revoked by the CLI must stop issuing here too (its key and status are cached).
    for (const ca of reaction.revokedCas) fleet.forgetCa(ca);
    if (reaction.crls.length === 0) return;
    followers.ocsp?.invalidate();
    if (followers.crls) void followers.crls.markChanged(reaction.crls);
    followers.onCrlsChanged?.(reaction.crls);
  });
}
