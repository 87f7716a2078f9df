// Who is asking, as the access policy sees it. The gateway derives it from the client
// certificate's SAN URI (spiffe://<domain>/<kind>/<name>) and the device registry; nothing else
// in a certificate is trusted for authorization.

export type OperatorRole = "viewer" | "operator" | "admin";

export type AccessIdentity =
  | {
      kind: "device";
      id: string;
      /** From the device registry (not the certificate), so it can change without reissuing. */
      group: string | null;
      labels: Readonly<Record<string, string>>;
    }
  | { kind: "service"; name: string }
  /** role null: none stored (unknown or removed operator, or no role source given); `roles` rules match no such operator. */
  | { kind: "operator"; name: string; role: OperatorRole | null };

export type AccessAction = "publish" | "subscribe";

/**
 * What the policy says about one request. `allowed` is what the caller must do; `outcome`
 * says why: "audit-deny" is a deny that audit mode turned into an allow (log it as such).
 */
export interface AccessDecision {
  allowed: boolean;
  outcome: "allow" | "deny" | "audit-deny";
  /** The rule that decided (its name, or "rules[3]" when unnamed); undefined for the default deny. */
  rule: string | undefined;
  /** One line for logs and `fleetpki policy test`. */
  reason: string;
}

/**
 * One identity's grants, compiled once per identity and policy version (substitutions done),
 * so the per-message checks are cheap. Obtained from AccessPolicy.grantsFor (src/access/policy.ts).
 */
export interface AccessGrants {
  /** PUBLISH to a topic name (no wildcards); also a CONNECT's will topic and retained messages. */
  publish(topic: string): AccessDecision;
  /**
   * SUBSCRIBE with a topic filter: allowed only when every topic the filter can match is
   * readable (a filter wider than the grants, e.g. `#`, is denied, not narrowed).
   */
  subscribe(filter: string): AccessDecision;
  /** Delivery of a message on `topic` to this identity (checked per message, after reloads). */
  receive(topic: string): AccessDecision;
}
