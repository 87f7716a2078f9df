// Prometheus metrics of one fleetpki process, served by the admin listener at /metrics (docs/metrics.md).
// Fleet-wide counts (certificates issued, renewed, revoked) start from the database's totals and then
// follow the audit change feed, so they count what any process did (the CLI included). Devices by
// state and certificates expiring come from CertificateStatus's memory at scrape, cached a few
// seconds. The rest is this process's own: its registration listener's failures, its status
// listener's OCSP answers and CRLs, its gateway's counters.
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import type { ChangeFeed } from "../authority/events/change-feed.js";
import type { FleetEvent } from "../authority/events/events.js";
import { CERTIFICATE_KINDS } from "../authority/queries.js";
import type { FleetServices } from "../authority/services.js";
import type { CertificateStatus, StatusCensus } from "../authority/status/certificate-status.js";
import type { GatewayCounters } from "../gateway/counters.js";

/** Every device status (DeviceTable["status"]). */
export const DEVICE_STATES = ["active", "disabled", "held", "revoked", "removed"] as const;
/** The expiry gauge's windows: label and length. */
export const EXPIRY_WINDOWS: readonly (readonly [string, number])[] = [
  ["1d", 86_400_000],
  ["7d", 7 * 86_400_000],
  ["30d", 30 * 86_400_000],
];

/** What the metrics need of the CRL publisher (status listener) of this process. */
export interface CrlSource {
  published(): ReadonlyMap<string, { thisUpdate: Date }>;
}

export interface FleetMetricsOptions {
  fleet: FleetServices;
  changes: ChangeFeed;
  certificateStatus: CertificateStatus;
  /** How long a census of memory (devices by state, expiring certificates) is reused; default 5 s. */
  censusTtlMs?: number;
  /** Node's process metrics (CPU, memory, event loop, handles); default on. */
  processMetrics?: boolean;
}

const PREFIX = "fleetpki_";

let processRegistry: Registry | undefined;
/**
 * prom-client's process metrics, once per process (they describe the process, and each collector
 * starts an event-loop delay monitor that is never stopped: one per server would pile up in tests).
 */
function processMetricsRegistry(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry, prefix: PREFIX });
  }
  return processRegistry;
}

export class FleetMetrics {
  readonly registry = new Registry();
  private readonly issued: Counter<"kind">;
  private readonly renewed: Counter<"kind">;
  private readonly revoked: Counter<"kind">;
  private readonly enrollmentFailures: Counter<"reason">;
  private readonly ocspRequests: Counter<"outcome">;
  private gateway: GatewayCounters | undefined;
  private crls: CrlSource | undefined;
  private census: { atMs: number; value: Promise<StatusCensus> } | undefined;
  /** Events delivered before the start totals were read (counted afterwards, those after the totals' head only). */
  private pending: FleetEvent[] | undefined = [];
  private totalsSeq = 0;
  private unsubscribe: (() => void) | undefined;
  private readonly censusTtlMs: number;
  private readonly process: Registry | undefined;

  constructor(private readonly options: FleetMetricsOptions) {
    this.censusTtlMs = options.censusTtlMs ?? 5_000;
    const registers = [this.registry];
    this.process = options.processMetrics === false ? undefined : processMetricsRegistry();
    const counter = <L extends string>(name: string, help: string, labelNames: readonly L[]) =>
      new Counter<L>({ name: PREFIX + name, help, labelNames, registers });
    this.issued = counter("certificates_issued_total", "Certificates issued (CA certificates included), by kind", ["kind"]);
    this.renewed = counter("certificates_renewed_total", "Certificates issued as renewals of one, by kind", ["kind"]);
    this.revoked = counter("certificates_revoked_total", "Certificates revoked, by kind", ["kind"]);
    for (const kind of CERTIFICATE_KINDS) for (const c of [this.issued, this.renewed, this.revoked]) c.inc({ kind }, 0);
    this.enrollmentFailures = counter(
      "enrollment_failures_total",
      "Registration listener requests refused or failed (this process), by problem type",
      ["reason"],
    );
    this.ocspRequests = counter("ocsp_requests_total", "OCSP requests answered by this process, by OCSP response status", ["outcome"]);

    const metrics = this;
    new Gauge({
      name: `${PREFIX}devices`,
      help: "Devices by state",
      labelNames: ["state"],
      registers,
      async collect() {
        const { devices } = await metrics.currentCensus();
        for (const state of new Set([...DEVICE_STATES, ...Object.keys(devices)])) this.set({ state }, devices[state] ?? 0);
      },
    });
    new Gauge({
      name: `${PREFIX}certificates_expiring`,
      help: "Certificates in force ending within the window (renewed ones left out), by kind",
      labelNames: ["window", "kind"],
      registers,
      async collect() {
        const { expiring } = await metrics.currentCensus();
        EXPIRY_WINDOWS.forEach(([window], i) => {
          const counts = expiring[i] ?? {};
          for (const kind of new Set([...CERTIFICATE_KINDS, ...Object.keys(counts)])) this.set({ window, kind }, counts[kind] ?? 0);
        });
      },
    });
    new Gauge({
      name: `${PREFIX}audit_chain_length`,
      help: "Rows in the audit log (the head's sequence number)",
      registers,
      async collect() {
        this.set(await options.fleet.store.ops.changes.headSeq());
      },
    });
    new Gauge({
      name: `${PREFIX}crl_age_seconds`,
      help: "Seconds since the thisUpdate of the CRL this process serves, by CA",
      labelNames: ["ca"],
      registers,
      collect() {
        this.reset();
        const now = options.fleet.clock.now().getTime();
        for (const [ca, crl] of metrics.crls?.published() ?? []) this.set({ ca }, (now - crl.thisUpdate.getTime()) / 1000);
      },
    });
    this.gatewaySeries(registers);
  }

  /** The gateway's own counters (src/gateway/counters.ts), read at scrape. */
  private gatewaySeries(registers: Registry[]): void {
    const metrics = this;
    const fromGateway = <L extends string>(
      name: string,
      help: string,
      labelNames: readonly L[],
      read: (c: GatewayCounters) => [Partial<Record<L, string>>, number][],
    ) =>
      new Counter<L>({
        name: PREFIX + name,
        help,
        labelNames,
        registers,
        collect() {
          const counters = metrics.gateway;
          if (!counters) return;
          this.reset();
          for (const [labels, value] of read(counters)) this.inc(labels, value);
        },
      });
    const byLabel = <L extends string>(label: L, counts: Record<string, number>): [Partial<Record<L, string>>, number][] =>
      Object.entries(counts).map(([value, n]) => [{ [label]: value } as Partial<Record<L, string>>, n]);
    new Gauge({
      name: `${PREFIX}gateway_connections`,
      help: "MQTT sessions open on this process's gateway",
      registers,
      collect() {
        if (metrics.gateway) this.set(metrics.gateway.connections.current);
      },
    });
    fromGateway("gateway_connections_total", "MQTT sessions admitted", [], (c) => [[{}, c.connections.total]]);
    fromGateway("gateway_messages_total", "MQTT messages, by direction (in: published by clients, out: delivered)", ["direction"], (c) => [
      [{ direction: "in" }, c.messages.in],
      [{ direction: "out" }, c.messages.out],
    ]);
    fromGateway("gateway_denials_total", "Requests the access policy denied, by what was asked", ["reason"], (c) =>
      byLabel("reason", c.denials),
    );
    fromGateway("gateway_handshake_failures_total", "TLS handshakes that failed, by OpenSSL's reason", ["reason"], (c) =>
      byLabel("reason", c.handshakeFailures),
    );
    fromGateway("gateway_refused_total", "MQTT CONNECTs refused, by reason", ["reason"], (c) => byLabel("reason", c.refused));
    fromGateway("gateway_disconnects_total", "Clients the gateway disconnected, by reason", ["reason"], (c) =>
      byLabel("reason", c.disconnected),
    );
  }

  /** Follows the change feed and reads the totals the counters start from. */
  async start(): Promise<void> {
    this.unsubscribe = this.options.changes.subscribe((events) => {
      if (this.pending) this.pending.push(...events);
      else this.count(events);
    });
    const totals = await this.options.fleet.store.ops.metrics.totals();
    this.totalsSeq = totals.seq;
    for (const [counter, counts] of [
      [this.issued, totals.issued],
      [this.renewed, totals.renewed],
      [this.revoked, totals.revoked],
    ] as const)
      for (const [kind, n] of Object.entries(counts)) counter.inc({ kind }, n);
    const pending = this.pending ?? [];
    this.pending = undefined;
    this.count(pending);
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** This process's gateway (its counters are read at each scrape). */
  attachGateway(counters: GatewayCounters): void {
    this.gateway = counters;
  }

  /** This process's CRL publisher (the status listener). */
  attachCrls(crls: CrlSource): void {
    this.crls = crls;
  }

  /** A registration listener request refused or failed; `reason` is its problem type (a bounded set of codes). Bound: a callback. */
  readonly enrollmentFailed = (reason: string): void => {
    this.enrollmentFailures.inc({ reason });
  };

  /** An OCSP request answered (`outcome`: the OCSP response status) or refused before that ("http-<problem>"). Bound. */
  readonly ocspAnswered = (outcome: string): void => {
    this.ocspRequests.inc({ outcome });
  };

  /** The text exposition (format 0.0.4) and its content type. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    const own = await this.registry.metrics();
    return { contentType: this.registry.contentType, body: this.process ? own + (await this.process.metrics()) : own };
  }

  private count(events: readonly FleetEvent[]): void {
    const status = this.options.certificateStatus;
    for (const event of events) {
      if (event.seq <= this.totalsSeq) continue;
      switch (event.type) {
        case "CertificateIssued":
          this.issued.inc({ kind: event.kind });
          if (event.renews !== undefined) this.renewed.inc({ kind: event.kind });
          break;
        case "CaCreated":
          this.issued.inc({ kind: "ca" });
          break;
        case "DeviceRevoked":
        case "DeviceRemoved":
        case "CertificateRevoked":
        case "CaRevoked":
          // The serials whose status became revoked; CertificateStatus (fed first) knows their kinds.
          for (const serial of event.serials) this.revoked.inc({ kind: status.kindOf(serial) ?? "unknown" });
          break;
        default:
          break;
      }
    }
  }

  /** One census per TTL, shared by the gauges of a scrape and by concurrent scrapes; a failed one is not kept. */
  private currentCensus(): Promise<StatusCensus> {
    const now = Date.now();
    if (!this.census || now - this.census.atMs >= this.censusTtlMs || now < this.census.atMs) {
      const value = this.options.certificateStatus.census(EXPIRY_WINDOWS.map(([, ms]) => ms));
      const census = (this.census = { atMs: now, value });
      value.catch(() => {
        if (this.census === census) this.census = undefined;
      });
    }
    return this.census.value;
  }
}
