// Entry of the recording thread (see recording-thread.ts): one database connection, batches
// recorded synchronously in arrival order, one reply per batch.
import { parentPort, workerData } from "node:worker_threads";
import { openNativeDb } from "../store/store.js";
import { recordBatch, type RecordItem } from "./recorder.js";
import { transferError, type FromRecordingThread, type RecordingThreadData, type ToRecordingThread } from "./recording-thread.js";

const port = parentPort!;
const { databasePath } = workerData as RecordingThreadData;
const send = (m: FromRecordingThread) => port.postMessage(m);

/** Structured cloning turns Buffers into plain Uint8Arrays; the database driver is given Buffers. */
function withBuffers(item: RecordItem): RecordItem {
  const der = item.row.der;
  return { ...item, row: { ...item.row, der: Buffer.from(der.buffer, der.byteOffset, der.byteLength) } };
}

try {
  const native = openNativeDb(databasePath);
  port.on("message", (m: ToRecordingThread) => {
    if (m.type === "close") {
      native.close();
      port.close();
      return;
    }
    try {
      const outcomes = recordBatch(native, m.batch.map(withBuffers));
      send({ type: "recorded", id: m.id, outcomes: outcomes.map((o) => (o ? transferError(o) : null)) });
    } catch (e) {
      send({ type: "failed", id: m.id, error: transferError(e) });
    }
  });
  send({ type: "ready" });
} catch (e) {
  send({ type: "startup-failed", error: transferError(e) });
}
