// fleetpki.yaml: one commented file holding every default, validated on load.
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { isAbsolute, join, resolve } from "node:path";
import { isMap, isScalar, LineCounter, parseDocument, type Pair } from "yaml";
import { CA_KEY_TYPES, type CaKeyType } from "../x509/algorithms.js";
import { deviceDnsZone, inDeviceDnsZone } from "../x509/profiles.js";
import { formatDuration, parseDuration } from "./duration.js";

export const CONFIG_FILE = "fleetpki.yaml";

export interface FleetConfig {
  fleet: { name: string; domain: string };
  keys: { type: CaKeyType; passphrase_file: string };
  validity: {
    root: string;
    intermediate: string;
    local_ca: string;
    device: string;
    factory: string;
    server: string;
    operator: string;
    /** Service identities (`fleetpki service add`); files from before it existed get DEFAULT_SERVICE_VALIDITY. */
    service: string;
    /** SROS2 enclave identity certificates (`fleetpki ros2 enclave create|renew`); absent in older files: DEFAULT_ROS2_ENCLAVE_VALIDITY. */
    ros2_enclave: string;
  };
  /** Derived from server.public_url (or, in files written before it existed, the urls section). */
  urls: { crl_base: string; ocsp: string };
  listen: { registration: string; status: string; gateway: string; admin: string };
  /** public_url: base URL of the status listener as robots reach it; absent in files from before it existed. */
  server: { names: string[]; public_url?: string };
  database: { url: string };
  renewal: { after_expiry_grace: string };
  enrollment: EnrollmentConfig;
  revocation: RevocationConfig;
  audit: AuditConfig;
  gateway: GatewayConfig;
  admin: AdminConfig;
}

/** The admin API and dashboard (listen.admin); docs/admin.md. */
export interface AdminConfig {
  /** The base URL operators' browsers and `--server` reach the admin listener at (login links use it). */
  public_url?: string;
  /** Addresses (IPs or CIDRs) that may scrape /metrics without a certificate. */
  metrics_allow: string[];
  /** How long a browser session lasts. */
  session_lifetime: string;
}

export const DEFAULT_ADMIN: AdminConfig = { metrics_allow: ["127.0.0.1/32", "::1/128"], session_lifetime: "12h" };

export const DEFAULT_ADMIN_LISTEN = "0.0.0.0:9443";

/** The MQTT gateway (listen.gateway); docs/gateway.md. */
export interface GatewayConfig {
  /** Devices may connect with certificates of (active) local CAs, not only the devices CA. */
  allow_local_cas: boolean;
  /** Denied requests per session and minute before the gateway closes the connection. */
  denials_per_minute: number;
  /** Flood protection (src/gateway/limits.ts reads it); absent: its defaults. */
  limits?: Record<string, unknown>;
}

export const DEFAULT_GATEWAY: GatewayConfig = { allow_local_cas: false, denials_per_minute: 30 };

export const DEFAULT_GATEWAY_LISTEN = "0.0.0.0:8883";

export interface AuditConfig {
  /** How often `serve` signs a checkpoint of the audit log's head (when it moved); docs/audit.md. */
  checkpoint_interval: string;
}

export const DEFAULT_AUDIT: AuditConfig = { checkpoint_interval: "5m" };

export interface RevocationConfig {
  /** A CRL's nextUpdate - thisUpdate; re-signed at half of it and at once after any change. */
  crl_validity: string;
  /**
   * The same for the ros2-identity CA's CRL (the enclaves' crl.pem). DDS reads crl.pem once, when a
   * node starts, and refuses every handshake once that copy's nextUpdate passes; nodes restart when
   * their enclave is renewed, so this must outlast validity.ros2_enclave (checked at load).
   */
  ros2_crl_validity: string;
  /** Lifetime of the delegated OCSP responder certificates (one per CA, renewed at half-life). */
  ocsp_responder_validity: string;
  /** How long a signed `good` OCSP answer is reused (dropped at once on any status change). */
  ocsp_cache: string;
  /** Certificates one OCSP request may ask about. */
  ocsp_max_certificates: number;
}

/** Factory certificates outlive operational ones: a bundle may wait months between the line and first boot. */
export const DEFAULT_FACTORY_VALIDITY = "1y";
/** Service certificates: a backend renews them with `service add --renew`. */
export const DEFAULT_SERVICE_VALIDITY = "90d";
/** Short, like a device's: renewal (by the agent or `ros2 enclave renew`) and the CRL do the rest, not sros2's 10 years. */
export const DEFAULT_ROS2_ENCLAVE_VALIDITY = "30d";

/**
 * 3/2 of the default enclave lifetime: a node starts with a copy at most half a validity old (re-signed
 * at half-life) and restarts when its enclave renews (2/3 of the lifetime), so V/2 + 2/3 L < V.
 */
export const DEFAULT_ROS2_CRL_VALIDITY = "45d";

export const DEFAULT_REVOCATION: RevocationConfig = {
  crl_validity: "24h",
  ros2_crl_validity: DEFAULT_ROS2_CRL_VALIDITY,
  ocsp_responder_validity: "24h",
  ocsp_cache: "60s",
  ocsp_max_certificates: 16,
};

export interface EnrollmentConfig {
  /** One-time tokens (`device add`, `token create`). */
  token: boolean;
  /** Factory certificates from local CAs (`ca issue-batch`). */
  factory: boolean;
  /** Requests without credentials wait for `device approve`. */
  approval: boolean;
  token_ttl: string;
  /** How long a request waiting for `device approve` counts; then it is purged and the robot asks again. */
  approval_request_ttl: string;
  /** Failed authentications per source address per minute before further failures get 429. */
  failed_auth_per_minute: number;
}

export const DEFAULT_ENROLLMENT: EnrollmentConfig = {
  token: true,
  factory: true,
  approval: false,
  token_ttl: "24h",
  approval_request_ttl: "24h",
  failed_auth_per_minute: 10,
};

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

const DOMAIN = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$/;

export function validateDomain(domain: string): string {
  if (!DOMAIN.test(domain))
    throw new ConfigError(`invalid fleet domain "${domain}" (lower-case DNS name with at least one dot, e.g. fleet.example)`);
  return domain;
}

export interface ConfigDefaultsInput {
  name: string;
  domain: string;
  keyType: CaKeyType;
  passphraseFile: string;
  serverNames: string[];
  /** Base URL for CRLs and OCSP; default http://<first server name>:<status port>. */
  publicUrl?: string;
}

const DEFAULT_STATUS_LISTEN = "0.0.0.0:8080";

/** http://<host>:<port> for a server name (IPv6 in brackets). */
export function defaultPublicUrl(host: string, listenStatus = DEFAULT_STATUS_LISTEN): string {
  const port = /:(\d+)$/.exec(listenStatus)?.[1] ?? "8080";
  return `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/**
 * Checks a public base URL (where robots fetch CRLs and ask OCSP) and returns it without a
 * trailing slash. It is written into every certificate, so anything a client could misread is refused.
 */
export function validatePublicUrl(text: string, what = "server.public_url"): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(`${what} "${text}" is not a URL (e.g. http://pki.fleet.example:8080)`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new ConfigError(`${what} "${text}" must be an http:// or https:// URL`);
  if (url.username || url.password) throw new ConfigError(`${what} "${text}" must not carry credentials`);
  if (text.includes("?") || text.includes("#")) throw new ConfigError(`${what} "${text}" must have no query or fragment`);
  if (!url.hostname) throw new ConfigError(`${what} "${text}" names no host`);
  return `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, "")}`;
}

export function statusUrls(publicUrl: string): FleetConfig["urls"] {
  return { crl_base: `${publicUrl}/crl`, ocsp: `${publicUrl}/ocsp` };
}

export function defaultConfig(input: ConfigDefaultsInput): FleetConfig {
  const host = input.serverNames[0] ?? "localhost";
  const publicUrl = validatePublicUrl(input.publicUrl ?? defaultPublicUrl(host), input.publicUrl ? "--public-url" : "server.public_url");
  return {
    fleet: { name: input.name, domain: input.domain },
    keys: { type: input.keyType, passphrase_file: input.passphraseFile },
    validity: {
      root: "20y",
      intermediate: "10y",
      local_ca: "5y",
      device: "30d",
      factory: DEFAULT_FACTORY_VALIDITY,
      server: "1y",
      operator: "1y",
      service: DEFAULT_SERVICE_VALIDITY,
      ros2_enclave: DEFAULT_ROS2_ENCLAVE_VALIDITY,
    },
    urls: statusUrls(publicUrl),
    listen: { registration: "0.0.0.0:8443", status: DEFAULT_STATUS_LISTEN, gateway: DEFAULT_GATEWAY_LISTEN, admin: DEFAULT_ADMIN_LISTEN },
    server: { names: input.serverNames, public_url: publicUrl },
    database: { url: "sqlite:fleetpki.db" },
    renewal: { after_expiry_grace: "7d" },
    enrollment: { ...DEFAULT_ENROLLMENT },
    revocation: { ...DEFAULT_REVOCATION },
    audit: { ...DEFAULT_AUDIT },
    gateway: { ...DEFAULT_GATEWAY },
    admin: { ...DEFAULT_ADMIN, metrics_allow: [...DEFAULT_ADMIN.metrics_allow] },
  };
}

const q = (s: string): string => JSON.stringify(s);

const UNSET_ADMIN_URL = "# public_url: https://fleet.example.com:9443   # where browsers reach it (default: first server name)";

/** The commented YAML written by `fleetpki init`. */
export function renderConfig(c: FleetConfig): string {
  return `# fleetpki configuration. Written by \`fleetpki init\`; every value shown is in effect.
# Durations: a number and a unit (s, m, h, d, w, y). Paths are relative to this directory.

fleet:
  name: ${q(c.fleet.name)}          # organisation name written into CA certificates
  domain: ${q(c.fleet.domain)}      # trust domain: device identities are spiffe://<domain>/device/<id>

keys:
  type: ${c.keys.type}                     # CA key type: p256 | p384 | ed25519 | rsa3072
  passphrase_file: ${q(c.keys.passphrase_file)}   # decrypts the CA keys (PKCS#8, AES-256) at rest

validity:
  root: ${c.validity.root}                     # self-signed root CA
  intermediate: ${c.validity.intermediate}             # devices, services and operators CAs
  local_ca: ${c.validity.local_ca}                  # factory / line CAs (ca create-local)
  device: ${c.validity.device}                   # device certificates; never past the issuer's end
  factory: ${c.validity.factory}                   # factory bundles (ca issue-batch): they wait in stock until first boot
  server: ${c.validity.server}                    # server certificates from the services CA
  operator: ${c.validity.operator}                  # operator certificates
  service: ${c.validity.service}                  # service identities (fleetpki service add): backends' client certificates
  ros2_enclave: ${c.validity.ros2_enclave}             # SROS2 enclave identities (fleetpki ros2 enclave create|renew)

# Listen addresses of the servers started by \`fleetpki serve\`.
listen:
  registration: ${q(c.listen.registration)}   # EST + JSON enrollment (HTTPS)
  status: ${q(c.listen.status)}         # CRLs and OCSP (plain HTTP)
  gateway: ${q(c.listen.gateway)}        # MQTT 3.1.1 over mutual TLS (needs policy.yaml)
  admin: ${q(c.listen.admin)}          # admin API, dashboard and /metrics (HTTPS; operator certificate or login)

# The registration server's certificate. \`fleetpki serve\` reissues it (services CA) at start when
# these names or the URLs below differ from it; \`fleetpki server reissue\` does it on demand.
server:
  names: [${c.server.names.map(q).join(", ")}]   # DNS names / IPs robots use to reach this server
  # Where robots reach the status listener: every certificate's CRL distribution point
  # (<public_url>/crl/<ca>.crl) and OCSP URL (<public_url>/ocsp). Already issued CA certificates keep
  # the URL they were made with, so choose a name that lasts.
  public_url: ${q(c.server.public_url ?? c.urls.crl_base.replace(/\/crl$/, ""))}

database:
  url: ${q(c.database.url)}     # sqlite:<file> (embedded, WAL)

renewal:
  after_expiry_grace: ${c.renewal.after_expiry_grace}        # an expired, never-revoked certificate may still renew this long

# How devices may prove they may enroll (docs/enrollment.md). Each can be switched off.
enrollment:
  token: ${c.enrollment.token}                  # one-time tokens from \`device add\` / \`token create\`
  factory: ${c.enrollment.factory}                # certificates from local (factory) CAs
  approval: ${c.enrollment.approval}              # requests without credentials wait for \`device approve\`
  token_ttl: ${c.enrollment.token_ttl}               # default lifetime of a token
  approval_request_ttl: ${c.enrollment.approval_request_ttl}    # a request waiting for \`device approve\` expires after this
  failed_auth_per_minute: ${c.enrollment.failed_auth_per_minute}    # failed logins per source address, then 429 (valid ones still pass)

# CRLs and OCSP, served by the status listener (listen.status).
revocation:
  crl_validity: ${c.revocation.crl_validity}               # nextUpdate - thisUpdate; re-signed at half-life and after every change
  # The ros2-identity CA's CRL (crl.pem in every SROS2 enclave). A node keeps the CRL it started with
  # until it restarts, which happens at least once per enclave lifetime (renewal at 2/3 of it), and
  # refuses every peer once that copy expires: keep it over 4/3 of validity.ros2_enclave (never below it).
  ros2_crl_validity: ${c.revocation.ros2_crl_validity}
  ocsp_responder_validity: ${c.revocation.ocsp_responder_validity}    # delegated OCSP signing certificates, renewed at half-life
  ocsp_cache: ${c.revocation.ocsp_cache}                 # reuse of signed "good" answers; dropped on any status change
  ocsp_max_certificates: ${c.revocation.ocsp_max_certificates}        # certificates per OCSP request

# Signed checkpoints of the audit log's head (docs/audit.md); also written after every CA operation.
audit:
  checkpoint_interval: ${c.audit.checkpoint_interval}          # how often \`serve\` signs the head when it moved

# The MQTT gateway (listen.gateway). Who may publish and subscribe to what: policy.yaml.
gateway:
  allow_local_cas: ${c.gateway.allow_local_cas}        # devices may connect with factory (local CA) certificates
  denials_per_minute: ${c.gateway.denials_per_minute}        # denied requests per connection and minute, then it is closed

# The admin API and dashboard (listen.admin); docs/admin.md.
admin:
  ${c.admin.public_url ? `public_url: ${q(c.admin.public_url)}` : UNSET_ADMIN_URL}
  metrics_allow: [${c.admin.metrics_allow.map(q).join(", ")}]   # may scrape /metrics without a certificate
  session_lifetime: ${c.admin.session_lifetime}              # browser sessions (\`fleetpki operator login\`)
`;
}

function section<T extends object>(raw: unknown, key: string): T {
  const value = (raw as Record<string, unknown>)[key];
  if (value === undefined || value === null) throw new ConfigError(`${CONFIG_FILE}: missing section "${key}"`);
  if (typeof value !== "object") throw new ConfigError(`${CONFIG_FILE}: "${key}" must be a mapping`);
  return value as T;
}

function str(obj: Record<string, unknown>, path: string, key: string): string {
  const v = obj[key];
  if (typeof v !== "string" || v === "") throw new ConfigError(`${CONFIG_FILE}: ${path}.${key} must be a non-empty string`);
  return v;
}

/** A key fleetpki knows but does not act on (yet): reported, never an error. */
export interface ConfigNote {
  key: string;
  line: number;
  message: string;
}

// Every key fleetpki reads. Anything else is refused: a misspelt security setting (say
// `enrollment.aproval`) silently ignored would leave the default in force without anyone noticing.
const KNOWN_KEYS: Record<string, readonly string[]> = {
  fleet: ["name", "domain"],
  keys: ["type", "passphrase_file"],
  validity: ["root", "intermediate", "local_ca", "device", "factory", "server", "operator", "service", "ros2_enclave"],
  listen: ["registration", "status", "gateway", "admin"],
  server: ["names", "public_url"],
  database: ["url"],
  renewal: ["after_expiry_grace"],
  enrollment: ["token", "factory", "approval", "token_ttl", "approval_request_ttl", "failed_auth_per_minute"],
  revocation: ["crl_validity", "ros2_crl_validity", "ocsp_responder_validity", "ocsp_cache", "ocsp_max_certificates"],
  audit: ["checkpoint_interval"],
  gateway: ["allow_local_cas", "denials_per_minute", "limits"],
  admin: ["public_url", "metrics_allow", "session_lifetime"],
  // Written by fleetpki before server.public_url replaced it; still read.
  urls: ["crl_base", "ocsp", "est"],
};

// Keys older files carry that nothing reads yet: reported, not refused, so such fleets keep working.
const UNUSED_KEYS: Record<string, string> = {
  "urls.est": "devices are given the server URL directly",
};

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}

function suggestion(key: string, candidates: readonly string[], prefix = ""): string {
  const best = candidates.map((c) => ({ c, d: editDistance(key, c) })).sort((x, y) => x.d - y.d)[0];
  return best && best.d <= 2 ? ` (did you mean ${prefix}${best.c}?)` : "";
}

const REFUSED = "fleetpki refuses settings it would ignore";

/** Refuses unknown keys (naming key and line) and lists known keys that have no effect. */
function checkKeys(root: unknown, lines: LineCounter): ConfigNote[] {
  const notes: ConfigNote[] = [];
  if (!isMap(root)) return notes;
  const lineOf = (pair: Pair): number => {
    const range = (pair.key as { range?: [number, number, number] } | null)?.range;
    return range ? lines.linePos(range[0]).line : 0;
  };
  const keyOf = (pair: Pair): string => (isScalar(pair.key) ? String(pair.key.value) : String(pair.key));
  for (const pair of root.items) {
    const top = keyOf(pair);
    const known = KNOWN_KEYS[top];
    if (!known)
      throw new ConfigError(
        `${CONFIG_FILE} line ${lineOf(pair)}: unknown key "${top}"${suggestion(top, Object.keys(KNOWN_KEYS))}; ${REFUSED}`,
      );
    if (!isMap(pair.value)) continue; // the section's own check names the wrong type
    for (const inner of pair.value.items) {
      const key = keyOf(inner);
      const path = `${top}.${key}`;
      if (!known.includes(key))
        throw new ConfigError(
          `${CONFIG_FILE} line ${lineOf(inner)}: unknown key "${path}"${suggestion(key, known, `${top}.`)}; ${REFUSED}`,
        );
      const why = UNUSED_KEYS[path];
      if (why)
        notes.push({
          key: path,
          line: lineOf(inner),
          message: `${CONFIG_FILE} line ${lineOf(inner)}: ${path} has no effect (${why}); you may delete it`,
        });
    }
  }
  return notes;
}

export function parseConfig(text: string): FleetConfig {
  return parseConfigWithNotes(text).config;
}

export function parseConfigWithNotes(text: string): { config: FleetConfig; notes: ConfigNote[] } {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  if (doc.errors.length > 0) throw new ConfigError(`${CONFIG_FILE}: not valid YAML: ${doc.errors[0]!.message.split("\n")[0]}`);
  const raw: unknown = doc.toJS();
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw new ConfigError(`${CONFIG_FILE}: expected a mapping at the top level`);
  const notes = checkKeys(doc.contents, lineCounter);
  const fleet = section<Record<string, unknown>>(raw, "fleet");
  const keys = section<Record<string, unknown>>(raw, "keys");
  const validity = section<Record<string, unknown>>(raw, "validity");
  const listen = section<Record<string, unknown>>(raw, "listen");
  const server = section<Record<string, unknown>>(raw, "server");
  const database = section<Record<string, unknown>>(raw, "database");
  const renewal = section<Record<string, unknown>>(raw, "renewal");
  const keyType = str(keys, "keys", "type");
  if (!(CA_KEY_TYPES as readonly string[]).includes(keyType))
    throw new ConfigError(`${CONFIG_FILE}: keys.type "${keyType}" is not one of ${CA_KEY_TYPES.join(", ")}`);
  const names = server.names;
  if (!Array.isArray(names) || names.length === 0 || names.some((n) => typeof n !== "string" || n === ""))
    throw new ConfigError(`${CONFIG_FILE}: server.names must be a non-empty list of names`);
  const domain = validateDomain(str(fleet, "fleet", "domain"));
  // Device certificates name <id>.devices.<domain>: a server there could be impersonated by a robot.
  const inDeviceZone = (names as string[]).find((n) => inDeviceDnsZone(domain, n));
  if (inDeviceZone)
    throw new ConfigError(
      `${CONFIG_FILE}: server.names: "${inDeviceZone}" is in ${deviceDnsZone(domain)}, ` +
        `the zone of device certificates; use a name outside it`,
    );
  const duration = (key: string): string => {
    const v = str(validity, "validity", key);
    try {
      parseDuration(v);
    } catch (e) {
      throw new ConfigError(`${CONFIG_FILE}: validity.${key}: ${(e as Error).message}`);
    }
    return v;
  };
  const grace = str(renewal, "renewal", "after_expiry_grace");
  try {
    parseDuration(grace);
  } catch (e) {
    throw new ConfigError(`${CONFIG_FILE}: renewal.after_expiry_grace: ${(e as Error).message}`);
  }
  const enrollment = parseEnrollment((raw as Record<string, unknown>).enrollment);
  const ros2Enclave = validity.ros2_enclave === undefined ? DEFAULT_ROS2_ENCLAVE_VALIDITY : duration("ros2_enclave");
  const revocation = parseRevocation((raw as Record<string, unknown>).revocation, ros2Enclave);
  const { urls, publicUrl } = parseUrls(server, (raw as Record<string, unknown>).urls);
  return {
    notes,
    config: {
      fleet: { name: str(fleet, "fleet", "name"), domain },
      keys: { type: keyType as CaKeyType, passphrase_file: str(keys, "keys", "passphrase_file") },
      validity: {
        root: duration("root"),
        intermediate: duration("intermediate"),
        local_ca: duration("local_ca"),
        device: duration("device"),
        // Added after the first releases: fleets whose file predates it get the default.
        factory: validity.factory === undefined ? DEFAULT_FACTORY_VALIDITY : duration("factory"),
        server: duration("server"),
        operator: duration("operator"),
        service: validity.service === undefined ? DEFAULT_SERVICE_VALIDITY : duration("service"),
        ros2_enclave: ros2Enclave,
      },
      urls,
      listen: {
        registration: str(listen, "listen", "registration"),
        status: str(listen, "listen", "status"),
        // Files written before the gateway existed have no listen.gateway (or one that was ignored).
        gateway: listen.gateway === undefined ? DEFAULT_GATEWAY_LISTEN : str(listen, "listen", "gateway"),
        admin: listen.admin === undefined ? DEFAULT_ADMIN_LISTEN : str(listen, "listen", "admin"),
      },
      server: publicUrl === undefined ? { names: names as string[] } : { names: names as string[], public_url: publicUrl },
      database: { url: str(database, "database", "url") },
      renewal: { after_expiry_grace: grace },
      enrollment,
      revocation,
      audit: parseAudit((raw as Record<string, unknown>).audit),
      gateway: parseGateway((raw as Record<string, unknown>).gateway),
      admin: parseAdmin((raw as Record<string, unknown>).admin),
    },
  };
}

/** Optional (fleets made before the admin API get the defaults). */
function parseAdmin(value: unknown): AdminConfig {
  const out: AdminConfig = { ...DEFAULT_ADMIN, metrics_allow: [...DEFAULT_ADMIN.metrics_allow] };
  if (value === undefined || value === null) return out;
  if (typeof value !== "object" || Array.isArray(value)) throw new ConfigError(`${CONFIG_FILE}: "admin" must be a mapping`);
  const a = value as Record<string, unknown>;
  if (a.public_url !== undefined) {
    const url = str(a, "admin", "public_url");
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new ConfigError(`${CONFIG_FILE}: admin.public_url "${url}" is not a URL`);
    }
    if (parsed.protocol !== "https:" || parsed.username || parsed.password || parsed.search || parsed.hash)
      throw new ConfigError(`${CONFIG_FILE}: admin.public_url must be an https:// URL without credentials, query or fragment`);
    out.public_url = url.replace(/\/+$/, "");
  }
  if (a.metrics_allow !== undefined) {
    const list = a.metrics_allow;
    if (!Array.isArray(list) || list.some((x) => typeof x !== "string" || !isAddressOrCidr(x)))
      throw new ConfigError(`${CONFIG_FILE}: admin.metrics_allow must be a list of IP addresses or CIDRs (e.g. 10.0.0.0/8)`);
    out.metrics_allow = list as string[];
  }
  if (a.session_lifetime !== undefined) {
    const v = str(a, "admin", "session_lifetime");
    try {
      parseDuration(v);
    } catch (e) {
      throw new ConfigError(`${CONFIG_FILE}: admin.session_lifetime: ${(e as Error).message}`);
    }
    out.session_lifetime = v;
  }
  return out;
}

/** "10.0.0.1", "10.0.0.0/8", "::1", "fd00::/8". */
export function isAddressOrCidr(text: string): boolean {
  const [address, bits, extra] = text.split("/");
  if (extra !== undefined || address === undefined) return false;
  const family = isIP(address);
  if (family === 0) return false;
  if (bits === undefined) return true;
  if (!/^\d{1,3}$/.test(bits)) return false;
  return Number(bits) <= (family === 4 ? 32 : 128);
}

/** Optional (fleets made before the gateway get the defaults). */
function parseGateway(value: unknown): GatewayConfig {
  if (value === undefined || value === null) return { ...DEFAULT_GATEWAY };
  if (typeof value !== "object" || Array.isArray(value)) throw new ConfigError(`${CONFIG_FILE}: "gateway" must be a mapping`);
  const g = value as Record<string, unknown>;
  const out: GatewayConfig = { ...DEFAULT_GATEWAY };
  if (g.allow_local_cas !== undefined) {
    if (typeof g.allow_local_cas !== "boolean") throw new ConfigError(`${CONFIG_FILE}: gateway.allow_local_cas must be true or false`);
    out.allow_local_cas = g.allow_local_cas;
  }
  if (g.denials_per_minute !== undefined) {
    const n = g.denials_per_minute;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 1)
      throw new ConfigError(`${CONFIG_FILE}: gateway.denials_per_minute must be a positive integer`);
    out.denials_per_minute = n;
  }
  if (g.limits !== undefined && g.limits !== null) {
    if (typeof g.limits !== "object" || Array.isArray(g.limits)) throw new ConfigError(`${CONFIG_FILE}: gateway.limits must be a mapping`);
    out.limits = g.limits as Record<string, unknown>;
  }
  return out;
}

/** server.public_url, or the urls section of files written before it existed; never both. */
function parseUrls(server: Record<string, unknown>, legacy: unknown): { urls: FleetConfig["urls"]; publicUrl?: string } {
  if (server.public_url !== undefined) {
    if (legacy !== undefined && legacy !== null)
      throw new ConfigError(`${CONFIG_FILE}: both server.public_url and the older urls section are set; delete the urls section`);
    if (typeof server.public_url !== "string") throw new ConfigError(`${CONFIG_FILE}: server.public_url must be a URL`);
    const publicUrl = validatePublicUrl(server.public_url, `${CONFIG_FILE}: server.public_url`);
    return { urls: statusUrls(publicUrl), publicUrl };
  }
  if (legacy === undefined || legacy === null)
    throw new ConfigError(`${CONFIG_FILE}: server.public_url is missing (e.g. http://pki.fleet.example:8080)`);
  if (typeof legacy !== "object") throw new ConfigError(`${CONFIG_FILE}: "urls" must be a mapping`);
  const url = (key: string): string => {
    const v = (legacy as Record<string, unknown>)[key];
    if (typeof v !== "string" || v === "") throw new ConfigError(`${CONFIG_FILE}: urls.${key} must be a non-empty string`);
    return validatePublicUrl(v, `${CONFIG_FILE}: urls.${key}`);
  };
  return { urls: { crl_base: url("crl_base"), ocsp: url("ocsp") } };
}

/** The enrollment section is optional (fleets made before it existed get the defaults). */
function parseEnrollment(value: unknown): EnrollmentConfig {
  if (value === undefined || value === null) return { ...DEFAULT_ENROLLMENT };
  if (typeof value !== "object") throw new ConfigError(`${CONFIG_FILE}: "enrollment" must be a mapping`);
  const e = value as Record<string, unknown>;
  const out = { ...DEFAULT_ENROLLMENT };
  for (const key of ["token", "factory", "approval"] as const) {
    if (e[key] === undefined) continue;
    if (typeof e[key] !== "boolean") throw new ConfigError(`${CONFIG_FILE}: enrollment.${key} must be true or false`);
    out[key] = e[key] as boolean;
  }
  for (const key of ["token_ttl", "approval_request_ttl"] as const) {
    if (e[key] === undefined) continue;
    try {
      parseDuration(String(e[key]));
    } catch (err) {
      throw new ConfigError(`${CONFIG_FILE}: enrollment.${key}: ${(err as Error).message}`);
    }
    out[key] = String(e[key]);
  }
  if (e.failed_auth_per_minute !== undefined) {
    const n = e.failed_auth_per_minute;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 1)
      throw new ConfigError(`${CONFIG_FILE}: enrollment.failed_auth_per_minute must be a positive integer`);
    out.failed_auth_per_minute = n;
  }
  return out;
}

/** Optional too (fleets made before it existed get the defaults). */
function parseRevocation(value: unknown, ros2Enclave: string): RevocationConfig {
  const enclaveMs = parseDuration(ros2Enclave);
  // Unset (older files): 3/2 of the enclave lifetime, never less than the default.
  const ros2Default = formatDuration(Math.max(parseDuration(DEFAULT_ROS2_CRL_VALIDITY), Math.ceil((enclaveMs * 1.5) / 1000) * 1000));
  if (value === undefined || value === null) return { ...DEFAULT_REVOCATION, ros2_crl_validity: ros2Default };
  if (typeof value !== "object") throw new ConfigError(`${CONFIG_FILE}: "revocation" must be a mapping`);
  const r = value as Record<string, unknown>;
  const out = { ...DEFAULT_REVOCATION, ros2_crl_validity: ros2Default };
  for (const key of ["crl_validity", "ros2_crl_validity", "ocsp_responder_validity", "ocsp_cache"] as const) {
    if (r[key] === undefined) continue;
    try {
      // Signing cannot keep up with shorter lifetimes; the cache may be as short as 1s.
      const ms = parseDuration(String(r[key]));
      if (key !== "ocsp_cache" && ms < 2000) throw new Error("must be at least 2s");
    } catch (err) {
      throw new ConfigError(`${CONFIG_FILE}: revocation.${key}: ${(err as Error).message}`);
    }
    out[key] = String(r[key]);
  }
  // A shorter CRL expires inside nodes that have no reason to restart yet: every handshake then fails.
  if (r.ros2_crl_validity !== undefined && parseDuration(out.ros2_crl_validity) < enclaveMs)
    throw new ConfigError(
      `${CONFIG_FILE}: revocation.ros2_crl_validity (${out.ros2_crl_validity}) is shorter than validity.ros2_enclave (${ros2Enclave}): ` +
        `SROS2 nodes keep the CRL they started with until their enclave is renewed, and refuse every peer once it expires`,
    );
  if (r.ocsp_max_certificates !== undefined) {
    const n = r.ocsp_max_certificates;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > 1000)
      throw new ConfigError(`${CONFIG_FILE}: revocation.ocsp_max_certificates must be an integer from 1 to 1000`);
    out.ocsp_max_certificates = n;
  }
  return out;
}

/**
 * Environment variable naming the passphrase file instead of keys.passphrase_file, for a service
 * manager that hands the passphrase over separately (systemd: LoadCredential= and %d/<name>).
 */
export const PASSPHRASE_FILE_ENV = "FLEETPKI_PASSPHRASE_FILE";

/** Optional (fleets made before it existed get the defaults). */
function parseAudit(value: unknown): AuditConfig {
  if (value === undefined || value === null) return { ...DEFAULT_AUDIT };
  if (typeof value !== "object") throw new ConfigError(`${CONFIG_FILE}: "audit" must be a mapping`);
  const a = value as Record<string, unknown>;
  const out = { ...DEFAULT_AUDIT };
  if (a.checkpoint_interval !== undefined) {
    try {
      // Each checkpoint is one signature and one row: more often than every 10 s buys nothing.
      if (parseDuration(String(a.checkpoint_interval)) < 10_000) throw new Error("must be at least 10s");
    } catch (err) {
      throw new ConfigError(`${CONFIG_FILE}: audit.checkpoint_interval: ${(err as Error).message}`);
    }
    out.checkpoint_interval = String(a.checkpoint_interval);
  }
  return out;
}

export function loadConfig(dir: string): FleetConfig {
  return loadConfigWithNotes(dir).config;
}

export function loadConfigWithNotes(dir: string): { config: FleetConfig; notes: ConfigNote[] } {
  let text: string;
  try {
    text = readFileSync(join(dir, CONFIG_FILE), "utf8");
  } catch {
    throw new ConfigError(`no fleet at ${dir} (${CONFIG_FILE} not found; run \`fleetpki init --dir ${dir}\`)`);
  }
  const loaded = parseConfigWithNotes(text);
  const fromEnv = process.env[PASSPHRASE_FILE_ENV];
  if (fromEnv) loaded.config.keys.passphrase_file = resolve(fromEnv);
  return loaded;
}

export function resolveIn(dir: string, path: string): string {
  return isAbsolute(path) ? path : join(dir, path);
}
