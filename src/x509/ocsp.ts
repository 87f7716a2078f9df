// Transitional: OCSP moved to ocsp-request.ts (requests, CertIDs, issuer hashes) and
// ocsp-response.ts (building and signing responses). These re-exports keep the importers that
// another change is restructuring at the same time (authority/status/ocsp-responder.ts,
// status/server.ts) compiling; point them at the two modules and delete this file.
export {
  DEFAULT_MAX_REQUEST_BYTES,
  OcspRequestError,
  issuerHashes,
  parseOcspRequest,
  type OcspHash,
  type ParsedOcspRequest,
} from "./ocsp-request.js";
export {
  OcspResponseSigner,
  ocspErrorResponse,
  ocspResponder,
  type CertStatus,
  type RevocationReasonName,
  type SingleResponseInput,
} from "./ocsp-response.js";
