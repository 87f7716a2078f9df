// The recording thread's side (recorder.ts RecordingThread): its own connection to the fleet
// database, on which it runs the issuance batches' write transactions (recordBatch) one after
// another, in the order they arrive. It only commits; the server's group sync makes commits durable.
import { parentPort, workerData } from "node:worker_threads";
import { openNativeDb } from "../store.js";
import { recordBatch, type RecordReply, type RecordRequest } from "./recorder.js";

const port = parentPort!;
const native = openNativeDb((workerData as { path: string }).path);
// As on the server's own connection under group sync (Store.useGroupSync): the commit only
// writes the WAL, and the server's fdatasync of the WAL makes it durable before anyone is answered.
native.pragma("synchronous = NORMAL");

port.on("message", (m: RecordRequest | "close") => {
  if (m === "close") {
    native.close();
    port.close();
    return;
  }
  let reply: RecordReply;
  try {
    const batch = m.batch.map((item) => ({ ...item, row: { ...item.row, der: Buffer.from(m.ders, item.row.der.offset, item.row.der.length) } }));
    reply = { id: m.id, outcomes: recordBatch(native, batch) };
  } catch (e) {
    const err = e as { message?: string; code?: string; name?: string };
    reply = { id: m.id, error: { message: String(err?.message ?? e), code: err?.code, name: err?.name } };
  }
  port.postMessage(reply);
});
