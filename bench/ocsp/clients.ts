// The two load generators, each with one request in flight per client. node:http is what a Node
// client would use. The lean client exists because the node:http client is what limits the cached
// figures on 2 vCPUs: it needs ~120 us of CPU per request and runs at a whole core, leaving
// fleetpki's server at 0.5-0.7 cores (cached: 17,167 req/s with node:http against 28,602 with the
// lean client in the same run, BENCHMARKS.md). The lean client is lib.ts's Http1Connection (the
// EST bench's) plus a pool that reopens connections the server closes (openssl's responder closes
// every one); it needs ~30-45 us per request against fleetpki.
import { Agent, request as httpRequest } from "node:http";
import { connect } from "node:net";
import { Http1Connection } from "../lib.js";
import { CONCURRENCY, OCSP_REQUEST_TYPE, type Client } from "./settings.js";

export interface Reply {
  status: number;
  contentType: string | undefined;
  body: Buffer;
  newConnection: boolean;
}

/** Sends OCSP requests to one server; closed at the end of a run. */
export interface Transport {
  send(body: Buffer): Promise<Reply>;
  close(): void;
}

export function post(port: number, path: string, body: Buffer, agent: Agent): Promise<Reply> {
  return new Promise((resolveReply, reject) => {
    const req = httpRequest(
      {
        host: "127.0.0.1",
        port,
        method: "POST",
        path,
        agent,
        headers: { "content-type": OCSP_REQUEST_TYPE, "content-length": String(body.length) },
      },
      (res) => {
        const newConnection = !req.reusedSocket;
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () =>
          resolveReply({
            status: res.statusCode ?? 0,
            contentType: res.headers["content-type"],
            body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks),
            newConnection,
          }),
        );
      },
    );
    req.setTimeout(30_000, () => req.destroy(new Error(`POST ${path} timed out after 30 s`)));
    req.on("error", reject);
    req.end(body);
  });
}

/** node:http with a keep-alive Agent, or the lean client with a pool of connections (at most one per client in flight). */
export function openTransport(client: Client, port: number, path: string): Transport {
  if (client === "node") {
    const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    return { send: (body) => post(port, path, body, agent), close: () => agent.destroy() };
  }
  return new LeanPool(port, path);
}

/**
 * Lean HTTP/1.1 connections, each used by one request at a time and kept while the server keeps
 * it alive. fleetpki (node:http) says `Connection: keep-alive` on every keep-alive answer, openssl
 * only when it keeps the connection; any other answer closes it, and a new one is opened.
 */
class LeanPool implements Transport {
  private readonly idle: Http1Connection[] = [];
  private readonly open = new Set<Http1Connection>();

  constructor(
    private readonly port: number,
    private readonly path: string,
  ) {}

  async send(body: Buffer): Promise<Reply> {
    let conn = this.idle.pop();
    const newConnection = conn === undefined;
    if (!conn) {
      conn = new Http1Connection(connect({ host: "127.0.0.1", port: this.port, noDelay: true }));
      this.open.add(conn);
    }
    const head =
      `POST ${this.path} HTTP/1.1\r\nHost: 127.0.0.1:${this.port}\r\n` +
      `Content-Type: ${OCSP_REQUEST_TYPE}\r\nContent-Length: ${body.length}\r\n\r\n`;
    let keep = false;
    try {
      const reply = await conn.request(Buffer.concat([Buffer.from(head, "latin1"), body]));
      keep = /^keep-alive$/i.test(reply.headers["connection"] ?? "");
      return { status: reply.status, contentType: reply.headers["content-type"], body: reply.body, newConnection };
    } finally {
      if (keep) this.idle.push(conn);
      else {
        conn.close();
        this.open.delete(conn);
      }
    }
  }

  close(): void {
    for (const conn of this.open) conn.close();
    this.open.clear();
    this.idle.length = 0;
  }
}
