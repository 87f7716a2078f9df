// SROS2 keystores and enclaves: the domain functions the CLI (and the agent's renewal route) call.
export * from "./errors.js";
export { KEYSTORE_MARKER, ENCLAVE_FILES, ks, ensureRos2Cas, initKeystore, openKeystore, parseDomainId } from "./keystore.js";
export type { InitKeystoreResult, KeystoreMarker } from "./keystore.js";
export {
  createEnclave,
  keystoreEnclavePathProblem,
  enclavesOnDisk,
  grantTime,
  renewEnclave,
  renewEnclaveInKeystore,
  revokeEnclave,
  writeCrlEverywhere,
  writeRenewedEnclave,
} from "./enclaves.js";
export type { EnclaveResult, RenewEnclaveRequest, RenewedEnclave } from "./enclaves.js";
export { holdDeviceEnclaves, refreshKeystoreCrl, revokeDeviceEnclaves, unholdDeviceEnclaves } from "./device-enclaves.js";
export type { DeviceEnclave, DeviceEnclavesChange } from "./device-enclaves.js";
