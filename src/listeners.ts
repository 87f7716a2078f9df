// The listeners `fleetpki serve` can run (`--only`). Apart from src/server.ts so that the CLI can
// name them without loading the servers (fastify, aedes, prom-client) for every command.
export const LISTENERS = ["registration", "status", "gateway", "admin"] as const;
export type Listener = (typeof LISTENERS)[number];
