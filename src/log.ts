// JSON-lines logging (pino). Never pass keys, tokens, passphrases or Authorization headers.
import pino, { type Logger } from "pino";

export type { Logger };

export function createLogger(name: string, level = process.env.FLEETPKI_LOG_LEVEL ?? "info"): Logger {
  return pino({ name, level, base: { service: name }, timestamp: pino.stdTimeFunctions.isoTime });
}

/** For tests and library use: a logger that drops everything. */
export const silentLogger: Logger = pino({ level: "silent" });
