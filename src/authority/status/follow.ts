// What a running process does when the change feed reports events, decided here rather than in
// the transports: which CRLs to re-sign, when cached OCSP answers are void, which CAs this
// process must forget, and keeping the CertificateStatus service current.
import type { ChangeFeed } from "../events/change-feed.js";
import { isStatusChange, isUnreadableStatusChange, type FleetEvent } from "../events/events.js";
import type { FleetServices } from "../services.js";
import type { CertificateStatus } from "./certificate-status.js";
import type { CrlPublisher } from "./crls.js";
import type { OcspService } from "./ocsp-responder.js";

export interface StatusReaction {
  /** CAs whose CRL must be re-signed (sorted); empty when no certificate's status changed. */
  crls: string[];
  /** CAs revoked: this process must stop signing with them. */
  revokedCas: string[];
  /**
   * Status changes whose audit rows could not be decoded. What they changed is unknown, so every
   * CRL is re-signed and every cached OCSP answer dropped (and, for a CA's revocation, every CA forgotten).
   */
  unreadable: UnreadableChange[];
}

export interface UnreadableChange {
  seq: number;
  action: string;
  problem: string;
}

/** The re-signing and forgetting that `events` call for. */
export function statusReaction(events: readonly FleetEvent[]): StatusReaction {
  const crls = new Set<string>();
  const revokedCas: string[] = [];
  const unreadable: UnreadableChange[] = [];
  for (const event of events) {
    if (isUnreadableStatusChange(event)) unreadable.push({ seq: event.seq, action: event.action, problem: event.problem });
    if (!isStatusChange(event)) continue;
    for (const ca of event.cas) crls.add(ca);
    if (event.type === "CaRevoked") revokedCas.push(event.caId);
  }
  return { crls: [...crls].sort(), revokedCas, unreadable };
}

export interface StatusFollowers {
  status?: CertificateStatus;
  crls?: CrlPublisher;
  ocsp?: OcspService;
  /** Told after the CRLs were marked for re-signing (e.g. to log it). */
  onCrlsChanged?: (cas: readonly string[]) => void;
  /** Told of each status change that could not be decoded, after every CRL was marked and the OCSP cache dropped (log a warning). */
  onUnreadableChange?: (change: UnreadableChange) => void;
}

/** Subscribes the status room to the feed; returns the unsubscribe function. */
export function followStatusChanges(fleet: FleetServices, feed: ChangeFeed, followers: StatusFollowers): () => void {
  return feed.subscribe((events) => {
    // Memory first, so that whoever asks after this batch sees it.
    followers.status?.apply(events);
    const reaction = statusReaction(events);
    // A CA revoked by the CLI must stop issuing here too (its key and status are cached).
    for (const ca of reaction.revokedCas) fleet.forgetCa(ca);
    if (reaction.unreadable.length > 0) {
      // Something changed, we cannot tell what: assume everything did.
      if (reaction.unreadable.some((u) => u.action === "ca.revoke")) fleet.forgetAllCas();
      followers.ocsp?.invalidate();
      if (followers.crls) void followers.crls.markAllChanged();
      for (const u of reaction.unreadable) followers.onUnreadableChange?.(u);
      return;
    }
    if (reaction.crls.length === 0) return;
    followers.ocsp?.invalidate();
    if (followers.crls) void followers.crls.markChanged(reaction.crls);
    followers.onCrlsChanged?.(reaction.crls);
  });
}
