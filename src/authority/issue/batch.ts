// Offline issuance of device bundles from a local (factory) CA. Each bundle is written to a
// hidden partial directory and renamed into place only when complete and after its
// certificate is durably recorded, so an interrupted run resumes by skipping finished ids.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";
import { parseDuration } from "../../config/duration.js";
import { ensurePrivateDir, fsyncDir } from "../../keys/files.js";
import { generateKey, privateKeyPem } from "../../keys/keys.js";
import { checkpointAfter } from "../audit-checkpoints.js";
import { DeviceExists, InvalidArgument } from "../errors.js";
import type { FleetServices } from "../services.js";
import { assertDeviceId, issueForKey, subjectKeyOf } from "./issuance.js";
import { localCaId } from "../layout.js";

export const BUNDLE_FILES = ["key.pem", "cert.pem", "chain.pem", "ca.pem"] as const;

/** "robot-0001..robot-1000" -> robot-0001, robot-0002, ..., robot-1000 (zero padding kept). */
export function expandIdRange(spec: string): string[] {
  const m = /^(.*?)(\d+)\.\.(.*?)(\d+)$/.exec(spec);
  if (!m || m[1] !== m[3]) throw new InvalidArgument(`--ids "${spec}": expected PREFIX<start>..PREFIX<end>, e.g. robot-0001..robot-1000`);
  const [, prefix, startText, , endText] = m as unknown as [string, string, string, string, string];
  const start = Number(startText);
  const end = Number(endText);
  if (end < start) throw new InvalidArgument(`--ids "${spec}": the range ends before it starts`);
  if (end - start >= 1_000_000) throw new InvalidArgument(`--ids "${spec}": at most 1,000,000 ids per batch`);
  const width = startText.length;
  const ids: string[] = [];
  for (let n = start; n <= end; n++) ids.push(prefix + String(n).padStart(width, "0"));
  ids.forEach(assertDeviceId);
  return ids;
}

/** One id per line; blank lines and # comments ignored. */
export function parseIdList(text: string): string[] {
  const ids = text
    .split(/\r?\n/)
    .map((l) => l.replace(/#.*/, "").trim())
    .filter(Boolean);
  ids.forEach(assertDeviceId);
  if (new Set(ids).size !== ids.length) throw new InvalidArgument("the id list contains duplicates");
  return ids;
}

export interface BatchRequest {
  localName: string;
  ids: readonly string[];
  outDir: string;
  group?: string;
  /** Lifetime of the factory certificates (default: validity.factory). */
  validity?: string;
  actor: string;
  onProgress?: (progress: { done: number; skipped: number; total: number }) => void;
}

export interface BatchResult {
  issued: number;
  skipped: number;
  total: number;
}

function isComplete(dir: string): boolean {
  return BUNDLE_FILES.every((f) => existsSync(join(dir, f)));
}

function writeDurable(path: string, data: string, mode: number): void {
  const fd = openSync(path, "wx", mode);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export async function issueBatch(fleet: FleetServices, req: BatchRequest): Promise<BatchResult> {
  const caId = localCaId(req.localName);
  const validity = req.validity ?? fleet.config.validity.factory;
  let lifetimeMs: number;
  try {
    lifetimeMs = parseDuration(validity);
  } catch (e) {
    throw new InvalidArgument(`--validity: ${(e as Error).message}`);
  }
  await fleet.issuingCa(caId); // fail early if the CA is unknown, its key offline or the CA inactive
  ensurePrivateDir(req.outDir);
  // Partial bundles from an interrupted run are discarded; their certificates stay recorded.
  for (const entry of readdirSync(req.outDir))
    if (entry.startsWith(".partial-")) rmSync(join(req.outDir, entry), { recursive: true, force: true });

  const todo = req.ids.filter((id) => !isComplete(join(req.outDir, id)));
  const total = req.ids.length;
  let skipped = total - todo.length;
  let done = skipped;
  req.onProgress?.({ done, skipped, total });

  // Devices made in the factory are registered here so their certificates have an owner.
  const known = new Set(await fleet.store.ops.devices.existing(todo));
  const missing = todo.filter((id) => !known.has(id));
  const at = fleet.clock.now();
  const now = at.toISOString();
  for (let i = 0; i < missing.length; i += 200) {
    const chunk = missing.slice(i, i + 200);
    await fleet.store.transaction(async (tx) => {
      const rows = chunk.map((id) => ({
        id,
        group_name: req.group ?? null,
        labels: JSON.stringify({ factory: req.localName }),
        status: "active" as const,
        created_at: now,
        updated_at: now,
      }));
      // Added meanwhile by someone else (another process): stop rather than audit an add that did not happen.
      const taken = await tx.devices.add(rows);
      if (taken.length > 0) throw new DeviceExists(taken[0]!);
      await tx.audit.append(
        chunk.map((id) => ({
          actor: req.actor,
          action: "device.add",
          subject: `device:${id}`,
          details: { group: req.group ?? null, labels: { factory: req.localName } },
          at,
        })),
      );
    });
  }

  const { chain, root } = await fleet.chainPem(caId);
  for (const id of todo) {
    const key = generateKey("p256");
    const request = { deviceId: id, actor: req.actor, caId, lifetimeMs, context: { via: "issue-batch" } };
    const cert = await issueForKey(fleet, request, subjectKeyOf(key));
    const partial = join(req.outDir, `.partial-${id}`);
    mkdirSync(partial, { mode: 0o700 });
    writeDurable(join(partial, "key.pem"), privateKeyPem(key), 0o600);
    writeDurable(join(partial, "cert.pem"), cert.certificatePem, 0o644);
    writeDurable(join(partial, "chain.pem"), chain, 0o644);
    writeDurable(join(partial, "ca.pem"), root, 0o644);
    const target = join(req.outDir, id);
    rmSync(target, { recursive: true, force: true }); // an incomplete leftover from older tools
    renameSync(partial, target);
    fsyncDir(req.outDir);
    done++;
    req.onProgress?.({ done, skipped, total });
  }
  skipped = total - todo.length;
  await checkpointAfter(fleet, req.actor);
  return { issued: todo.length, skipped, total };
}
