// The server's recorder: batches are committed by a worker thread with its own connection to the
// database (recording-thread.worker.ts). better-sqlite3 is synchronous, so on the event loop a
// commit's fsync and every statement would stall TLS and HTTP for all clients; here the event
// loop only posts a batch and is told, per certificate, whether it was recorded.
import { Worker } from "node:worker_threads";
import * as authorityErrors from "./errors.js";
import { AuthorityError } from "./errors.js";
import { GroupCommitRecorder, type RecordItem, type RecordOutcome } from "./recorder.js";

/** An error as it crosses the thread boundary: AuthorityErrors come back as their own class. */
export interface TransferredError {
  name: string;
  message: string;
  /** Own enumerable properties: `code`, `reason`, `retryAfterSeconds`, SQLite's `code`... */
  props: Record<string, unknown>;
}

export function transferError(e: unknown): TransferredError {
  if (e instanceof Error) return { name: e.name, message: e.message, props: { ...e } };
  return { name: "Error", message: String(e), props: {} };
}

export function reviveError(t: TransferredError): Error {
  const cls = (authorityErrors as Record<string, unknown>)[t.name];
  const e = new Error(t.message);
  if (typeof cls === "function" && cls.prototype instanceof AuthorityError) Object.setPrototypeOf(e, cls.prototype);
  return Object.assign(e, t.props, { name: t.name });
}

export type ToRecordingThread = { type: "record"; id: number; batch: readonly RecordItem[] } | { type: "close" };
export type FromRecordingThread =
  | { type: "ready" }
  | { type: "startup-failed"; error: TransferredError }
  | { type: "recorded"; id: number; outcomes: (TransferredError | null)[] }
  | { type: "failed"; id: number; error: TransferredError };

export interface RecordingThreadData {
  databasePath: string;
}

const WORKER_ENTRY = new URL("./recording-thread.worker.ts", import.meta.url).href;

export class ThreadedRecorder extends GroupCommitRecorder {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (o: RecordOutcome[]) => void; reject: (e: unknown) => void }>();
  private stopped: Error | undefined;
  private readonly exited: Promise<void>;

  private constructor(private readonly worker: Worker) {
    super();
    this.exited = new Promise((resolve) => worker.once("exit", () => resolve()));
    worker.on("message", (m: FromRecordingThread) => this.onMessage(m));
    worker.on("error", (e) => this.fail(new Error(`the recording thread failed: ${e.message}`)));
    worker.on("exit", (code) => this.fail(new Error(`the recording thread stopped (exit code ${code})`)));
  }

  /** Starts the thread and waits until it has opened the database. */
  static async start(databasePath: string): Promise<ThreadedRecorder> {
    // The worker runs TypeScript like this process: it registers tsx's loader itself, because
    // loader hooks are per thread and `execArgv` may not carry them (bin/fleetpki.js registers).
    const bootstrap = `import(${JSON.stringify(import.meta.resolve("tsx/esm/api"))})
      .then((tsx) => { tsx.register(); return import(${JSON.stringify(WORKER_ENTRY)}); })
      .catch((e) => { require("node:worker_threads").parentPort.postMessage({ type: "startup-failed", error: { name: e.name, message: e.message, props: {} } }); });`;
    const data: RecordingThreadData = { databasePath };
    const worker = new Worker(bootstrap, { eval: true, execArgv: [], workerData: data });
    const ready = new Promise<void>((resolve, reject) => {
      const onMessage = (m: FromRecordingThread) => {
        if (m.type === "ready") resolve();
        else if (m.type === "startup-failed") reject(reviveError(m.error));
      };
      worker.on("message", onMessage);
      worker.once("error", reject);
      worker.once("exit", (code) => reject(new Error(`the recording thread exited during start-up (exit code ${code})`)));
    });
    const recorder = new ThreadedRecorder(worker);
    try {
      await ready;
    } catch (e) {
      await worker.terminate();
      throw e;
    }
    return recorder;
  }

  protected commit(batch: readonly RecordItem[]): Promise<RecordOutcome[]> {
    if (this.stopped) return Promise.reject(this.stopped);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      // A Buffer is often a view into a larger pool, and cloning copies the whole pool: send exact copies.
      const compact = batch.map((item) => ({ ...item, row: { ...item.row, der: new Uint8Array(item.row.der) } }));
      this.worker.postMessage({ type: "record", id, batch: compact } satisfies ToRecordingThread);
    });
  }

  private onMessage(m: FromRecordingThread): void {
    if (m.type !== "recorded" && m.type !== "failed") return;
    const w = this.waiting.get(m.id);
    if (!w) return;
    this.waiting.delete(m.id);
    if (m.type === "failed") w.reject(reviveError(m.error));
    else w.resolve(m.outcomes.map((o) => (o ? (reviveError(o) as AuthorityError) : undefined)));
  }

  /** Whatever was in flight may or may not have committed; its callers get an error, never a certificate. */
  private fail(e: Error): void {
    this.stopped ??= e;
    for (const w of this.waiting.values()) w.reject(this.stopped);
    this.waiting.clear();
  }

  override async close(): Promise<void> {
    await super.close();
    if (!this.stopped) this.worker.postMessage({ type: "close" } satisfies ToRecordingThread);
    await this.exited;
  }
}
