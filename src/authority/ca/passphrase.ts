// The fleet passphrase: supplied by the operator (a file) or, for development, generated.
import { randomBytes } from "node:crypto";
import { join, resolve } from "node:path";
import { writeSecretFile } from "../../keys/files.js";
import { readPassphraseFile } from "../../keys/keys.js";
import { layout } from "../layout.js";

export interface PreparedPassphrase {
  passphrase: string;
  /** Value for keys.passphrase_file: relative to the directory when generated there. */
  configPath: string;
  generated: boolean;
}

export function preparePassphrase(dir: string, passphraseFile?: string): PreparedPassphrase {
  if (passphraseFile) {
    return { passphrase: readPassphraseFile(passphraseFile), configPath: resolve(passphraseFile), generated: false };
  }
  const passphrase = randomBytes(32).toString("base64url");
  writeSecretFile(join(dir, layout.passphrase), passphrase + "\n");
  return { passphrase, configPath: layout.passphrase, generated: true };
}
