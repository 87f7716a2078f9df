// `--server URL --operator DIR`: the CLI acting through the admin API from another machine, with
// the operator's certificate (mutual TLS) and the server verified against DIR/ca.pem only. A
// command builds its request, then `via` runs it against the fleet directory or the API; one
// formatter prints either answer, so the output is the same. Problem bodies become one line.
import { X509Certificate, type KeyObject } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { Agent, request as httpsRequest } from "node:https";
import { join } from "node:path";
import type { Command } from "commander";
import type { FleetServices } from "../authority/services.js";
import { readPassphraseFile, readPrivateKey } from "../keys/keys.js";
import { withFleet } from "./context.js";

/** A failure talking to the admin API (refused, unreachable, untrusted): one line, no stack. */
export class RemoteError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RemoteError";
  }
}

/** Answers are pages of JSON; anything larger is not the admin API. */
const MAX_RESPONSE_BYTES = 32 * 1024 * 1024;
const TIMEOUT_MS = 30_000;

/** The option naming the operator directory, per command: `policy test` has its own --operator (the identity tested). */
const OPERATOR_FLAG = new WeakMap<Command, "operator" | "operatorDir">();

/**
 * Adds --server, --operator DIR and --operator-passphrase-file to a command; `operatorDir` names
 * the directory option --operator-dir instead, for a command whose --operator means something else.
 */
export function remoteOptions(cmd: Command, opts: { operatorDir?: boolean } = {}): Command {
  const flag = opts.operatorDir ? "--operator-dir" : "--operator";
  OPERATOR_FLAG.set(cmd, opts.operatorDir ? "operatorDir" : "operator");
  return cmd
    .option("--server <url>", `act through the admin API at this URL (https://host:9443) instead of --dir; needs ${flag}`)
    .option(`${flag} <dir>`, "operator bundle for --server: key.pem, cert.pem, chain.pem, ca.pem (fleetpki operator add --out)")
    .option(
      "--operator-passphrase-file <file>",
      "passphrase of an encrypted operator key.pem (e.g. the fleet's, for <fleet>/operators/admin)",
    );
}

/** One line of text from a server: no control characters (terminal escapes), bounded. */
function oneLine(text: string, max = 400): string {
  // eslint-disable-next-line no-control-regex
  const clean = text.replace(/[\u0000-\u001f\u007f-\u009f]+/g, " ").trim();
  return clean.length > max ? `${clean.slice(0, max)}...` : clean;
}

interface OperatorBundle {
  name: string;
  domain: string;
  key: string;
  /** Leaf and chain (PEM). */
  cert: string;
  ca: string;
}

function readBundleFile(dir: string, file: string): string {
  const path = join(dir, file);
  if (!existsSync(path))
    throw new RemoteError(
      file === "ca.pem"
        ? `${path} is missing: the server is verified against the fleet's root certificate there ` +
            "(`fleetpki operator add --out` and `fleetpki init` write it; ca/root/cert.pem on the CA machine)"
        : `${path} is missing: --operator takes a directory written by \`fleetpki operator add --out\``,
    );
  try {
    return readFileSync(path, "utf8");
  } catch {
    throw new RemoteError(`cannot read ${path}`);
  }
}

const SPIFFE_OPERATOR = /^spiffe:\/\/([^/]+)\/operator\/([^/]+)$/;

/** Reads and checks an operator directory: a key that matches an operator certificate, and the CA to trust. */
export function readOperatorBundle(dir: string, passphraseFile?: string): OperatorBundle {
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new RemoteError(`operator directory ${dir} does not exist (write one with \`fleetpki operator add NAME --role ROLE --out DIR\`)`);
  const certPem = readBundleFile(dir, "cert.pem");
  const keyPem = readBundleFile(dir, "key.pem");
  const ca = readBundleFile(dir, "ca.pem");
  const chain = existsSync(join(dir, "chain.pem")) ? readBundleFile(dir, "chain.pem") : "";
  const encrypted = keyPem.includes("-----BEGIN ENCRYPTED PRIVATE KEY-----");
  if (encrypted && passphraseFile === undefined)
    throw new RemoteError(`${join(dir, "key.pem")} is encrypted: give its passphrase with --operator-passphrase-file FILE`);
  const key: KeyObject = readPrivateKey(join(dir, "key.pem"), encrypted ? readPassphraseFile(passphraseFile!) : undefined);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(certPem);
  } catch {
    throw new RemoteError(`${join(dir, "cert.pem")} is not a PEM certificate`);
  }
  if (!leaf.checkPrivateKey(key)) throw new RemoteError(`${join(dir, "key.pem")} is not the key of ${join(dir, "cert.pem")}`);
  const uri = (leaf.subjectAltName ?? "")
    .split(", ")
    .map((n) => (n.startsWith("URI:") ? n.slice(4) : ""))
    .map((u) => SPIFFE_OPERATOR.exec(u))
    .find((m) => m !== null);
  if (!uri) throw new RemoteError(`${join(dir, "cert.pem")} is not an operator certificate (no spiffe://<domain>/operator/<name>)`);
  return {
    domain: uri[1]!,
    name: uri[2]!,
    key: key.export({ type: "pkcs8", format: "pem" }).toString(),
    cert: certPem.trimEnd() + "\n" + chain,
    ca,
  };
}

function serverUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new RemoteError(`--server ${oneLine(text, 100)} is not a URL (e.g. https://ca.example:9443)`);
  }
  if (url.protocol !== "https:") throw new RemoteError(`--server must be an https:// URL: the admin API only speaks HTTPS`);
  if (url.username || url.password || url.search || url.hash)
    throw new RemoteError("--server takes the admin API's base URL, without credentials, query or fragment");
  return url;
}

/** Why a TLS handshake with the server failed, in words. */
function tlsFailure(base: string, caFile: string, e: NodeJS.ErrnoException): string | undefined {
  const code = e.code ?? "";
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID")
    return `the certificate of ${base} does not name that host (${oneLine(e.message)}); use a name from the fleet's server.names`;
  const untrusted = new RegExp(
    "^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?|SELF_SIGNED_CERT_IN_CHAIN|" +
      "DEPTH_ZERO_SELF_SIGNED_CERT|CERT_UNTRUSTED)$",
  );
  if (untrusted.test(code)) return `cannot verify ${base}: its certificate does not chain to ${caFile} (${code})`;
  // The rest of OpenSSL's verification failures (a certificate not for servers, expired, malformed).
  if (/^(CERT_[A-Z_]+|INVALID_(PURPOSE|CA)|PATH_LENGTH_EXCEEDED|HOSTNAME_MISMATCH|UNABLE_TO_[A-Z_]+)$/.test(code))
    return `cannot verify ${base}: its certificate is not valid for a server here (${code})`;
  if (code.startsWith("ERR_SSL_") || code.startsWith("ERR_TLS_")) return `TLS with ${base} failed: ${oneLine(e.message)}`;
  return undefined;
}

type Params = Record<string, string>;
type Query = Record<string, string | undefined>;

/**
 * The admin API as the operator: `call("POST /api/devices/:id/revoke", { id }, body)`. The route
 * template is what error messages name, e.g. when the server has no such endpoint yet.
 */
export class AdminClient {
  private readonly agent: Agent;
  readonly base: URL;

  constructor(
    server: string,
    readonly operator: OperatorBundle,
    private readonly caFile: string,
  ) {
    this.base = serverUrl(server);
    this.agent = new Agent({ keepAlive: true, maxSockets: 1, key: operator.key, cert: operator.cert, ca: operator.ca });
  }

  /** The fleet's domain, as the operator's certificate names it. */
  get domain(): string {
    return this.operator.domain;
  }

  close(): void {
    this.agent.destroy();
  }

  async call<T>(route: string, params: Params = {}, body?: unknown, query: Query = {}): Promise<T> {
    const [method, template] = route.split(" ") as [string, string];
    const path = template.replace(/:(\w+)/g, (_, name: string) => {
      const value = params[name];
      if (value === undefined) throw new Error(`${route}: no value for :${name}`);
      return encodeURIComponent(value);
    });
    const search = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) search.set(k, v);
    const prefix = this.base.pathname.replace(/\/+$/, "");
    const target = `${prefix}${path}${search.size > 0 ? `?${search}` : ""}`;
    const res = await this.send(method, target, body);
    return this.answer<T>(route, res);
  }

  private send(method: string, path: string, body: unknown): Promise<{ status: number; type: string; text: string }> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const base = this.base.origin;
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        {
          host: this.base.hostname.replace(/^\[(.*)\]$/, "$1"),
          port: this.base.port || 443,
          path,
          method,
          agent: this.agent,
          timeout: TIMEOUT_MS,
          headers: {
            accept: "application/json, application/problem+json",
            ...(payload ? { "content-type": "application/json", "content-length": payload.length } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (c: Buffer) => {
            size += c.length;
            if (size > MAX_RESPONSE_BYTES) {
              req.destroy(new RemoteError(`${base} sent more than ${MAX_RESPONSE_BYTES} bytes: not the fleetpki admin API?`));
              return;
            }
            chunks.push(c);
          });
          res.on("error", reject);
          res.on("end", () =>
            resolve({
              status: res.statusCode ?? 0,
              type: String(res.headers["content-type"] ?? ""),
              text: Buffer.concat(chunks).toString("utf8"),
            }),
          );
        },
      );
      req.on("timeout", () => req.destroy(new RemoteError(`${base} did not answer within ${TIMEOUT_MS / 1000} s`)));
      req.on("error", (e: NodeJS.ErrnoException) => {
        if (e instanceof RemoteError) return reject(e);
        const tls = tlsFailure(base, this.caFile, e);
        if (tls) return reject(new RemoteError(tls));
        reject(new RemoteError(`cannot reach the admin API at ${base}: ${e.code ?? oneLine(e.message)}`));
      });
      req.end(payload);
    });
  }

  private answer<T>(route: string, res: { status: number; type: string; text: string }): T {
    const base = this.base.origin;
    let json: unknown;
    const isJson = /^application\/(problem\+)?json\b/.test(res.type);
    if (isJson) {
      try {
        json = JSON.parse(res.text);
      } catch {
        throw new RemoteError(`${base} answered ${route} with malformed JSON (HTTP ${res.status})`);
      }
    }
    if (res.status >= 200 && res.status < 300) {
      if (!isJson) throw new RemoteError(`${base} answered ${route} with ${res.type || "no content type"}, not JSON: not the admin API?`);
      return json as T;
    }
    const problem = (isJson && json && typeof json === "object" ? json : {}) as { type?: unknown; detail?: unknown; errors?: unknown };
    const type = typeof problem.type === "string" ? (problem.type.split("/").pop() ?? "") : "";
    // Bounded, but long enough for the domain's longest messages (e.g. the waiting requests listed), as locally.
    const detail = typeof problem.detail === "string" ? oneLine(problem.detail, 2000) : `HTTP ${res.status}`;
    if (res.status === 404 && type === "not-found")
      throw new RemoteError(
        `the admin API at ${base} has no endpoint ${route} (this command needs it): ` +
          "run it on the CA machine with --dir, or update the server",
      );
    if (res.status === 401) throw new RemoteError(`the admin API at ${base} refused the operator certificate: ${detail} (401 ${type})`);
    throw new RemoteProblem(`${detail} (${res.status}${type ? ` ${type}` : ""} from ${base})`, res.status, type, problem);
  }
}

/** A problem body the server answered with; the command may look at it (e.g. policy errors). */
export class RemoteProblem extends RemoteError {
  constructor(
    message: string,
    readonly status: number,
    readonly type: string,
    readonly body: Record<string, unknown>,
  ) {
    super(message);
  }
}

/** The admin client the command's options ask for, or undefined to act on the fleet directory. */
export function remoteTarget(cmd: Command): AdminClient | undefined {
  const opts = cmd.opts() as Record<string, string | undefined>;
  const key = OPERATOR_FLAG.get(cmd) ?? "operator";
  const flag = key === "operator" ? "--operator" : "--operator-dir";
  const server = opts.server;
  const dir = opts[key];
  if (server === undefined && dir === undefined) {
    if (opts.operatorPassphraseFile !== undefined) throw new RemoteError(`--operator-passphrase-file goes with --server and ${flag}`);
    return undefined;
  }
  if (server === undefined) throw new RemoteError(`${flag} needs --server URL (the admin API to act through)`);
  if (dir === undefined) throw new RemoteError(`--server needs ${flag} DIR (the operator certificate to act as)`);
  if (cmd.getOptionValueSource("dir") === "cli")
    throw new RemoteError("--dir acts on a local fleet; --server acts through the admin API: give one or the other");
  const bundle = readOperatorBundle(dir, opts.operatorPassphraseFile);
  return new AdminClient(server, bundle, join(dir, "ca.pem"));
}

/**
 * Runs a command's request locally (on --dir's fleet) or through the admin API (--server). The
 * caller formats the one answer, whichever way it came.
 */
export async function via<T>(
  cmd: Command,
  local: (fleet: FleetServices) => Promise<T>,
  remote: (api: AdminClient) => Promise<T>,
): Promise<T> {
  return viaHere(cmd, () => withFleet(cmd.opts().dir as string, local), remote);
}

/** As `via`, for a local action that opens the fleet itself (or needs none). */
export async function viaHere<T>(cmd: Command, local: () => Promise<T>, remote: (api: AdminClient) => Promise<T>): Promise<T> {
  const api = remoteTarget(cmd);
  if (!api) return local();
  try {
    return await remote(api);
  } finally {
    api.close();
  }
}

/** For commands that only run on the CA machine: --server is refused by name, never silently run locally. */
export function localOnly(what: string, why: string): () => Promise<never> {
  return () =>
    Promise.reject(new RemoteError(`\`fleetpki ${what}\` has no admin API endpoint (${why}): run it on the CA machine with --dir`));
}

/** Every page of a cursor-paginated list endpoint ({items, nextCursor}). */
export async function allPages<T>(api: AdminClient, route: string, query: Query, limit = 500): Promise<T[]> {
  const items: T[] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = await api.call<{ items: T[]; nextCursor?: string | null }>(route, {}, undefined, {
      ...query,
      limit: String(limit),
      cursor,
    });
    if (!Array.isArray(page.items)) throw new RemoteError(`${api.base.origin} answered ${route} without items: not the admin API?`);
    items.push(...page.items);
    if (!page.nextCursor) return items;
    if (page.nextCursor === cursor) throw new RemoteError(`${api.base.origin} answered ${route} with the same cursor twice`);
    cursor = page.nextCursor;
  }
}
