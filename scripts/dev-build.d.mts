/** The path of cli/main.js compiled from the current src/ (see dev-build.mjs); throws when it cannot build. */
export function devBuild(): string;
/** The package directory of kysely bundled into one ESM file; throws when it cannot build. */
export function kyselyBundle(): string;
