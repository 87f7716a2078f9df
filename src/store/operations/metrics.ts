// What the metrics read of the database at start: the totals their counters start from, with the
// audit head they were read at (events after it are counted as they arrive, those up to it not again).

export interface MetricTotals {
  /** The audit head the counts were read at, in the same read (one snapshot). */
  seq: number;
  /** Certificates recorded, by kind (each recorded with its certificate.issue or ca.create event). */
  issued: Record<string, number>;
  /** Certificates revoked, by kind. */
  revoked: Record<string, number>;
  /** Renewals (a certificate issued to renew another), by the renewing certificate's kind. */
  renewed: Record<string, number>;
}

export interface MetricOperations {
  /** Counts by kind from indexes (a covering index scan for `issued`, the partial index of revoked and held rows). */
  totals(): Promise<MetricTotals>;
}
