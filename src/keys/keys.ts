// Key generation and custody: PKCS#8, encrypted with the fleet passphrase at rest.
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import type { CaKeyType } from "../x509/algorithms.js";
import { writeSecretFile } from "./files.js";

export class KeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KeyError";
  }
}

export function generateKey(type: CaKeyType | "p256"): KeyObject {
  switch (type) {
    case "p256":
      return generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey;
    case "p384":
      return generateKeyPairSync("ec", { namedCurve: "secp384r1" }).privateKey;
    case "ed25519":
      return generateKeyPairSync("ed25519").privateKey;
    case "rsa3072":
      return generateKeyPairSync("rsa", { modulusLength: 3072 }).privateKey;
  }
}

export function publicSpki(key: KeyObject): Buffer {
  return createPublicKey(key).export({ type: "spki", format: "der" });
}

/** PKCS#8 PEM, encrypted (PBES2, AES-256-CBC) when a passphrase is given. */
export function privateKeyPem(key: KeyObject, passphrase?: string): string {
  const pem = passphrase
    ? key.export({ type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase })
    : key.export({ type: "pkcs8", format: "pem" });
  return pem.toString();
}

/** Writes a private key file with mode 0600 inside a 0700 directory. */
export function writePrivateKey(path: string, key: KeyObject, passphrase?: string): void {
  writeSecretFile(path, privateKeyPem(key, passphrase));
}

export function readPrivateKey(path: string, passphrase?: string): KeyObject {
  let pem: string;
  try {
    pem = readFileSync(path, "utf8");
  } catch {
    throw new KeyError(`cannot read private key ${path}`);
  }
  try {
    return createPrivateKey(passphrase ? { key: pem, format: "pem", passphrase } : { key: pem, format: "pem" });
  } catch {
    // Never echo key material or the passphrase.
    throw new KeyError(`cannot decrypt private key ${path}: wrong passphrase or damaged key file`);
  }
}

export function readPassphraseFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    throw new KeyError(`cannot read passphrase file ${path}`);
  }
  const passphrase = text.replace(/\r?\n$/, "");
  if (passphrase.length < 8) throw new KeyError(`passphrase in ${path} is shorter than 8 characters`);
  return passphrase;
}
