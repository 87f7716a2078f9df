// The service container of an open fleet: its directory, configuration, database and (lazily) the CA keys it can sign with.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { CONFIG_FILE, ConfigError, loadConfig, resolveIn, type FleetConfig } from "../config/config.js";
import { readPassphraseFile, readPrivateKey } from "../keys/keys.js";
import type { FleetStore } from "../store/operations.js";
import { openFleetStore, sqlitePath, urlForDisplay } from "../store/open.js";
import type { CaTable } from "../store/schema.js";
import { signatureSchemeFor } from "../x509/algorithms.js";
import { parseCertificate, type ParsedCertificate } from "../x509/certificate.js";
import { fromPem } from "../x509/pem.js";
import { LeafTemplate, type IssuingCa, type LeafKind } from "../x509/profiles.js";
import { systemClock, type Clock } from "./clock.js";
import { CaKeyOffline, CaNotActive, UnknownCa } from "./errors.js";
import { GroupCommitRecorder, type IssuanceRecorder } from "./issue/recorder.js";

/** Opens the database `database.url` names (with `create`, makes it: init). */
export async function openDatabase(dir: string, config: FleetConfig, options: { create?: boolean } = {}): Promise<FleetStore> {
  const url = config.database.url;
  if (sqlitePath(url, dir) === undefined)
    throw new ConfigError(`${CONFIG_FILE}: database.url "${urlForDisplay(url)}": only sqlite:<file> is supported so far`);
  return openFleetStore(url, dir, options);
}

export interface OpenFleetOptions {
  /** Overrides keys.passphrase_file (e.g. a passphrase supplied by the operator). */
  passphrase?: string;
  /** Where "now" comes from; the system clock unless a test moves time itself. */
  clock?: Clock;
}

export class FleetServices {
  private passphraseValue: string | undefined;
  readonly clock: Clock;
  // Promises, so that concurrent first calls decrypt a key once, not once each.
  private readonly issuers = new Map<string, Promise<{ issuer: IssuingCa; status: CaTable["status"] }>>();
  private readonly templates = new Map<string, Promise<LeafTemplate>>();
  private readonly chains = new Map<string, { chain: string; root: string }>();

  private constructor(
    readonly dir: string,
    readonly config: FleetConfig,
    readonly store: FleetStore,
    options: OpenFleetOptions,
  ) {
    this.passphraseValue = options.passphrase;
    this.clock = options.clock ?? systemClock;
  }

  static async open(dir: string, options: OpenFleetOptions = {}): Promise<FleetServices> {
    const config = loadConfig(dir);
    const store = await openDatabase(dir, config);
    return new FleetServices(dir, config, store, options);
  }

  /** For init, which creates the database itself. */
  static attach(dir: string, config: FleetConfig, store: FleetStore, options: OpenFleetOptions = {}): FleetServices {
    return new FleetServices(dir, config, store, options);
  }

  private recorderInstance: IssuanceRecorder | undefined;

  /** Group-commit recorder for issued certificates (one per process and fleet). */
  get recorder(): IssuanceRecorder {
    this.recorderInstance ??= new GroupCommitRecorder(this.store);
    return this.recorderInstance;
  }

  get domain(): string {
    return this.config.fleet.domain;
  }

  path(relative: string): string {
    return join(this.dir, relative);
  }

  passphrase(): string {
    this.passphraseValue ??= readPassphraseFile(resolveIn(this.dir, this.config.keys.passphrase_file));
    return this.passphraseValue;
  }

  statusUrlsFor(caId: string): { crl: string; ocsp: string } {
    return { crl: `${this.config.urls.crl_base.replace(/\/$/, "")}/${caId}.crl`, ocsp: this.config.urls.ocsp };
  }

  async caRecord(id: string): Promise<CaTable> {
    const row = await this.store.ops.cas.get(id);
    if (!row) throw new UnknownCa(id);
    return row;
  }

  async caCertificate(id: string): Promise<ParsedCertificate> {
    return parseCertificate(fromPem((await this.caRecord(id)).certificate_pem, ["CERTIFICATE"]));
  }

  /**
   * The CA with its decrypted key; keys are decrypted once per process. A revoked CA issues
   * nothing, but may still sign its own CRL (`forCrl`).
   */
  async issuingCa(id: string, options: { forCrl?: boolean } = {}): Promise<IssuingCa> {
    let loading = this.issuers.get(id);
    if (!loading) {
      loading = this.loadIssuer(id);
      this.issuers.set(id, loading);
      loading.catch(() => this.issuers.delete(id));
    }
    const { issuer, status } = await loading;
    if (status !== "active" && !options.forCrl) throw new CaNotActive(`CA "${id}" is ${status}`);
    return issuer;
  }

  private async loadIssuer(id: string): Promise<{ issuer: IssuingCa; status: CaTable["status"] }> {
    const row = await this.caRecord(id);
    if (!row.key_file || !existsSync(this.path(row.key_file)))
      throw new CaKeyOffline(
        `the ${id} CA key is not in this fleet directory (held offline); sign with \`fleetpki ca root sign\` on the machine that holds it`,
      );
    const key = readPrivateKey(this.path(row.key_file), this.passphrase());
    const issuer: IssuingCa = {
      certificate: parseCertificate(fromPem(row.certificate_pem, ["CERTIFICATE"])),
      signer: { key, scheme: signatureSchemeFor(key) },
      // CDP/AIA written into what this CA issues point at this CA's own CRL and the OCSP responder.
      status: this.statusUrlsFor(id),
    };
    return { issuer, status: row.status };
  }

  async leafTemplate(caId: string, kind: LeafKind): Promise<LeafTemplate> {
    const key = `${caId}/${kind}`;
    let template = this.templates.get(key);
    if (!template) {
      template = this.issuingCa(caId).then((ca) => new LeafTemplate(ca, kind));
      this.templates.set(key, template);
      template.catch(() => this.templates.delete(key));
    }
    return template;
  }

  /** PEM of the root and of a CA's chain up to (excluding) the root. */
  async chainPem(caId: string): Promise<{ chain: string; root: string }> {
    let cached = this.chains.get(caId);
    if (!cached) {
      const root = (await this.caRecord("root")).certificate_pem;
      cached = { chain: caId === "root" ? "" : (await this.caRecord(caId)).certificate_pem, root };
      this.chains.set(caId, cached);
    }
    return cached;
  }

  /** Drops what this process cached about a CA (its status changed, e.g. revoked). */
  forgetCa(id: string): void {
    this.issuers.delete(id);
    this.chains.delete(id);
    for (const key of [...this.templates.keys()]) if (key.startsWith(`${id}/`)) this.templates.delete(key);
  }

  /** Forgets every CA (see forgetCa): a CA may have been revoked, which one is unknown. */
  forgetAllCas(): void {
    this.issuers.clear();
    this.chains.clear();
    this.templates.clear();
  }

  async close(): Promise<void> {
    await this.recorderInstance?.close();
    await this.store.close();
  }
}
