// JSON-lines logger for the agent: one object per line on stderr,
// {"time","level","msg",...fields}. Secrets never reach the output: fields with secret-sounding
// names are dropped and any string holding PEM key material is replaced.

export type LogLevel = "debug" | "info" | "warn" | "error";
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

/** Field names that are never written, whatever their value. */
const SECRET_FIELD = /^(key|private_?key|key_?pem|token|passphrase|password|secret|signature|authorization|nonce)$/i;

/** Blanks PEM blocks (keys above all) inside free text. */
export function redactText(text: string): string {
  return text.replace(/-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?(-----END \1-----|$)/g, "[PEM $1 redacted]");
}

function clean(value: unknown, depth = 0): unknown {
  if (typeof value === "string") return /-----BEGIN /.test(value) ? redactText(value) : value;
  if (value instanceof Date) return value.toISOString();
  if (value instanceof Error) return redactText(value.message);
  if (Buffer.isBuffer(value)) return `[${value.length} bytes]`;
  if (Array.isArray(value)) return depth > 4 ? "[…]" : value.map((v) => clean(v, depth + 1));
  if (value && typeof value === "object") {
    if (depth > 4) return "[…]";
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (!SECRET_FIELD.test(k) && v !== undefined) out[k] = clean(v, depth + 1);
    return out;
  }
  return value;
}

export interface LoggerOptions {
  level?: LogLevel;
  /** Where lines go; process.stderr by default. */
  write?: (line: string) => void;
  now?: () => number;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const min = ORDER[options.level ?? "info"];
  const write = options.write ?? ((line: string) => void process.stderr.write(line));
  const now = options.now ?? Date.now;
  const emit = (level: LogLevel, msg: string, fields: LogFields = {}) => {
    if (ORDER[level] < min) return;
    const body = clean(fields) as Record<string, unknown>;
    delete body.time;
    delete body.level;
    delete body.msg;
    write(JSON.stringify({ time: new Date(now()).toISOString(), level, msg: redactText(msg), ...body }) + "\n");
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
  };
}

/** Discards everything (library callers that do not want logs). */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
